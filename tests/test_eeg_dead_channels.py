"""Channels that carry no signal (issue 9, section 4): left out, named, and reported by ``data inspect``.

The recordings are written by the tests: an EDF like the one in the report (raw ADC channels
``RAW-0``/``RAW-1``, unit ``n/a``, one stuck at a constant, one a 0/1.5 trigger line stored as
EEG) and small FIF files, so every count is worked out by hand.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import relpos
from relpos.cli import main
from relpos.config import build_dataclass
from relpos.errors import DataError


def eeg(**options):
    cls = relpos.get_modality("eeg")
    options.setdefault("cache", False)
    return cls(build_dataclass(cls.Config, options, "modality"))


def write_adc_edf(path, seconds=120, stuck=512.0, trigger_period_s=2.0, names=("RAW-0", "RAW-1")):
    """A 100-Hz EDF of two raw ADC channels, unit 'n/a': the first stuck at ``stuck``, the second a
    trigger line at 0 with 0.2-s pulses to 1.5 every ``trigger_period_s`` seconds."""
    edfio = pytest.importorskip("edfio")
    fs = 100
    t = np.arange(seconds * fs)
    stuck_line = np.full(len(t), stuck)
    trigger = np.where((t % int(trigger_period_s * fs)) < 20, 1.5, 0.0)
    signals = [
        edfio.EdfSignal(stuck_line, sampling_frequency=fs, label=names[0], physical_dimension="n/a",
                        physical_range=(0, 1024)),
        edfio.EdfSignal(trigger, sampling_frequency=fs, label=names[1], physical_dimension="n/a",
                        physical_range=(0, 1.5)),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    edfio.Edf(signals).write(path)
    return path


def write_fif(path, data, channels, sfreq=100.0):
    import mne

    raw = mne.io.RawArray(data, mne.create_info(list(channels), sfreq, "eeg"), verbose="error")
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.save(path, overwrite=True, verbose="error")
    return path


def noise(channels, seconds, seed):
    return np.random.default_rng(seed).standard_normal((channels, int(seconds * 100))) * 20e-6


def test_a_stuck_adc_channel_is_left_out_and_named_and_the_trigger_line_is_kept(tmp_path, capsys):
    path = write_adc_edf(tmp_path / "adc.edf")
    windows = eeg().load(path)
    # 120 s, 30-s windows every 5 s: starts 0, 5, ..., 90 -> 19 windows, each with a trigger pulse.
    assert tuple(windows.x.shape) == (19, 1, 3000)
    assert windows.info["ch_names"] == ["RAW-1"] and windows.info["dead_channels"] == ["RAW-0"]
    assert windows.info["dropped"] == {}
    err = capsys.readouterr().err
    assert (
        "relpos: warning: Channel 'RAW-0' is flat throughout recording 'adc' (a dead or non-signal channel), "
        "so it is left out of every recording; set modality.channels to the channels to use (e.g. 'RAW-1') "
        "to choose the channels yourself." in err
    )
    (entry,) = windows.info["files"]
    assert [(s["name"], s["unit"], s["status"]) for s in entry["channel_status"]] == [
        ("RAW-0", "n/a", "left out (flat throughout this recording)"),
        ("RAW-1", "n/a", "ok"),
    ]


def test_a_live_trigger_line_that_goes_quiet_drops_only_those_windows_naming_it(tmp_path, capsys):
    # Pulses every 40 s (at 0, 40, 80 s) of a 120-s recording.
    path = write_adc_edf(tmp_path / "adc.edf", trigger_period_s=40.0)
    windows = eeg().load(path)
    # Starts 0..90 every 5 s (19); a window [a, a + 30) misses the pulses [0, .2), [40, 40.2), [80, 80.2)
    # when 0.2 <= a and a + 30 <= 40, 40.2 <= a and a + 30 <= 80, or 80.2 <= a and a + 30 <= 120:
    # a in {5, 10}, {45, 50}, {85, 90}: 6 windows dropped, 13 kept, and RAW-1 stays (it is live).
    assert len(windows) == 13 and windows.info["ch_names"] == ["RAW-1"]
    assert windows.info["dropped"] == {"flat channel 'RAW-1'": 6}
    assert "6 flat channel 'RAW-1'" in capsys.readouterr().err
    status = {s["name"]: s["status"] for s in windows.info["files"][0]["channel_status"]}
    assert status["RAW-1"] == "flat in 6 of 19 windows (dropped)"


def test_a_channel_dead_in_a_later_recording_is_left_out_of_every_recording(tmp_path, capsys):
    first = noise(3, 40, seed=1)
    second = noise(3, 40, seed=2)
    second[1] = 7e-6  # Cz stuck in the second night only
    write_fif(tmp_path / "d" / "night1_raw.fif", first, ["Fz", "Cz", "Pz"])
    write_fif(tmp_path / "d" / "night2_raw.fif", second, ["Fz", "Cz", "Pz"])
    windows = eeg(stride_s=10).load(tmp_path / "d")
    # Both nights keep Fz and Pz: 40 s -> starts 0 and 10 -> 2 windows each.
    assert tuple(windows.x.shape) == (4, 2, 3000)
    assert windows.info["ch_names"] == ["Fz", "Pz"] and windows.info["dead_channels"] == ["Cz"]
    assert [f["channels"] for f in windows.info["files"]] == [["Fz", "Pz"], ["Fz", "Pz"]]
    status = [{s["name"]: s["status"] for s in f["channel_status"]} for f in windows.info["files"]]
    assert status[0]["Cz"] == "left out (flat throughout another recording)"
    assert status[1]["Cz"] == "left out (flat throughout this recording)"
    err = capsys.readouterr().err
    assert err.count("Channel 'Cz' is flat throughout recording 'night2_raw'") == 1  # said once


def test_a_pinned_dead_channel_is_an_error_that_names_it(tmp_path):
    path = write_adc_edf(tmp_path / "adc.edf", names=("EEG A", "EEG B"))
    with pytest.raises(DataError) as info:
        eeg(channels="EEG A,EEG B").load(path)
    assert str(info.value) == (
        f"Recording {str(path)!r}: channel 'EEG A' is named in modality.channels but flat throughout it "
        f"(peak-to-peak below modality.flat_threshold = 1e-07), so every window would be dropped; leave it "
        f"out of modality.channels."
    )
    assert eeg(channels="EEG B").load(path).info["ch_names"] == ["EEG B"]  # pinning the live one works


def test_a_recording_with_no_live_channel_says_which_channels_are_flat(tmp_path):
    path = write_fif(tmp_path / "dead_raw.fif", np.full((2, 4000), 1e-6), ["O1", "O2"])
    with pytest.raises(DataError, match=r"has no live channel: channels 'O1' and 'O2' are flat throughout it"):
        eeg().load(path)


def test_inspect_reports_channels_instead_of_failing_and_exits_2_only_when_nothing_is_usable(tmp_path, capsys):
    data = noise(2, 40, seed=3)
    data[0, 100:150] = np.nan
    usable = write_fif(tmp_path / "nan_raw.fif", data, ["F3", "F4"])
    assert main(["data", "inspect", str(usable), "--set", "cache=false"]) == 0
    out = capsys.readouterr().out
    # 40 s: starts 0, 5, 10 (windows of 30 s); the NaNs at 1.0-1.5 s spoil only the first one.
    assert "channel 'F3': 50 non-finite samples" in out and "Windows: 2 (each 2 channels × 3000)" in out
    assert "non-finite values: 1" in out

    dead = write_fif(tmp_path / "dead_raw.fif", np.zeros((2, 4000)), ["O1", "O2"])
    assert main(["data", "inspect", str(dead), "--json", "--set", "cache=false"]) == 2
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["n_windows"] == 0
    (skipped,) = report["skipped"]
    assert [(s["name"], s["status"]) for s in skipped["channel_status"]] == [
        ("O1", "flat throughout"), ("O2", "flat throughout")
    ]
    assert "Traceback" not in captured.err
    assert captured.err.strip().splitlines()[-1] == (
        f"relpos: error: No usable recording in {str(dead)!r}: every one was skipped: {dead} (it has no "
        f"live channel (channels 'O1' and 'O2' are flat throughout it))."
    )


# -- EEG trials in NumPy archives: the archive is the recording ---------------------------------------
def test_a_channel_flat_in_every_trial_is_left_out_and_one_flat_in_some_trials_drops_those(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 200)) * 20  # µV, 2 s at 100 Hz
    x[:, 2] = 4.0  # 'Oz' stuck in every trial: dead
    x[1, 0] = -3.0  # 'Fz' flat in trial 1 only: that trial's window is dropped
    np.savez(tmp_path / "trials.npz", X=x, y=np.arange(6) % 2, sfreq=np.array(100.0),
             ch_names=np.array(["Fz", "Cz", "Oz"]))
    windows = eeg(window_s=2, stride_s=2, patch_s=0.5).load(tmp_path / "trials.npz")
    assert tuple(windows.x.shape) == (5, 2, 200)
    assert windows.info["ch_names"] == ["Fz", "Cz"] and windows.info["dead_channels"] == ["Oz"]
    assert windows.info["dropped"] == {"flat channel 'Fz'": 1}
    err = capsys.readouterr().err
    assert "Channel 'Oz' is flat throughout recording 'trials.npz'" in err and "(e.g. 'Fz,Cz')" in err
    with pytest.raises(DataError, match=r"channel 'Oz' is named in modality.channels but flat throughout every trial"):
        eeg(window_s=2, stride_s=2, patch_s=0.5, channels="Fz,Oz").load(tmp_path / "trials.npz")


def test_a_channel_flat_in_most_windows_of_the_trials_is_left_out(tmp_path, capsys):
    # 6 trials of 2 s, 1-s windows every 1 s: 12 windows. Cz is stuck in trials 1-5 and live in trial 0:
    # flat in 10 of 12 windows (83% >= 80%), so it is dead and no window is dropped for it.
    x = np.random.default_rng(5).standard_normal((6, 3, 200)) * 20
    x[1:, 1] = 4.0
    np.savez(tmp_path / "trials.npz", X=x, sfreq=np.array(100.0), ch_names=np.array(["Fz", "Cz", "Oz"]))
    windows = eeg(window_s=1, stride_s=1, patch_s=0.5).load(tmp_path / "trials.npz")
    assert tuple(windows.x.shape) == (12, 2, 100) and windows.info["dropped"] == {}
    assert windows.info["ch_names"] == ["Fz", "Oz"] and windows.info["dead_channels"] == ["Cz"]
    status = {s["name"]: s["status"] for s in windows.info["files"][0]["channel_status"]}
    assert status["Cz"] == "left out (flat in 10 of 12 windows)"
    assert "Channel 'Cz' is flat in 80% or more of the windows of recording 'trials.npz'" in capsys.readouterr().err


def test_inspect_of_an_archive_with_no_live_channel_reports_each_channel(tmp_path, capsys):
    np.savez(tmp_path / "flat.npz", X=np.zeros((4, 2, 200)), sfreq=np.array(100.0), ch_names=np.array(["A", "B"]))
    code = main(["data", "inspect", str(tmp_path / "flat.npz"), "--set", "window_s=2", "--set", "stride_s=2",
                 "--set", "patch_s=0.5", "--set", "cache=false"])
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err
    assert "channel 'A': flat throughout" in captured.out and "channel 'B': flat throughout" in captured.out
    assert "has no live channel: channels 'A' and 'B' are flat throughout every trial" in captured.err


def test_a_dead_channel_is_not_part_of_the_average_reference(tmp_path):
    data = noise(3, 40, seed=4)
    data[2] = 5e-6  # 'Oz' stuck
    path = write_fif(tmp_path / "r_raw.fif", data, ["Fz", "Cz", "Oz"])
    with_dead = eeg(reference="average", stride_s=10).load(path)
    without = eeg(reference="average", stride_s=10).load(
        write_fif(tmp_path / "two_raw.fif", data[:2], ["Fz", "Cz"])
    )
    # The average of Fz and Cz only: the same windows as the recording that never had Oz.
    assert with_dead.info["ch_names"] == ["Fz", "Cz"]
    assert np.allclose(with_dead.x.numpy(), without.x.numpy(), atol=1e-5)
