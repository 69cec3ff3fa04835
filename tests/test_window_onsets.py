"""Windows know where they sit: each window's onset and duration in its recording's own time.

Seconds from the recording's first sample for eeg and timeseries (a dropped window leaves its time
as a gap, never re-indexed), 0 and one window for an image, and none for a trial archive. Cached
with the windows, kept when windows are subset, restored by ``load_encoder(run).open``, shown by
``relpos data inspect``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import relpos
from relpos.cache import cached_windows
from relpos.cli import main
from relpos.config import build_dataclass
from relpos.errors import DataError
from relpos.evaluation.evaluate import held_out_split
from relpos.training import build_modality

from conftest import EEG_SAMPLE, train_tiny_part

pytestmark = pytest.mark.usefixtures("one_thread")


def eeg(**options) -> relpos.Modality:
    cls = relpos.get_modality("eeg")
    return cls(build_dataclass(cls.Config, options, "modality"))


def timeseries(**options) -> relpos.Modality:
    cls = relpos.get_modality("timeseries")
    return cls(dataclasses.replace(cls.Config(), **options))


# -- the Windows fields ----------------------------------------------------------------------------
def test_a_subset_keeps_each_window_with_its_onset():
    windows = relpos.Windows(
        x=torch.arange(4.0).reshape(4, 1, 1), groups=np.array(["a", "a", "b", "b"]),
        onsets=[0, 30, 0, 90], durations=[30, 30, 30, 30],
    )
    assert windows.has_recording_time and windows.onsets.dtype == np.float64
    part = windows.subset([3, 1])
    assert part.x.flatten().tolist() == [3.0, 1.0]
    assert part.groups.tolist() == ["b", "a"] and part.onsets.tolist() == [90.0, 30.0]
    assert part.durations.tolist() == [30.0, 30.0]
    assert windows.subset(np.array([False, True, True, False])).onsets.tolist() == [30.0, 0.0]
    assert not relpos.Windows(x=torch.zeros(2, 1, 3)).has_recording_time  # a third-party modality's


def test_onsets_must_come_one_per_window_and_with_durations():
    with pytest.raises(ValueError, match=r"one onset and one duration per window \(3\), got 2 onsets and 3 durations"):
        relpos.Windows(x=torch.zeros(3, 1, 2), onsets=[0, 1], durations=[1, 1, 1])
    with pytest.raises(ValueError, match="onsets need durations too"):
        relpos.Windows(x=torch.zeros(3, 1, 2), onsets=[0, 1, 2])


# -- eeg -------------------------------------------------------------------------------------------
def test_the_bundled_edf_gives_onsets_every_stride_from_its_first_sample():
    # 61.0 s at 160 Hz, defaults window_s 30, stride_s 5, no hypnogram (labels: none): windows start
    # at 0, 5, ..., 30 s (a window at 35 s would end at 65 s, past the end). Nothing is cropped.
    windows = eeg().load(EEG_SAMPLE)
    assert windows.onsets.tolist() == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]
    assert windows.durations.tolist() == [30.0] * 7
    assert windows.info["time_unit"] == "s"
    again = eeg().load(EEG_SAMPLE)  # from the cache
    assert again.info["cache"]["hit"] and again.onsets.tolist() == windows.onsets.tolist()


def scored_night() -> "mne.io.RawArray":  # noqa: F821
    """300 s of 2 EEG channels at 100 Hz, scored every 30 s: unscored (``?``) for the first minute
    and at 150–180 s, so the grid starts at the first scored epoch (60 s) and the window at 150 s is
    dropped as unlabelled."""
    import mne

    data = np.random.default_rng(0).standard_normal((2, 30000)) * 20e-6
    raw = mne.io.RawArray(data, mne.create_info(["EEG Fpz-Cz", "EEG Pz-Oz"], 100.0, "eeg"), verbose="error")
    scoring = [(0, 60, "Sleep stage ?"), (60, 60, "Sleep stage W"), (120, 30, "Sleep stage 2"),
               (150, 30, "Sleep stage ?"), (180, 60, "Sleep stage 2"), (240, 60, "Sleep stage R")]
    raw.set_annotations(mne.Annotations(*zip(*scoring)))
    return raw


def test_a_dropped_window_leaves_a_gap_of_onsets():
    windows = eeg(labels="sleep", window_s=30, stride_s=30, cache=False).load(scored_night())
    assert windows.info["dropped"] == {"no label": 1}
    assert windows.onsets.tolist() == [60.0, 90.0, 120.0, 180.0, 210.0, 240.0, 270.0]
    assert [windows.class_names[i] for i in windows.labels.tolist()] == ["W", "W", "N2", "N2", "N2", "REM", "REM"]


def test_event_windows_start_at_their_annotations():
    # Events at 1, 5 and 9 s of a 12-s recording, windows of 2 s from 0.5 s after each: 1.5, 5.5, 9.5 s.
    import mne

    data = np.random.default_rng(0).standard_normal((2, 1200)) * 20e-6
    raw = mne.io.RawArray(data, mne.create_info(["Cz", "Pz"], 100.0, "eeg"), verbose="error")
    raw.set_annotations(mne.Annotations([1.0, 5.0, 9.0], [0.0, 0.0, 0.0], ["left", "right", "left"]))
    windows = eeg(windows="events", labels="annotations", window_s=2, event_offset_s=0.5, patch_s=0.5,
                  l_freq=0, cache=False).load(raw)
    assert windows.onsets.tolist() == [1.5, 5.5, 9.5] and windows.durations.tolist() == [2.0, 2.0, 2.0]


def test_a_held_out_block_of_time_keeps_its_onsets():
    # 7 windows in 2 blocks of time: block 0 = windows 0-3, block 1 = windows 4-6; seed 0 holds out
    # block 0, and window 4 beside it is left out of training (gap 1).
    train, test, _ = held_out_split(
        eeg(labels="sleep", window_s=30, stride_s=30, cache=False), scored_night(), 0.5, seed=0, n_blocks=2
    )
    assert test.onsets.tolist() == [60.0, 90.0, 120.0, 180.0]
    assert train.onsets.tolist() == [240.0, 270.0] and train.durations.tolist() == [30.0, 30.0]


def trials_archive(path, seconds: float = 2.0):
    rng = np.random.default_rng(0)
    np.savez(path, X=(20 * rng.standard_normal((3, 2, int(seconds * 100)))).astype(np.float32),
             y=np.array([0, 1, 0]), sfreq=np.array(100.0), ch_names=np.array(["Cz", "Pz"]))
    return path


def test_eeg_trials_have_no_recording_time_but_one_recording_in_an_array_has(tmp_path):
    one_second = dict(window_s=1, stride_s=1, patch_s=0.25, l_freq=0)
    trials = eeg(**one_second).load(trials_archive(tmp_path / "trials.npz"))
    assert len(trials) == 6 and trials.onsets is None and not trials.has_recording_time
    rng = np.random.default_rng(1)
    np.save(tmp_path / "recording.npy", (20 * rng.standard_normal((2, 500))).astype(np.float32))
    recording = eeg(**one_second, source_sfreq=100).load(tmp_path / "recording.npy")
    assert recording.onsets.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0] and recording.durations.tolist() == [1.0] * 5


def test_the_sleep_night_gives_2650_windows_30_s_apart(shared_data):
    # 79,500 s scored every 30 s from its first sample (2,650 epochs, all staged inside the
    # recording; the 230 '?' epochs lie past its end): nothing dropped, nothing cropped.
    windows = eeg().load(shared_data / "eeg" / "sleep-edf")
    assert len(windows) == 2650
    assert np.array_equal(windows.onsets, 30.0 * np.arange(2650))
    assert windows.onsets[-1] == 79470.0 and set(windows.durations.tolist()) == {30.0}


# -- timeseries ------------------------------------------------------------------------------------
def two_recordings(folder, kind: str) -> dict:
    """``walk`` (600 s) and ``run`` (200 s, NaN at 40-41 s) at 10 Hz; the modality options to read them."""
    rng = np.random.default_rng(0)
    walk = rng.standard_normal((2, 6000)).astype(np.float32)
    run = rng.standard_normal((2, 2000)).astype(np.float32)
    run[:, 400:410] = np.nan
    folder.mkdir()
    if kind == "numpy":
        np.save(folder / "walk.npy", walk)
        np.save(folder / "run.npy", run)
        return {"sfreq": 10.0}
    xr = pytest.importorskip("xarray")
    for name, x in (("walk", walk), ("run", run)):
        xr.DataArray(x, dims=("channel", "time"), coords={"channel": ["acc", "gyro"]}, attrs={"sfreq": 10.0},
                     name="signal").to_netcdf(folder / f"{name}.nc")
    return {}


@pytest.mark.parametrize("kind", ["netcdf", "numpy"])
def test_two_recordings_give_onsets_per_recording(tmp_path, kind):
    options = two_recordings(tmp_path / "data", kind)
    # window_s = 0 on continuous recordings: windows of 16 patches of 1 s = 16 s, stride 16 s.
    # walk: 0, 16, ..., 576 s (37 windows); run: 0, 16, ..., 176 s (12) less the one at 32 s (NaN).
    windows = timeseries(**options).load(tmp_path / "data")
    onsets = {g: windows.onsets[windows.groups == g].tolist() for g in ("walk", "run")}
    assert onsets["walk"] == [16.0 * k for k in range(37)]
    assert onsets["run"] == [0.0, 16.0] + [16.0 * k for k in range(3, 12)]
    assert set(windows.durations.tolist()) == {16.0} and windows.info["time_unit"] == "s"
    # window_s set: 10-s windows every 5 s, and the cache gives the same back.
    for _ in range(2):
        windows = timeseries(**options, window_s=10, stride_s=5).load(tmp_path / "data")
        run = windows.onsets[windows.groups == "run"].tolist()
        assert run[:3] == [0.0, 5.0, 10.0] and 35.0 not in run and 40.0 not in run and run[-1] == 190.0
    assert windows.info["cache"]["hit"]


def test_a_timeseries_trial_archive_has_no_recording_time(tmp_path):
    windows = timeseries(window_s=1, stride_s=1).load(trials_archive(tmp_path / "trials.npz"))
    assert len(windows) == 6 and windows.onsets is None and windows.durations is None


# -- images ----------------------------------------------------------------------------------------
def test_an_image_is_one_recording_of_one_window(make_image_folder):
    windows = relpos.get_modality("image")().load(make_image_folder())
    assert windows.onsets.tolist() == [0.0] * 4 and windows.durations.tolist() == [1.0] * 4
    assert windows.info["time_unit"] == "window" and len(set(windows.groups.tolist())) == 4


# -- the cache -------------------------------------------------------------------------------------
def test_the_cache_keeps_onsets_and_durations(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"x")

    def build(writer):
        writer.append(np.zeros((3, 1, 4)), groups="a", onsets=np.array([0.0, 2.5, 7.5]), durations=2.5)
        writer.append(np.zeros((2, 1, 4)), groups="b", onsets=np.array([1.0, 3.0]), durations=[2.0, 2.0])

    for hit in (False, True):
        windows = cached_windows("onsets-test", [source], {}, build)
        assert windows.info["cache"]["hit"] is hit
        assert windows.onsets.tolist() == [0.0, 2.5, 7.5, 1.0, 3.0]
        assert windows.durations.tolist() == [2.5, 2.5, 2.5, 2.0, 2.0]
    in_memory = cached_windows("onsets-test", [source], {}, build, enabled=False)
    assert in_memory.onsets.tolist() == [0.0, 2.5, 7.5, 1.0, 3.0]


def test_a_build_that_gives_onsets_for_some_recordings_only_is_refused(tmp_path):
    def build(writer):
        writer.append(np.zeros((1, 1, 4)), groups="a", onsets=[0.0], durations=1.0)
        writer.append(np.zeros((1, 1, 4)), groups="b")

    with pytest.raises(DataError, match=r"^Windows from 'b' have no onsets in their recording but earlier "
                                        r"windows have them; give every recording's onsets or none\.$"):
        cached_windows("onsets-test", [], {}, build, enabled=False)


# -- a trained run, and data inspect ---------------------------------------------------------------
def test_load_encoder_opens_data_with_the_onsets_of_training(tmp_path):
    run = train_tiny_part(tmp_path / "run")
    trained = build_modality(relpos.load_encoder(run).config).load(EEG_SAMPLE)
    opened = relpos.load_encoder(run).open(EEG_SAMPLE)
    assert opened.onsets.tolist() == trained.onsets.tolist() == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]
    assert opened.durations.tolist() == [30.0] * 7


def test_data_inspect_says_where_windows_sit(tmp_path, capsys):
    assert main(["data", "inspect", str(EEG_SAMPLE), "--modality", "eeg"]) == 0
    assert "Recording time: 1 recording, onsets 0–30 s, windows of 30 s\n" in capsys.readouterr().out
    archive = trials_archive(tmp_path / "trials.npz")
    assert main(["data", "inspect", str(archive), "--modality", "timeseries", "--set", "modality.window_s=1"]) == 0
    assert ("Recording time: none (trial archive): pretexts that relate windows of one recording refuse it\n"
            in capsys.readouterr().out)


def test_inspect_says_nothing_of_recording_time_when_no_window_is_left():
    # Every recording skipped (e.g. no channel matches): the data is not a trial archive, it is empty,
    # so `data inspect` prints no "Recording time" line rather than calling it a trial archive.
    from relpos.cli import _recording_time_line
    from relpos.modality import recording_time

    empty = relpos.Windows(x=torch.zeros(0, 2, 8), info={"time_unit": "s"})
    assert recording_time(empty) == {"known": True}
    assert _recording_time_line(recording_time(empty)) is None
    trials = relpos.Windows(x=torch.zeros(3, 2, 8), info={"time_unit": "s"})
    assert _recording_time_line(recording_time(trials)).startswith("Recording time: none (trial archive)")
