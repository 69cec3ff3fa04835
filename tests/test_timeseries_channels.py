"""Dead channels in the ``timeseries`` modality: a channel flat throughout a source is left out of
every source with one warning naming it; windows are dropped for flatness only where every live
channel is flat. Expected numbers are worked out by hand in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from relpos.errors import DataError
from relpos_modalities.timeseries import TimeseriesConfig, TimeseriesModality


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("RELPOS_CACHE_DIR", str(folder))
    return folder


def modality(**options) -> TimeseriesModality:
    return TimeseriesModality(TimeseriesConfig(**options))


def noise(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def archive(x: np.ndarray, names: list[str], sfreq: float = 10.0) -> dict:
    return {"X": x, "sfreq": np.array(sfreq), "ch_names": np.array(names)}


def test_a_channel_flat_throughout_is_left_out_with_a_warning(capsys):
    # 2 samples × 3 channels × 40 steps at 10 Hz; RAW-1 is a constant 1.5 (an unused input);
    # 2-s windows (20 steps) every 1 s: floor((40 - 20) / 10) + 1 = 3 per sample, 6 in all, none dropped
    x = noise((2, 3, 40))
    x[:, 1] = 1.5
    # normalize pinned: with auto, the line saying what it chose would come with the warning
    windows = modality(window_s=2, stride_s=1, normalize="instance").load(archive(x, ["RAW-0", "RAW-1", "RAW-2"]))
    assert windows.info["ch_names"] == ["RAW-0", "RAW-2"] and tuple(windows.x.shape) == (6, 2, 20)
    assert windows.info["dead_channels"] == ["RAW-1"]
    assert windows.info["dropped"] == {}
    err = capsys.readouterr().err
    assert err.count("\n") == 1  # one warning
    assert "Channel 'RAW-1' is flat throughout recording 'the mapping of arrays'" in err
    assert "set modality.channels to the channels to use (e.g. 'RAW-0,RAW-2')" in err
    # the windows kept are RAW-0 and RAW-2, in that order: window 0 is steps 0..19 of sample 0
    expected = x[0, [0, 2], :20]
    expected = (expected - expected.mean(-1, keepdims=True)) / expected.std(-1, keepdims=True)
    np.testing.assert_allclose(windows.x[0].numpy(), expected, atol=1e-5)


def test_a_channel_dead_in_one_file_is_left_out_of_every_file(tmp_path, capsys):
    # acc_z is constant 0 in b.npz only: left out of a.npz as well, so every window has acc_x, acc_y
    names = ["acc_x", "acc_y", "acc_z"]
    a, b = noise((1, 3, 30), seed=1), noise((1, 3, 30), seed=2)
    b[0, 2] = 0.0
    np.savez(tmp_path / "a.npz", **archive(a, names))
    np.savez(tmp_path / "b.npz", **archive(b, names))
    windows = modality(window_s=1).load(tmp_path)
    assert windows.info["ch_names"] == ["acc_x", "acc_y"]
    # 30 steps at 10 Hz in 1-s windows: 3 per file
    assert tuple(windows.x.shape) == (6, 2, 10)
    assert [f["channels"] for f in windows.info["files"]] == [["acc_x", "acc_y"]] * 2
    err = capsys.readouterr().err
    assert "Channel 'acc_z' is flat throughout recording" in err and "b.npz" in err and "a.npz" not in err


def test_constant_within_each_sample_is_dead_but_flat_in_some_samples_is_not():
    # "gain" holds one value per sample (1, 2, 3): no signal inside any window, so it is dead;
    # "idle" is flat in sample 0 only, a sensor at rest for a while: it stays
    x = noise((3, 3, 20))
    x[:, 1] = np.array([1.0, 2.0, 3.0])[:, None]
    x[0, 2] = 0.25
    windows = modality(sfreq=10).load(archive(x, ["sig", "gain", "idle"]))
    assert windows.info["ch_names"] == ["sig", "idle"] and len(windows) == 3


def test_a_channel_without_any_finite_value_is_dead():
    x = noise((2, 2, 20))
    x[:, 0] = np.nan  # an unplugged sensor recorded as NaN
    windows = modality(sfreq=10).load(archive(x, ["unplugged", "live"]))
    assert windows.info["ch_names"] == ["live"] and len(windows) == 2
    assert windows.info["dropped"] == {}


def test_windows_are_dropped_only_where_every_live_channel_is_flat(capsys):
    # 3 channels, "dead" flat throughout; "a" and "b" both flat over steps 0..9 (window 0 of 4
    # one-second windows at 10 Hz): that window is dropped and the message names the live channels
    x = noise((1, 3, 40))
    x[0, 0] = 7.0
    x[0, 1:, :10] = 0.0
    windows = modality(window_s=1).load(archive(x, ["dead", "a", "b"]))
    assert len(windows) == 3 and windows.info["dropped"] == {"flat (every channel constant)": 1}
    err = capsys.readouterr().err
    assert "Dropped 1 window of the mapping of arrays in which every channel ('a' and 'b') is flat." in err


def test_every_channel_dead_names_them():
    x = np.zeros((2, 2, 20))
    x[:, 1] = 3.0
    with pytest.raises(DataError, match=r"Every channel of 'builtins.dict' \('x' and 'y'\) is flat throughout 'the "
                                        r"mapping of arrays' \(constant, or without a finite value\), so "
                                        r"there is no signal"):
        modality(window_s=1).load(archive(x, ["x", "y"]))


def test_a_channel_named_in_modality_channels_is_kept(capsys):
    # pinned by its exact name, "trigger" stays (with a warning); a pattern does not pin it
    x = noise((1, 2, 20))
    x[0, 1] = 0.0
    data = archive(x, ["eeg", "trigger"])
    pinned = modality(window_s=1, channels="eeg,trigger").load(data)
    assert pinned.info["ch_names"] == ["eeg", "trigger"]
    assert "Channel 'trigger' named in modality.channels is flat throughout 'the mapping of arrays'; kept" in (
        capsys.readouterr().err
    )
    assert modality(window_s=1, channels="*").load(data).info["ch_names"] == ["eeg"]


def test_dead_channels_are_found_in_a_file_read_in_several_blocks(monkeypatch, tmp_path):
    # blocks of 2 samples (CHUNK_VALUES = 2 samples × 3 channels × 10 steps): "dead" is flat in all
    # 5 samples, "late" is flat in the first 3 and live in the last 2 (flat in 60% of the windows,
    # under the 80% that makes a channel dead), so only "dead" is left out
    import relpos_modalities.timeseries.pipeline as pipeline

    monkeypatch.setattr(pipeline, "CHUNK_VALUES", 3 * 10 * 2)
    x = noise((5, 3, 10))
    x[:, 1] = -2.0
    x[:3, 2] = 1.0
    np.save(tmp_path / "blocks.npy", x)
    windows = modality(sfreq=10, cache=False).load(tmp_path / "blocks.npy")
    assert windows.info["ch_names"] == ["ch0", "ch2"] and len(windows) == 5


def test_inspect_reports_each_channel_and_the_dead_ones(tmp_path):
    # RAW-1 constant (dead), RAW-2 holding 3 NaN (live): the report says so, channel by channel
    x = noise((2, 3, 30))
    x[:, 1] = 1.5
    x[0, 2, :3] = np.nan
    np.savez(tmp_path / "adc.npz", **archive(x, ["RAW-0", "RAW-1", "RAW-2"]))
    report = modality(window_s=1).inspect(tmp_path / "adc.npz")
    assert report["dead_channels"] == ["RAW-1"] and report["ch_names"] == ["RAW-0", "RAW-2"]
    (entry,) = report["files"]
    assert [(c["name"], c["status"]) for c in entry["channel_status"]] == [
        ("RAW-0", "ok"), ("RAW-1", "flat throughout"), ("RAW-2", "3 non-finite samples"),
    ]
    # 2 samples × 3 one-second windows; the first window of sample 0 holds the NaN
    assert report["n_windows"] == 5 and "problem" not in report


def test_inspect_reports_instead_of_failing_when_nothing_is_usable(tmp_path, capsys):
    from relpos.cli import main

    x = np.zeros((1, 2, 30))
    x[0, 1] = 1.5
    np.savez(tmp_path / "dead.npz", **archive(x, ["RAW-0", "RAW-1"]))
    report = modality(window_s=1).inspect(tmp_path / "dead.npz")
    assert report["n_windows"] == 0 and report["dead_channels"] == ["RAW-0", "RAW-1"]
    assert report["problem"].startswith("Every channel of") and "'RAW-0' and 'RAW-1'" in report["problem"]
    assert [c["status"] for c in report["files"][0]["channel_status"]] == ["flat throughout"] * 2
    capsys.readouterr()
    code = main(["data", "inspect", str(tmp_path / "dead.npz"), "--modality", "timeseries"])
    out, err = capsys.readouterr()
    assert code == 2 and "channel 'RAW-0': flat throughout" in out and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("relpos: error: Every channel of")
    # training on it still stops with that sentence
    with pytest.raises(DataError, match=r"Every channel of .* \('RAW-0' and 'RAW-1'\) is flat throughout"):
        modality(window_s=1).load(tmp_path / "dead.npz")


def test_sources_with_other_channels_name_the_difference(tmp_path):
    np.savez(tmp_path / "a.npz", **archive(noise((1, 3, 20)), ["x", "y", "z"]))
    np.savez(tmp_path / "b.npz", **archive(noise((1, 2, 20)), ["x", "y"]))
    with pytest.raises(DataError, match=r"b.npz' has channels x, y but '.*a.npz' has x, y, z \(it lacks 'z'\)"):
        modality(window_s=1).load(tmp_path)
    # choosing the channels both have reads both
    assert len(modality(window_s=1, channels="x,y").load(tmp_path)) == 4


def test_a_channel_that_steps_once_is_left_out_like_a_constant_one(capsys):
    # 1 sample × 400 steps at 10 Hz; "marker" is 0, then 1 from step 205. 2-s windows (20 steps)
    # every 1 s: starts 0, 10, ..., 380 -> 39 windows; only a = 190 and 200 hold the step, so
    # "marker" is flat in 37 of 39 (95% >= 80%): dead, with the dead-channel warning.
    x = noise((1, 2, 400))
    x[0, 1] = (np.arange(400) >= 205).astype(float)
    windows = modality(window_s=2, stride_s=1).load(archive(x, ["sig", "marker"]))
    assert windows.info["ch_names"] == ["sig"] and windows.info["dead_channels"] == ["marker"]
    assert tuple(windows.x.shape) == (39, 1, 20) and windows.info["dropped"] == {}
    assert (
        "Channel 'marker' is flat in 80% or more of the windows of recording 'the mapping of arrays' (a dead or "
        "non-signal channel), so it is left out of every recording; set modality.channels to the channels to "
        "use (e.g. 'sig') to choose the channels yourself." in capsys.readouterr().err
    )
    status = {s["name"]: s["status"] for s in windows.info["files"][0]["channel_status"]}
    assert status == {"sig": "ok", "marker": "flat in 37 of 39 windows"}
    # pinned by name, it stays
    assert modality(window_s=2, stride_s=1, channels="sig,marker").load(
        archive(x, ["sig", "marker"])
    ).info["ch_names"] == ["sig", "marker"]
