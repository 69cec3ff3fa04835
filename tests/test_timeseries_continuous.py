"""``modality.window_s = 0`` cuts a continuous recording into windows and keeps trials whole.

A continuous recording here is 600 s of 2 channels at 10 Hz (6000 samples). With the default 1-s
patches (10 samples) the derived window is 16 patches = 160 samples = 16 s, stride 16 s, so the
windows start at 0, 16, ..., 576 s: floor((6000 - 160) / 160) + 1 = 37 windows (the last 8 s are
left over).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import relpos
import relpos.plugins
from relpos.errors import DataError

from conftest import TINY_OVERRIDES
from example_plugins import EXAMPLE_PLUGINS, registered

pytestmark = pytest.mark.usefixtures("one_thread")

RATE = 10.0
SECONDS = 600


def recording(seconds: int = SECONDS, seed: int = 0) -> np.ndarray:
    """(2, seconds × 10) float32: two slow sines with noise, as an accelerometer might give."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    return np.stack([
        np.sin(2 * np.pi * 0.3 * t) + 0.1 * rng.standard_normal(t.size),
        np.cos(2 * np.pi * 0.1 * t) + 0.1 * rng.standard_normal(t.size),
    ]).astype(np.float32)


@pytest.fixture(scope="module")
def continuous_files(tmp_path_factory):
    """The same 600-s recording as netCDF (rate in attrs) and as .npy (rate from modality.sfreq)."""
    xr = pytest.importorskip("xarray")
    folder = tmp_path_factory.mktemp("continuous")
    x = recording()
    netcdf = folder / "walk.nc"
    xr.DataArray(
        x, dims=("channel", "time"), coords={"channel": ["acc", "gyro"]}, attrs={"sfreq": RATE}, name="signal"
    ).to_netcdf(netcdf)
    npy = folder / "walk.npy"
    np.save(npy, x)
    return {"netcdf": (netcdf, []), "numpy": (npy, [f"modality.sfreq={RATE:g}"])}


def load(data, *overrides):
    config = relpos.resolve_config(modality="timeseries", pretext="part", overrides=list(overrides))
    modality = relpos.plugins.get_modality("timeseries")(config.modality_config)
    return modality.load(data)


@pytest.mark.parametrize("kind", ["netcdf", "numpy"])
def test_a_continuous_recording_is_cut_into_16_patch_windows(continuous_files, kind, capsys):
    path, overrides = continuous_files[kind]
    windows = load(str(path), *overrides, "modality.normalize=instance")  # the hand computation below
    assert tuple(windows.x.shape) == (37, 2, 160)
    assert set(windows.groups.tolist()) == {"walk"}  # one recording: splits keep its windows together
    assert windows.info["window_samples"] == 160 and windows.info["stride_samples"] == 160
    # The first window is samples 0-159 of the recording, instance-normalised per channel.
    x = recording()[:, :160].astype(np.float64)
    expected = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
    np.testing.assert_allclose(windows.x[0].numpy(), expected, atol=1e-5)
    said = capsys.readouterr().err
    assert (
        "relpos: modality.window_s = 0 on a continuous recording: cutting it into windows of 16 s "
        "(16 patches of 1 s), stride 16 s; set modality.window_s to choose." in said
    )
    load(str(path), *overrides, "modality.normalize=instance")  # from the cache: said again
    assert "cutting it into windows of 16 s" in capsys.readouterr().err


def test_the_derived_window_follows_the_patch_and_the_stride(continuous_files):
    path, _ = continuous_files["netcdf"]
    # 0.5-s patches → 8-s windows (80 samples) every 4 s: floor((6000 - 80) / 40) + 1 = 149
    windows = load(str(path), "modality.patch_s=0.5", "modality.stride_s=4")
    assert tuple(windows.x.shape) == (149, 2, 80)
    # patch_samples = 25 → 400-sample windows: floor(6000 / 400) = 15
    assert tuple(load(str(path), "modality.patch_samples=25").x.shape) == (15, 2, 400)
    # a window_s that is set wins: 60-s windows → 10
    assert tuple(load(str(path), "modality.window_s=60").x.shape) == (10, 2, 600)


def test_a_trial_archive_stays_one_window_per_trial(tmp_path):
    # 5 trials of 60 s each: long enough to be cut, but trials of an archive stay whole
    archive = tmp_path / "trials.npz"
    trials = np.stack([recording(60, seed=k) for k in range(5)])
    np.savez(archive, X_train=trials, y_train=np.array([0, 1, 0, 1, 1]), sfreq=np.array(RATE))
    windows = load(str(archive))
    assert tuple(windows.x.shape) == (5, 2, 600)
    assert windows.labels.tolist() == [0, 1, 0, 1, 1]
    assert windows.info["window_choice"] == (
        "modality.window_s = 0 on 5 samples (trials): each sample is one window of 60 s."
    )
    # one (1, C, T) sample is a recording, not a trial archive: 60 s → 3 windows of 16 s
    assert tuple(load(trials[:1], f"modality.sfreq={RATE:g}").x.shape) == (3, 2, 160)


def test_labels_per_time_step_label_the_windows_of_a_recording(tmp_path):
    xr = pytest.importorskip("xarray")
    # rest for the first 300 s, walking after: window k spans [16k, 16k + 16) s and takes the label at
    # its centre 16k + 8 s, so windows 0-18 (centres 8-296 s) are rest and 19-36 (304-584 s) walking
    labels = np.where(np.arange(int(SECONDS * RATE)) < 300 * RATE, 0, 1)
    ds = xr.Dataset(
        {
            "signal": (("channel", "time"), recording()),
            "label": (("time",), labels, {"class_names": "rest walking"}),
        },
        attrs={"sfreq": RATE},
    )
    path = tmp_path / "labelled.nc"
    ds.to_netcdf(path)
    windows = load(str(path))
    assert windows.labels.tolist() == [0] * 19 + [1] * 18
    assert windows.class_names == ["rest", "walking"]


def test_a_recording_shorter_than_two_derived_windows_stays_whole(capsys):
    # 31 s < 2 × 16 s: one window of the whole recording, and nothing said at run time
    windows = load(recording(31), f"modality.sfreq={RATE:g}")
    assert tuple(windows.x.shape) == (1, 2, 310)
    assert "window_s = 0" not in capsys.readouterr().err
    # 32 s is two derived windows
    assert tuple(load(recording(32), f"modality.sfreq={RATE:g}").x.shape) == (2, 2, 160)


def test_recordings_of_different_lengths_are_cut_alike(tmp_path, capsys):
    # 100 s → 6 windows, 40 s → 2, 10 s is shorter than one window: skipped with a warning
    for name, seconds in (("a", 100), ("b", 40), ("c", 10)):
        np.save(tmp_path / f"{name}.npy", recording(seconds))
    windows = load(str(tmp_path), f"modality.sfreq={RATE:g}")
    assert tuple(windows.x.shape) == (8, 2, 160)
    assert windows.groups.tolist() == ["a"] * 6 + ["b"] * 2
    err = capsys.readouterr().err
    assert "on 3 continuous recordings: cutting them into windows of 16 s" in err
    assert "Skipping" in err and "shorter than one window (16 s)" in err


def test_trials_of_different_lengths_say_why_they_are_not_cut(tmp_path):
    for name, seconds in (("a", 20), ("b", 25)):
        np.save(tmp_path / f"{name}.npy", recording(seconds))
    why = r"no recording lasts 2 windows of 16 patches \(32 s\).*set modality.window_s"
    with pytest.raises(DataError, match=why):
        load(str(tmp_path), f"modality.sfreq={RATE:g}")


def test_data_inspect_shows_the_window_chosen(continuous_files, capsys):
    from relpos.cli import main

    path, _ = continuous_files["netcdf"]
    assert main(["data", "inspect", "--modality", "timeseries", str(path)]) == 0
    captured = capsys.readouterr()
    assert "Windows: 37 (each 2 channels × 160)" in captured.out
    assert "Window s: 16.0\nStride s: 16.0\n" in captured.out
    chosen = "Window choice: modality.window_s = 0 on a continuous recording: cutting it into windows of 16 s"
    assert chosen in captured.out
    assert "cutting" not in captured.err  # said once, in the report


# -- every pretext trains on a continuous recording with the defaults -----------------------------------------
#: Smaller projection heads for the pretexts that have them (as in test_conformance.py).
TINY_HEADS = ["pretext.out_dim=64", "pretext.head_hidden_dim=32", "pretext.head_bottleneck_dim=16"]
#: rp and ts default to Banville et al.'s sleep separations (close ≤ 1 min, far ≥ 15 min), which a
#: 592-s recording cannot serve (refused in one sentence, tests/test_rp_ts_cpc.py); these fit it.
FIT_THE_RECORDING = ["pretext.tau_pos_s=32", "pretext.tau_neg_s=160"]


def tiny_overrides(pretext_name):
    fields = {f.name for f in dataclasses.fields(relpos.plugins.get_pretext(pretext_name).Config)}
    return [
        o for o in [*TINY_OVERRIDES, *TINY_HEADS, *FIT_THE_RECORDING]
        if not o.startswith("pretext.") or o.split("=")[0].split(".")[1] in fields
    ]


def _timeseries_pretexts():
    with registered(*EXAMPLE_PLUGINS):
        return sorted(p for m, p in relpos.plugins.compatible_pairs() if m == "timeseries")


PRETEXTS = _timeseries_pretexts()


def test_every_builtin_pretext_is_listed():
    builtin = {"part", "part-grid", "dino", "pw-self", "sove", "spatial-reasoning", "mae", "mp3", "droppos"}
    assert builtin <= set(PRETEXTS)


@pytest.mark.parametrize("kind", ["netcdf", "numpy"])
@pytest.mark.parametrize("pretext_name", PRETEXTS)
def test_every_pretext_trains_on_a_continuous_recording_by_default(continuous_files, kind, pretext_name, tmp_path):
    path, overrides = continuous_files[kind]
    with registered(*EXAMPLE_PLUGINS):
        config = relpos.resolve_config(
            modality="timeseries", pretext=pretext_name,
            overrides=[*tiny_overrides(pretext_name), *overrides, "train.steps=2", "train.progress=false"],
        )
        config.out = str(tmp_path / "run")
        config.data = str(path)
        result = relpos.train(config)
    assert result.step == 2 and math.isfinite(result.loss)
    assert tuple(result.pretext.extent) == (160,)  # trained on the 16-s windows, not the whole recording
