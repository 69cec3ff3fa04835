"""Batches of neighbours: window requests drawn by hand, and the loop that serves them.

The hand-made data: three recordings whose windows are given out of order.

* ``night``: onsets 0, 30, 60, 120, 150 s (the window at 90 s was dropped), at window indices
  2, 5, 0, 7, 4;
* ``nap``: onsets 0, 30 s at indices 6, 1;
* ``short``: one window at 0 s, index 3.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import relpos
import relpos.plugins
from relpos.cli import main
from relpos.errors import DataError, PluginError
from relpos.neighbours import RecordingIndex, check_rows

pytestmark = pytest.mark.usefixtures("one_thread")

NIGHT = {0.0: 2, 30.0: 5, 60.0: 0, 120.0: 7, 150.0: 4}  # onset: window index
ONSETS = np.array([60.0, 30.0, 0.0, 0.0, 150.0, 30.0, 0.0, 120.0])
GROUPS = np.array(["night", "nap", "night", "short", "night", "night", "nap", "night"])


def hand_windows() -> relpos.Windows:
    x = torch.arange(8, dtype=torch.float32).reshape(8, 1, 1).expand(8, 2, 32).contiguous()  # window i holds i
    return relpos.Windows(x=x, groups=GROUPS, onsets=ONSETS, durations=np.full(8, 30.0), info={"time_unit": "s"})


@pytest.fixture
def index() -> RecordingIndex:
    return RecordingIndex.from_windows(hand_windows())


def partners(rows: torch.Tensor) -> dict[int, set[int]]:
    """``{anchor: every window drawn with it}`` over ``rows``."""
    found: dict[int, set[int]] = {}
    for row in rows.tolist():
        found.setdefault(row[0], set()).update(row[1:])
    return found


# -- the index -----------------------------------------------------------------------------------------
def test_the_index_sorts_each_recordings_windows_by_onset(index):
    assert index.names == ["night", "nap", "short"]  # in the order their first window appears
    assert [w.tolist() for w in index.windows] == [[2, 5, 0, 7, 4], [6, 1], [3]]
    assert [o.tolist() for o in index.onsets] == [[0, 30, 60, 120, 150], [0, 30], [0]]
    assert index.onsets[0].dtype == torch.float64 and index.unit == "s"
    assert index.recording_of_window.tolist() == [0, 1, 0, 2, 0, 0, 1, 0]


def test_a_trial_archive_has_no_index():
    trials = relpos.Windows(x=torch.zeros(4, 1, 8), info={"source": "trials.npz"})
    with pytest.raises(DataError) as caught:
        RecordingIndex.from_windows(trials, needed_by="Pretext 'rp'")
    assert str(caught.value) == (
        "Pretext 'rp' needs windows that know their time in a recording, but 'trials.npz' is a trial archive (its "
        "windows have no onsets); give it continuous recordings (e.g. EDF files, or a continuous NumPy or netCDF "
        "recording cut into windows)."
    )


def test_a_window_without_a_finite_onset_is_named():
    windows = relpos.Windows(x=torch.zeros(3, 1, 8), onsets=np.array([0.0, np.nan, 60.0]), durations=np.full(3, 30.0))
    with pytest.raises(DataError, match=r"^Pretext 'rp' needs the onset of every window, but window 1 of the data "
                                        r"has onset nan; onsets must be finite numbers\.$"):
        RecordingIndex.from_windows(windows, needed_by="Pretext 'rp'")


# -- the built-in requests, by hand --------------------------------------------------------------------
def test_within_span_draws_the_anchors_neighbours_and_nothing_else(index):
    request = relpos.WithinSpan(3, 60.0)
    # night: 0 s has 30 and 60 within 60 s; 30 s has 0 and 60 (120 is 90 away); 60 s has 0, 30, 120;
    # 120 s has 60 and 150; 150 s has only 120. The nap's windows have one other each, short none.
    assert request.usable(index) == ["night"]
    rows = request.draw(index, 3000, torch.Generator().manual_seed(0))
    assert rows.shape == (3000, 3) and rows.dtype == torch.long
    assert partners(rows) == {2: {5, 0}, 5: {2, 0}, 0: {2, 5, 7}, 7: {0, 4}}
    assert bool((rows[:, 1] != rows[:, 2]).all())
    # anchors uniform over the 4 usable windows; from the 60-s one, each of the 6 ordered pairs of its 3
    counts = Counter(rows[:, 0].tolist())
    assert all(abs(counts[a] / 3000 - 0.25) < 0.03 for a in (2, 5, 0, 7))
    from_60 = Counter(tuple(r[1:]) for r in rows.tolist() if r[0] == 0)
    assert len(from_60) == 6 and all(abs(c / sum(from_60.values()) - 1 / 6) < 0.05 for c in from_60.values())
    assert torch.equal(rows, request.draw(index, 3000, torch.Generator().manual_seed(0)))  # same seed, same rows
    assert not torch.equal(rows, request.draw(index, 3000, torch.Generator().manual_seed(1)))


def test_consecutive_windows_follow_each_other_across_a_dropped_one(index):
    request = relpos.Consecutive(3)
    assert request.usable(index) == ["night"]  # the nap has 2 windows
    rows = request.draw(index, 600, torch.Generator().manual_seed(0))
    # starts at 0, 30 or 60 s; from 60 s the next window is the one at 120 s (90 s was dropped)
    assert set(map(tuple, rows.tolist())) == {(2, 5, 0), (5, 0, 7), (0, 7, 4)}
    assert relpos.Consecutive(2).usable(index) == ["night", "nap"]


def test_pairs_by_separation_are_close_or_far_as_drawn(index):
    request = relpos.PairsBySeparation(30.0, 90.0)
    assert request.size == 2
    # close: 0 < |Δ| ≤ 30 s; far: |Δ| ≥ 90 s. The nap's 0-s window has a close partner but no far one.
    assert request.usable(index) == ["night"]
    rows = request.draw(index, 4000, torch.Generator().manual_seed(0))
    close = {2: {5}, 5: {2, 0}, 0: {5}, 7: {4}, 4: {7}}
    far = {2: {7, 4}, 5: {7, 4}, 0: {4}, 7: {2, 5}, 4: {2, 5, 0}}
    assert partners(rows) == {a: close[a] | far[a] for a in close}
    onset = {w: t for t, w in NIGHT.items()}
    gaps = torch.tensor([abs(onset[a] - onset[b]) for a, b in rows.tolist()])
    assert bool(((gaps > 0) & (gaps <= 30) | (gaps >= 90)).all())
    assert (gaps <= 30).float().mean().item() == pytest.approx(0.5, abs=0.03)
    only_close = relpos.PairsBySeparation(30.0, 90.0, positive_fraction=1.0)
    assert only_close.usable(index) == ["night", "nap"]  # no far partner needed
    assert partners(only_close.draw(index, 2000, torch.Generator().manual_seed(0))) == {**close, 6: {1}, 1: {6}}


def test_requests_refuse_settings_that_cannot_draw_in_one_sentence():
    with pytest.raises(ValueError, match=r"^PairsBySeparation needs tau_neg_s \(60 s\) to be at least tau_pos_s "
                                         r"\(900 s\), so that no pair is both close and far\.$"):
        relpos.PairsBySeparation(900.0, 60.0)
    with pytest.raises(ValueError, match=r"k, the windows per row, to be an integer of at least 2, got 1"):
        relpos.WithinSpan(1, 60.0)
    with pytest.raises(ValueError, match=r"span_s to be a positive number of seconds, got 0"):
        relpos.WithinSpan(2, 0)


def test_left_out_recordings_are_named_up_to_ten_then_counted(capsys):
    from relpos.neighbours import index_for_request

    # the night of 5 windows, then 12 one-window recordings "r0" … "r11"
    onsets = np.concatenate([[0.0, 30.0, 60.0, 120.0, 150.0], np.zeros(12)])
    groups = np.array(["night"] * 5 + [f"r{i}" for i in range(12)])
    windows = relpos.Windows(x=torch.zeros(17, 1, 4), groups=groups, onsets=onsets, durations=np.full(17, 30.0))
    index_for_request(relpos.PairsBySeparation(30.0, 90.0), windows, "rp")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (
        "relpos: warning: Recording 'r0' (1 window) is too short for pretext 'rp', which draws pairs of windows of "
        "one recording, 50% at most 30 s apart and the rest at least 90 s apart; it is left out of training."
    )
    assert [line.split("'")[1] for line in lines[:10]] == [f"r{i}" for i in range(10)]
    assert lines[10:] == ["relpos: warning: 2 more recordings are too short for pretext 'rp' and are left out of training."]


def test_rows_that_break_the_contract_are_refused_naming_the_pretext(index):
    request = relpos.WithinSpan(2, 60.0)
    with pytest.raises(PluginError, match=r"^Pretext 'mine''s window_request drew rows that mix recordings, but "
                                          r"draw\(index, n, generator\) must return a \(2, 2\) long tensor"):
        check_rows(torch.tensor([[2, 5], [2, 6]]), request, index, 2, "mine")  # 6 is the nap's
    with pytest.raises(PluginError, match=r"drew a int64 tensor of shape \(2, 3\)"):
        check_rows(torch.zeros(2, 3, dtype=torch.long), request, index, 2, "mine")


# -- the loop --------------------------------------------------------------------------------------------
#: Set by a test to stop the run with Ctrl-C right after this step (0: never).
STOP_AFTER = {"step": 0}


@dataclass
class GapsConfig:
    k: int = 3
    span_s: float = 60.0


class NeighbourGaps(relpos.Pretext):
    """Logs the mean onset gap and a checksum of the windows drawn; learns a scale, nothing random."""

    name = "test-neighbour-gaps"
    Config = GapsConfig
    needs_recording_time = True
    log_keys = ("mean_gap", "rows_checksum")

    def __init__(self, config, modality, encoder_config, data):
        super().__init__(config, modality, encoder_config, data)
        self.window_request = relpos.WithinSpan(config.k, config.span_s)
        self.scale = nn.Parameter(torch.ones(()))
        self.seen: list[dict[str, torch.Tensor]] = []

    def forward(self, batch, generator):
        self.seen.append({key: value.detach().cpu().clone() for key, value in batch.items()})
        onsets = batch["onsets"]
        loss = (self.scale * batch["x"].mean() - 1.0).pow(2)
        weights = torch.arange(1, batch["window_index"].numel() + 1, dtype=torch.float64)
        checksum = (batch["window_index"].flatten().double() * weights).sum()
        return loss, {"mean_gap": (onsets[:, 1:] - onsets[:, :1]).abs().mean(), "rows_checksum": checksum}

    def after_step(self, step):
        if step == STOP_AFTER["step"]:
            raise KeyboardInterrupt


class GapsPlugin:
    @relpos.hookimpl
    def register_pretexts(self, register):
        register(NeighbourGaps)


@pytest.fixture(autouse=True, scope="module")
def gaps_registered():
    relpos.plugins.register_plugin(GapsPlugin(), "test-neighbours")
    yield
    relpos.plugins.unregister_plugin("test-neighbours")


def run_windows() -> relpos.Windows:
    """night: 10 windows 30 s apart; nap: 4; short: 1 (left out), interleaved; window i holds i."""
    onsets = np.concatenate([np.arange(10) * 30.0, np.arange(4) * 30.0, [0.0]])
    groups = np.array(["night"] * 10 + ["nap"] * 4 + ["short"])
    order = np.random.default_rng(3).permutation(15)
    x = torch.arange(15, dtype=torch.float32)[order].reshape(15, 1, 1).expand(15, 2, 32).contiguous()
    return relpos.Windows(x=x, groups=groups[order], onsets=onsets[order], durations=np.full(15, 30.0),
                          info={"time_unit": "s"})


def run_config(out: Path, steps: int = 6, batch_size: int = 4) -> relpos.RunConfig:
    overrides = [
        "encoder.dim=16", "encoder.depth=1", "encoder.heads=2", "modality.patch_samples=8",
        f"train.batch_size={batch_size}", f"train.steps={steps}", "train.ckpt_every=3", "train.log_every=1",
        "train.warmup_steps=2", "train.lr=0.01", "train.device=cpu", "train.progress=false",
        "train.tensorboard=false", "train.seed=5",
    ]
    config = relpos.resolve_config(modality="timeseries", pretext="test-neighbour-gaps", overrides=overrides)
    config.out = str(out)
    return config


def metrics(run_dir: Path) -> list[tuple[str, str, str, str]]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [(r["step"], r["loss"], r["mean_gap"], r["rows_checksum"]) for r in csv.DictReader(fh)]


def expected_rows(windows: relpos.Windows, steps: int, batch_size: int, seed: int = 5) -> list[torch.Tensor]:
    """The global batches' rows a run seeded with ``seed`` draws: the request's draws from that stream."""
    generator = torch.Generator().manual_seed(seed)
    index = RecordingIndex.from_windows(windows)
    return [relpos.WithinSpan(3, 60.0).draw(index, batch_size, generator) for _ in range(steps)]


def test_the_loop_serves_k_windows_of_one_recording_with_their_onsets(tmp_path, capsys):
    windows = run_windows()
    result = relpos.train(run_config(tmp_path / "run"), data=windows)
    assert "relpos: warning: Recording 'short' (1 window) is too short for pretext 'test-neighbour-gaps', which " \
           "draws 3 windows of one recording within 60 s of the first; it is left out of training." \
           in capsys.readouterr().err.splitlines()
    # the run's pretext rebuilt from its checkpoint (relpos show) needs the data's shape only, not its onsets
    from relpos.show import load_run

    assert load_run(result.run_dir).pretext.window_request.describe() == result.pretext.window_request.describe()
    seen = result.pretext.seen
    assert len(seen) == 6 and set(seen[0]) == {"x", "onsets", "window_index"}
    for batch, rows in zip(seen, expected_rows(windows, 6, 4)):  # the shared index stream, nothing else
        assert torch.equal(batch["window_index"], rows)
        assert batch["x"].shape == (4, 3, 2, 32) and torch.equal(batch["x"], windows.x[rows])  # gathered right
        assert batch["onsets"].dtype == torch.float32
        assert torch.equal(batch["onsets"], torch.from_numpy(windows.onsets)[rows].float())
        gaps = (batch["onsets"][:, 1:] - batch["onsets"][:, :1]).abs()
        assert bool((gaps > 0).all() and (gaps <= 60).all())  # distinct neighbours within the span
        assert set(windows.groups[rows.flatten().numpy()].reshape(4, 3)[:, 0]) <= {"night", "nap"}
        assert all(len(set(row)) == 1 for row in windows.groups[rows.numpy()])  # one recording per row


def test_a_killed_run_resumes_to_the_same_batches(tmp_path):
    windows = run_windows()
    whole = relpos.train(run_config(tmp_path / "whole"), data=windows)
    out = tmp_path / "killed"
    STOP_AFTER["step"] = 5  # after the checkpoint of step 3 and two logged steps that resume replays
    try:
        with pytest.raises(relpos.training.TrainingInterrupted):
            relpos.train(run_config(out), data=windows)
    finally:
        STOP_AFTER["step"] = 0
    resumed = relpos.train(relpos.resume_config(out), resume=True, data=windows)
    assert metrics(out) == metrics(tmp_path / "whole")  # loss, mean gap and the windows' checksum, every step
    assert len(resumed.pretext.seen) == 3
    for a, b in zip(resumed.pretext.seen, whole.pretext.seen[3:]):
        assert torch.equal(a["window_index"], b["window_index"])


def test_data_where_no_recording_is_long_enough_is_one_sentence_and_exit_2(tmp_path, capfd):
    data = tmp_path / "walk.npy"
    np.save(data, np.random.default_rng(0).normal(size=(2, 200)).astype(np.float32))  # 20 s at 10 Hz
    out = tmp_path / "runs" / "short"
    code = main(["train", "--modality", "timeseries", "--pretext", "test-neighbour-gaps", "--data", str(data),
                 "--set", "modality.sfreq=10", "--set", "modality.window_s=10", "--set", "modality.patch_s=1",
                 "--set", "encoder.dim=16", "--set", "encoder.depth=1", "--set", "encoder.heads=2",
                 "--steps", "2", "--no-progress", "--out", str(out)])
    err = capfd.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("relpos: error:")] == [
        f"relpos: error: Pretext 'test-neighbour-gaps' draws 3 windows of one recording within 60 s of the first, "
        f"but no recording of {str(data)!r} is long enough for that (1 recording; the longest: 2 windows, onsets "
        f"spanning 10 s); give it "
        f"longer recordings or change the pretext's settings."
    ]
    assert not (tmp_path / "runs").exists()


def test_a_pretext_that_needs_recording_time_refuses_a_trial_archive_before_any_run(tmp_path):
    trials = relpos.Windows(x=torch.zeros(6, 2, 32), groups=np.array(["a", "b"] * 3), info={"source": "trials.npz"})
    with pytest.raises(DataError) as caught:
        relpos.train(run_config(tmp_path / "runs" / "trials"), data=trials)
    assert str(caught.value) == (
        "Pretext 'test-neighbour-gaps' relates windows of one recording, so it needs windows that know their time "
        "in a recording, but 'trials.npz' is a trial archive (its windows have no onsets); give it continuous "
        "recordings (e.g. EDF files, or a continuous NumPy or netCDF recording cut into windows)."
    )
    assert not (tmp_path / "runs").exists()


# -- two processes, as torchrun runs them ------------------------------------------------------------------
def _process(rank: int, port: int, config: relpos.RunConfig, report: Path) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    outcome: dict = {}
    try:
        result = relpos.train(config, data=run_windows())
        outcome["rows"] = torch.stack([batch["window_index"] for batch in result.pretext.seen])
    except BaseException:  # noqa: BLE001 - the parent asserts on what each process met
        outcome["error"] = traceback.format_exc()
    torch.save(outcome, report / f"rank{rank}.pt")


@pytest.mark.skipif(not torch.distributed.is_available() or os.name == "nt", reason="needs gloo and fork")
def test_two_processes_each_take_their_slice_of_the_same_global_rows(tmp_path):
    from test_distributed import JOIN_TIMEOUT_S, free_port

    context, port = multiprocessing.get_context("fork"), free_port()
    processes = [context.Process(target=_process, args=(rank, port, run_config(tmp_path / "run"), tmp_path))
                 for rank in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(JOIN_TIMEOUT_S)
        if process.is_alive():
            process.kill()
    outcomes = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    for outcome in outcomes:
        assert "error" not in outcome, outcome["error"]
    expected = torch.stack(expected_rows(run_windows(), 6, 4))  # (steps, global batch, K)
    assert torch.equal(outcomes[0]["rows"], expected[:, :2]) and torch.equal(outcomes[1]["rows"], expected[:, 2:])


def test_the_requests_are_in_the_docs_building_blocks_table():
    from test_plugin_contract import documented_blocks

    documented = documented_blocks()  # the signatures themselves are compared there
    for name in ("relpos.RecordingIndex.from_windows", "relpos.WithinSpan", "relpos.Consecutive",
                 "relpos.PairsBySeparation", "relpos.neighbours.uniform_integers"):
        assert name in documented
