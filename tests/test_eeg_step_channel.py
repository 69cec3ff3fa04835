"""A channel that steps once (issue 21, item 1): flat in nearly every window, so it is dead.

The recording is written by the tests, like the real file of the report: an EDF of one EEG-like
channel ``RAW-0`` (µV) and a trigger line ``RAW-1`` (unit ``n/a``, typed EEG by the file) that holds
0, then 1 from t = 100.5 s to the end. Every count is worked out by hand in the comments; the
defaults are 30-s windows every 5 s.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import relpos
from relpos.cli import main
from relpos.config import build_dataclass
from conftest import read_metrics, train_tiny_part

FS = 100
WARNING = (
    "Channel 'RAW-1' is flat in 80% or more of the windows of recording 'step' (a dead or non-signal "
    "channel), so it is left out of every recording; set modality.channels to the channels to use "
    "(e.g. 'RAW-0') to choose the channels yourself."
)


def eeg(**options):
    cls = relpos.get_modality("eeg")
    options.setdefault("cache", False)
    return cls(build_dataclass(cls.Config, options, "modality"))


def write_step_edf(path, seconds=284, step_s=100.5, names=("RAW-0", "RAW-1"), seed=0, live_second=False):
    """``seconds`` at 100 Hz: a 10-Hz rhythm in noise (µV), and a 0/1 line stepping up at ``step_s``
    (or, with ``live_second``, noise there too)."""
    edfio = pytest.importorskip("edfio")
    rng = np.random.default_rng(seed)
    t = np.arange(seconds * FS) / FS
    rhythm = 20 * np.sin(2 * np.pi * 10 * t) + 10 * rng.standard_normal(len(t))
    if live_second:
        second = edfio.EdfSignal(15 * rng.standard_normal(len(t)), sampling_frequency=FS, label=names[1],
                                 physical_dimension="uV", physical_range=(-200, 200))
    else:
        second = edfio.EdfSignal((t >= step_s).astype(float), sampling_frequency=FS, label=names[1],
                                 physical_dimension="n/a", physical_range=(0, 1))
    signals = [
        edfio.EdfSignal(rhythm, sampling_frequency=FS, label=names[0], physical_dimension="uV",
                        physical_range=(-200, 200)),
        second,
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    edfio.Edf(signals).write(path)
    return path


def test_a_line_that_steps_once_is_left_out_with_the_dead_channel_warning(tmp_path, capsys):
    path = write_step_edf(tmp_path / "step.edf")
    windows = eeg().load(path)
    # 284 s: starts 0, 5, ..., 250 -> 51 windows. The step at 100.5 s lies inside [a, a + 30) for
    # a = 75, 80, ..., 100 (6 windows); RAW-1 is flat in the other 45 (88% >= 80%): dead.
    assert tuple(windows.x.shape) == (51, 1, 3000)
    assert windows.info["ch_names"] == ["RAW-0"] and windows.info["dead_channels"] == ["RAW-1"]
    assert windows.info["dropped"] == {}
    assert WARNING in capsys.readouterr().err
    status = {s["name"]: s["status"] for s in windows.info["files"][0]["channel_status"]}
    assert status == {"RAW-0": "ok", "RAW-1": "left out (flat in 45 of 51 windows of this recording)"}


def test_inspect_reports_the_step_line_left_out_and_exits_0(tmp_path, capsys):
    path = write_step_edf(tmp_path / "step.edf")
    assert main(["data", "inspect", str(path), "--set", "cache=false"]) == 0
    captured = capsys.readouterr()
    assert "channel 'RAW-1': left out (flat in 45 of 51 windows of this recording)" in captured.out
    assert "Windows: 51 (each 1 channels × 3000)" in captured.out and "Dead channels: RAW-1" in captured.out
    assert WARNING in captured.err and "error" not in captured.err
    assert main(["data", "inspect", str(path), "--json", "--set", "cache=false"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dead_channels"] == ["RAW-1"] and report["n_windows"] == 51 and report["dropped"] == {}


def test_training_runs_on_the_recording_with_the_step_line(tmp_path, one_thread):
    path = write_step_edf(tmp_path / "data" / "step.edf")
    run = train_tiny_part(tmp_path / "run", data=path, steps=2)
    _, rows = read_metrics(run)
    assert [int(r["step"]) for r in rows if r.get("loss")][-1] == 2
    assert all(np.isfinite(float(r["loss"])) for r in rows if r.get("loss"))


def test_a_short_recording_keeps_a_line_flat_in_fewer_than_80_percent_of_its_windows(tmp_path):
    # 120 s: starts 0..90 -> 19 windows; the step at 60.5 s is inside a = 35, 40, ..., 60 (6 windows),
    # RAW-1 is flat in 13 of 19 (68%): live, and those 13 windows are dropped, naming it.
    path = write_step_edf(tmp_path / "step.edf", seconds=120, step_s=60.5)
    windows = eeg().load(path)
    assert windows.info["ch_names"] == ["RAW-0", "RAW-1"] and windows.info["dead_channels"] == []
    assert len(windows) == 6 and windows.info["dropped"] == {"flat channel 'RAW-1'": 13}


def test_a_pinned_step_line_is_kept_and_only_its_flat_windows_are_dropped(tmp_path):
    path = write_step_edf(tmp_path / "step.edf")
    windows = eeg(channels="RAW-0,RAW-1").load(path)
    assert windows.info["ch_names"] == ["RAW-0", "RAW-1"] and windows.info["dead_channels"] == []
    assert len(windows) == 6 and windows.info["dropped"] == {"flat channel 'RAW-1'": 45}


def test_when_every_channel_steps_once_the_windows_are_dropped_instead(tmp_path):
    # Both lines step at 100.5 s: neither is left out (nothing would remain); the 45 windows in which
    # they are flat are dropped, the 6 that hold the step are kept.
    edfio = pytest.importorskip("edfio")
    t = np.arange(284 * FS) / FS
    line = (t >= 100.5).astype(float)
    signals = [edfio.EdfSignal(line * (k + 1), sampling_frequency=FS, label=f"RAW-{k}", physical_dimension="n/a",
                               physical_range=(0, 2)) for k in range(2)]
    edfio.Edf(signals).write(tmp_path / "two.edf")
    windows = eeg().load(tmp_path / "two.edf")
    assert windows.info["dead_channels"] == [] and len(windows) == 6
    assert windows.info["dropped"] == {"flat channels 'RAW-0' and 'RAW-1'": 45}


def test_a_step_line_in_a_later_recording_is_left_out_of_every_recording(tmp_path, capsys):
    # a.edf has RAW-1 live; b.edf has it stepping once: it is left out of both, said once.
    write_step_edf(tmp_path / "d" / "a.edf", live_second=True, seed=1)
    write_step_edf(tmp_path / "d" / "b.edf", seed=2)
    windows = eeg().load(tmp_path / "d")
    assert windows.info["ch_names"] == ["RAW-0"] and windows.info["dead_channels"] == ["RAW-1"]
    assert tuple(windows.x.shape) == (102, 1, 3000)
    status = [{s["name"]: s["status"] for s in f["channel_status"]} for f in windows.info["files"]]
    assert status[0]["RAW-1"] == "left out (flat in most windows of another recording)"
    assert status[1]["RAW-1"] == "left out (flat in 45 of 51 windows of this recording)"
    err = capsys.readouterr().err
    assert err.count("Channel 'RAW-1' is flat in 80% or more of the windows of recording 'b'") == 1
