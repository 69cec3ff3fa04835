"""The recording-scale pretexts (rp, ts, cpc, part with scope=recording) on two processes and through a SIGKILL.

Their windows are drawn by the loop from the shared index stream (``self.window_request``, served
from :mod:`relpos.neighbours`), so the global batch's rows must be the same on one process and on two
(each taking its half), and a run killed after a checkpoint must resume to the uninterrupted losses.
(CPC's losses used to differ: each process standardised its windows over its own half of the batch;
the statistics are now the global batch's. PART's rows on one process used to differ too: the index
stream was the pretext's own stream there; a pretext with a window request now has an index stream of
its own.)
The data is a synthetic 5-minute, 2-channel EEG recording at 100 Hz cut into 30 windows of 10 s;
the settings fit it (τ of 20 and 100 s, 3 context windows for CPC, a 120-s span for PART).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import relpos
import test_distributed
from conftest import read_metrics, kill_after_a_checkpoint
from relpos.checkpoint import load_checkpoint
from relpos.cli import main
from test_distributed import column, losses, no_errors, run_processes

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or sys.platform == "win32",
    reason="needs torch.distributed with gloo and fork-started processes",
)

STEPS = 6
CKPT_EVERY = 2
#: Per pretext: settings that fit 300 s of 10-s windows (onsets 0, 10, …, 290 s).
SETTINGS = {
    "rp": ["pretext.tau_pos_s=20", "pretext.tau_neg_s=100"],
    "ts": ["pretext.tau_pos_s=20", "pretext.tau_neg_s=100"],
    "cpc": ["pretext.n_context=3", "pretext.n_predict=1", "pretext.n_negatives=2"],
    "part": ["pretext.scope=recording", "pretext.span_s=120", "pretext.windows=3", "pretext.n_pairs=16"],
}
PRETEXTS = list(SETTINGS)
#: Where a wrapped ``forward`` writes the window indices of each batch it gets (one JSON line per step).
ROWS_DIR = "RELPOS_TEST_ROWS_DIR"
#: In the processes of a run: every one of them exits in this step, after its optimiser step and before
#: its metrics row and checkpoint, as if the job were killed there.
EXIT_AFTER_STEP = "RELPOS_TEST_EXIT_AFTER_STEP"


@pytest.fixture(scope="module")
def five_minutes(tmp_path_factory):
    """A synthetic EEG recording: 2 channels at 100 Hz for 300 s (.fif), slowly changing in frequency."""
    import mne

    rng = np.random.default_rng(0)
    t = np.arange(30000) / 100.0
    signal_ = 20e-6 * np.sin(2 * np.pi * (8 + t / 60.0) * t) + 10e-6 * rng.standard_normal((2, t.size))
    raw = mne.io.RawArray(signal_, mne.create_info(["C3", "C4"], 100.0, ch_types="eeg"), verbose="error")
    path = tmp_path_factory.mktemp("eeg") / "five_minutes_raw.fif"
    raw.save(path, verbose="error")
    return path


def settings(pretext_name: str, steps: int = STEPS) -> list[str]:
    return ["modality.window_s=10", "modality.stride_s=10", "modality.patch_s=1", "encoder.dim=16",
            "encoder.depth=1", "encoder.heads=2", "train.batch_size=4", f"train.steps={steps}",
            f"train.ckpt_every={CKPT_EVERY}", "train.log_every=1", "train.warmup_steps=2", "train.lr=0.01",
            "train.device=cpu", "train.progress=false", "train.tensorboard=false", *SETTINGS[pretext_name]]


def run_config(pretext_name: str, data: Path, out: Path) -> relpos.RunConfig:
    config = relpos.resolve_config(modality="eeg", pretext=pretext_name, overrides=settings(pretext_name))
    config.out, config.data = str(out), str(data)
    return config


def params_of(result) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in result.pretext.parameters()])


def gradient_free_mask(pretext) -> torch.Tensor:
    """Which entries of :func:`params_of` have a gradient of exactly 0 in exact arithmetic: the attention
    blocks' key biases (the middle third of qkv.bias), and for RP and TS, whose head reads differences of
    two windows' vectors, the encoder's final norm bias (added to both, it cancels); for CPC, which
    standardises every feature over the batch, that bias too (added to every window, the mean removes it)."""
    masks = []
    for name, parameter in pretext.named_parameters():
        mask = torch.zeros(parameter.numel(), dtype=torch.bool)
        if name.endswith("attn.qkv.bias"):
            third = parameter.numel() // 3
            mask[third:2 * third] = True
        if name == "encoder.norm.bias" and pretext.name in ("rp", "ts", "cpc"):
            mask[:] = True
        masks.append(mask)
    return torch.cat(masks)


def read_rows(folder: Path) -> dict[int, list]:
    """{rank: [the window indices of each step's batch]} as the wrapped ``forward`` wrote them."""
    return {int(p.stem[4:]): [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted(folder.glob("rank*.jsonl"))}


@dataclass
class Runs:
    single_dir: Path
    two_dir: Path
    single_params: torch.Tensor
    gradient_free: torch.Tensor
    outcomes: list[dict]
    single_rows: dict[int, list]
    two_rows: dict[int, list]


@pytest.fixture(scope="module")
def runs(five_minutes, tmp_path_factory):
    """``runs(name)``: the same run of pretext ``name`` on one process and on two (forked as torchrun
    starts them), each once per module, with the window indices every process's batches held."""
    done: dict[str, Runs] = {}

    def run(pretext_name: str) -> Runs:
        if pretext_name in done:
            return done[pretext_name]
        tmp = tmp_path_factory.mktemp(pretext_name)
        with pytest.MonkeyPatch.context() as patch:
            # Before any process forks, so every process writes its batches' rows.
            cls = relpos.get_pretext(pretext_name)
            original = cls.forward

            def forward(self, batch, generator):
                from relpos import distributed

                with open(Path(os.environ[ROWS_DIR]) / f"rank{distributed.rank()}.jsonl", "a") as fh:
                    fh.write(json.dumps(batch["window_index"].tolist()) + "\n")
                return original(self, batch, generator)

            patch.setattr(cls, "forward", forward)
            # test_distributed's processes train on tiny_windows(); None makes them read config.data
            patch.setattr(test_distributed, "tiny_windows", lambda: None)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # as each forked process does
            (tmp / "rows1").mkdir(), (tmp / "rows2").mkdir()
            patch.setenv(ROWS_DIR, str(tmp / "rows1"))
            try:
                single = relpos.train(run_config(pretext_name, five_minutes, tmp / "single"))
            finally:
                torch.set_num_threads(threads)
            patch.setenv(ROWS_DIR, str(tmp / "rows2"))
            outcomes = run_processes(run_config(pretext_name, five_minutes, tmp / "two"), 2, tmp)
        done[pretext_name] = Runs(tmp / "single", tmp / "two", params_of(single), gradient_free_mask(single.pretext),
                                  outcomes, read_rows(tmp / "rows1"), read_rows(tmp / "rows2"))
        return done[pretext_name]

    return run


# -- two processes against one --------------------------------------------------------------------------
@pytest.mark.parametrize("pretext_name", PRETEXTS)
def test_both_processes_train_to_the_same_weights(pretext_name, runs):
    run = runs(pretext_name)
    no_errors(run.outcomes)
    assert column(run.two_dir, "step") == [str(s) for s in range(1, STEPS + 1)]
    # DDP keeps the processes in step: exactly the same weights, and the same (averaged) final loss.
    assert torch.equal(run.outcomes[0]["params"], run.outcomes[1]["params"])
    assert run.outcomes[0]["loss"] == run.outcomes[1]["loss"] == pytest.approx(losses(run.two_dir)[-1])
    # Every process drew rows of K windows of one recording, 2 rows (its half of 4) per step.
    k = {"rp": 2, "ts": 3, "cpc": 3 + 1 + 2, "part": 3}[pretext_name]
    for rank in (0, 1):
        assert [np.shape(rows) for rows in run.two_rows[rank]] == [(2, k)] * STEPS


@pytest.mark.parametrize("pretext_name", [
    "rp", "ts", "cpc", "part",
])
def test_two_processes_draw_the_global_rows_of_one_process(pretext_name, runs):
    run = runs(pretext_name)
    no_errors(run.outcomes)
    one, two = run.single_rows[0], run.two_rows
    assert len(one) == len(two[0]) == len(two[1]) == STEPS
    # The global batch's 4 rows come from the shared index stream: rank 0 takes the first 2, rank 1 the
    # last 2, and together they are the one process's rows, step by step.
    assert [two[0][step] + two[1][step] for step in range(STEPS)] == one


@pytest.mark.parametrize("pretext_name", [
    "rp", "ts", "cpc",
])
def test_two_processes_give_the_losses_and_weights_of_one_process(pretext_name, runs):
    # rp, ts and cpc draw nothing from the process's own stream (no augmentation for EEG, no patch draws),
    # and CPC's one statistic over the batch (its standardisation) is taken over every process's rows,
    # so the same global batch gives the same path.
    run = runs(pretext_name)
    no_errors(run.outcomes)
    # Up to float reassociation (two halves' gradients summed by gloo against one mean over the batch),
    # which AdamW carries into every later step: seen 1.9e-5 relative at TS's step 6, 0 at step 1.
    # (CPC's standardisation is one formula for any process count: with the batch-norm kernel in one
    # process, which rounds differently, step 6 was 1.4e-4 apart; with each process's own statistics 0.5.)
    np.testing.assert_allclose(losses(run.two_dir), losses(run.single_dir), rtol=5e-5, atol=1e-6)
    # Except weights the loss cannot see: the attention's key bias (adding one vector to every key adds
    # the same number to all of a query's scores, which the softmax ignores) and, for |z1 - z2| heads, the
    # final norm's bias. Their gradient is exactly 0 in exact arithmetic and only rounding noise (~1e-10)
    # in floats; AdamW divides that noise by its own size into steps of ~train.lr, so those weights follow
    # the noise of each summation order (seen: up to 2.6e-3 apart, 0 effect on the loss).
    # The rest within 1 % of one AdamW step (train.lr = 0.01): seen 7.5e-5 on one of TS's 6,545 weights,
    # above tests/test_distributed.py's 5e-5 because TS's |z1 - z2| features are differences of nearly
    # equal vectors, which keep fewer significant digits of each rounding.
    keep = ~run.gradient_free
    torch.testing.assert_close(run.outcomes[0]["params"][keep], run.single_params[keep], rtol=1e-4, atol=1e-4)


# -- exact resume through a SIGKILL ----------------------------------------------------------------------
def train_argv(pretext_name: str, data: Path, out: Path) -> list[str]:
    argv = ["train", "--modality", "eeg", "--pretext", pretext_name, "--data", str(data), "--out", str(out)]
    for setting_ in settings(pretext_name):
        argv += ["--set", setting_]
    return argv


@pytest.mark.parametrize("pretext_name", PRETEXTS)
def test_a_run_killed_after_its_checkpoint_resumes_bit_for_bit(pretext_name, five_minutes, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(train_argv(pretext_name, five_minutes, whole)) == 0
    step, _ = kill_after_a_checkpoint(train_argv(pretext_name, five_minutes, cut), cut, min_step=CKPT_EVERY,
                                      before_step=STEPS)
    assert step % CKPT_EVERY == 0 and CKPT_EVERY <= step < STEPS
    assert main([*train_argv(pretext_name, five_minutes, cut), "--resume"]) == 0
    header_whole, rows_whole = read_metrics(whole)
    header_cut, rows_cut = read_metrics(cut)
    assert header_cut == header_whole
    assert [int(r["step"]) for r in rows_cut] == list(range(1, STEPS + 1))  # the rows after the checkpoint replaced
    for key in ("loss", "loss_baseline", "lr"):  # repr(float) strings: equal strings, equal floats
        assert [r[key] for r in rows_cut] == [r[key] for r in rows_whole], key
    final_whole, final_cut = load_checkpoint(whole), load_checkpoint(cut)
    assert final_whole["step"] == final_cut["step"] == STEPS
    for name, tensor in final_whole["model"].items():
        assert torch.equal(tensor, final_cut["model"][name]), name


def test_a_killed_two_process_rp_run_resumes_to_the_uninterrupted_losses(five_minutes, tmp_path, monkeypatch):
    rp = relpos.get_pretext("rp")
    original = rp.after_step

    def after_step(self, step):
        original(self, step)
        if step == int(os.environ.get(EXIT_AFTER_STEP, 0)):
            os._exit(0)  # no cleanup, no final checkpoint: as if the job were killed here

    monkeypatch.setattr(rp, "after_step", after_step)  # before the processes fork, so both have it
    monkeypatch.setattr(test_distributed, "tiny_windows", lambda: None)  # the processes read config.data
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    no_errors(run_processes(run_config("rp", five_minutes, whole), 2, tmp_path))
    # Both processes vanish in step 4, before its row and checkpoint: the last checkpoint is step 2, and
    # rank 0 logged step 3 (which the resumed run drops and replays).
    assert run_processes(run_config("rp", five_minutes, cut), 2, tmp_path, env={EXIT_AFTER_STEP: "4"}) == [{}, {}]
    assert load_checkpoint(cut)["step"] == 2
    assert len(losses(cut)) == 3
    no_errors(run_processes(relpos.resume_config(cut), 2, tmp_path, resume=True))
    assert column(cut, "step") == [str(s) for s in range(1, STEPS + 1)]
    assert losses(cut) == losses(whole)  # exactly, step by step
    assert column(cut, "loss_baseline") == column(whole, "loss_baseline")
    assert load_checkpoint(cut)["step"] == STEPS
