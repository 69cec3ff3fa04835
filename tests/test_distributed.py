"""Data-parallel training as torchrun runs it: 2 processes on CPU with gloo, tiny models, few steps.

Each test starts real processes (forked, with torchrun's environment variables), so what is tested
is what ``torchrun --nproc_per_node 2 -m relpos train`` does in each of its processes. The pretext
used for the numbers is deterministic (no random draws, no statistic over the batch), so a run on
two processes with the global batch split in halves must give the losses of one process with the
whole batch: DDP averages the halves' gradients, which is the gradient of the mean loss.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import relpos
import relpos.plugins
from relpos import distributed
from relpos.checkpoint import load_checkpoint
from relpos.errors import ConfigError

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or sys.platform == "win32",
    reason="needs torch.distributed with gloo and fork-started processes",
)

STEPS = 6
#: Long enough for a peer to start; short enough that a hang fails the test instead of the suite.
JOIN_TIMEOUT_S = 120


# -- a deterministic pretext: regress each grid patch's mean from its token --------------------------
#: Set in the processes of a run to make every one of them exit right after that step, as if the
#: job were killed there (an environment variable, not an option: the resumed run must not stop).
EXIT_AFTER_STEP = "RELPOS_TEST_EXIT_AFTER_STEP"


@dataclass
class GridMeanConfig:
    #: Rank that raises during this 1-based step (a crashing process); 0 never.
    crash_step: int = 0
    crash_rank: int = 1


class GridMean(relpos.Pretext):
    """Predicts the mean of every grid patch; no random draw and nothing computed across samples."""

    name = "test-grid-mean"
    Config = GridMeanConfig
    log_keys = ("loss_baseline",)

    def __init__(self, config, modality, encoder_config, data):
        super().__init__(config, modality, encoder_config, data)
        self.head = torch.nn.Linear(encoder_config.dim, 1)
        self.step = 0

    def forward(self, batch, generator):
        x = batch["x"]
        if self.config.crash_step == self.step + 1 and distributed.rank() == self.config.crash_rank:
            raise RuntimeError("the test pretext crashed on purpose")
        boxes = relpos.grid_boxes(self.extent, self.modality.patch_size(), device=x.device)
        boxes = relpos.Boxes(boxes.center.expand(len(x), -1, -1), boxes.size.expand(len(x), -1, -1))
        patches = relpos.extract_patches(x, boxes, self.modality.patch_shape())
        target = patches.flatten(2).mean(-1)  # (B, N)
        tokens = self.encoder(patches, None, generator)[:, 1:]  # after the CLS token
        prediction = self.head(tokens).squeeze(-1)
        loss = (prediction - target).pow(2).mean()
        return loss, {"loss_baseline": target.pow(2).mean().detach()}  # predicting 0 everywhere

    def after_step(self, step):
        self.step = step
        if step == int(os.environ.get(EXIT_AFTER_STEP, 0)):
            os._exit(0)  # no cleanup, no final checkpoint: as if the job were killed here


class GridMeanPlugin:
    @relpos.hookimpl
    def register_pretexts(self, register):
        register(GridMean)


@pytest.fixture(autouse=True, scope="module")
def grid_mean_registered():
    # Registered before the processes fork, so each of them sees it as the parent does.
    relpos.plugins.register_plugin(GridMeanPlugin(), "test-distributed")
    yield
    relpos.plugins.unregister_plugin("test-distributed")


def tiny_windows() -> relpos.Windows:
    x = torch.from_numpy(np.random.default_rng(7).normal(size=(12, 2, 32)).astype(np.float32))
    return relpos.Windows(x=x, groups=np.array([f"rec{i // 4}" for i in range(12)]))


def tiny_config(out: Path, batch_size: int = 4, **pretext) -> relpos.RunConfig:
    overrides = [
        "encoder.dim=16", "encoder.depth=1", "encoder.heads=2", "modality.patch_samples=8",
        f"train.batch_size={batch_size}", f"train.steps={STEPS}", "train.ckpt_every=3", "train.log_every=1",
        "train.warmup_steps=2", "train.lr=0.01", "train.device=cpu", "train.progress=false",
        "train.tensorboard=false", *(f"pretext.{k}={v}" for k, v in pretext.items()),
    ]
    config = relpos.resolve_config(modality="timeseries", pretext="test-grid-mean", overrides=overrides)
    config.out = str(out)
    return config


# -- running processes as torchrun would ---------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _process(rank: int, world: int, port: int, config: relpos.RunConfig, resume: bool, report: Path,
             env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    outcome: dict = {}
    try:
        result = relpos.train(config, resume=resume, data=tiny_windows())
        outcome["params"] = torch.cat([p.detach().flatten() for p in result.pretext.parameters()])
        outcome["loss"] = result.loss
    except BaseException as exc:  # noqa: BLE001 - the parent asserts on what each process met
        outcome["error"] = f"{type(exc).__name__}: {exc}"
        outcome["reported_elsewhere"] = bool(getattr(exc, "reported_elsewhere", False))
        outcome["traceback"] = traceback.format_exc()
    torch.save(outcome, report / f"rank{rank}.pt")


def run_processes(config: relpos.RunConfig, world: int, tmp_path: Path, resume: bool = False,
                  env: dict[str, str] | None = None) -> list[dict]:
    """Train ``config`` on ``world`` processes; what each met, in rank order ({} for one that exited)."""
    report = tmp_path / f"report-{os.urandom(4).hex()}"
    report.mkdir()
    context = multiprocessing.get_context("fork")
    port = free_port()
    processes = [context.Process(target=_process, args=(r, world, port, config, resume, report, env or {}))
                 for r in range(world)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(JOIN_TIMEOUT_S)
    hung = [r for r, p in enumerate(processes) if p.is_alive()]
    for process in processes:
        if process.is_alive():
            process.kill()
    assert not hung, f"processes {hung} were still waiting after {JOIN_TIMEOUT_S} s"
    outcomes = []
    for rank in range(world):
        path = report / f"rank{rank}.pt"
        outcomes.append(torch.load(path, weights_only=True) if path.exists() else {})
    return outcomes


def losses(run_dir: Path) -> list[float]:
    with open(Path(run_dir) / "metrics.csv", newline="") as fh:
        return [float(row["loss"]) for row in csv.DictReader(fh)]


def column(run_dir: Path, name: str) -> list[str]:
    with open(Path(run_dir) / "metrics.csv", newline="") as fh:
        return [row[name] for row in csv.DictReader(fh)]


def no_errors(outcomes: list[dict]) -> None:
    for rank, outcome in enumerate(outcomes):
        assert "error" not in outcome, f"rank {rank}: {outcome.get('traceback')}"


# -- the helpers in one process -------------------------------------------------------------------------
def test_collectives_are_the_identity_in_one_process():
    tensor = torch.arange(6.0).reshape(3, 2)
    assert distributed.all_gather(tensor) is tensor
    assert distributed.all_reduce_mean(tensor) is tensor
    assert distributed.all_reduce_sum(tensor) is tensor
    assert distributed.all_gather_objects({"a": 1}) == [{"a": 1}]
    assert (distributed.rank(), distributed.world_size(), distributed.is_main_process()) == (0, 1, True)
    assert distributed.run_in_turn(lambda: 5) == 5


def test_rank_seeds_differ_between_ranks_and_seeds():
    seeds = {distributed.rank_seed(seed, rank) for seed in range(3) for rank in range(3)}
    assert len(seeds) == 9  # seed + rank would give 5 distinct values here
    assert distributed.rank_seed(0, 1) == distributed.rank_seed(0, 1)


def _gather_process(rank: int, port: int, report: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        # rank 0 holds 1 row, rank 1 holds 2: unequal shares are gathered in rank order
        rows = torch.full((rank + 1, 3), float(rank + 1))
        gathered = distributed.all_gather(rows)
        mean = distributed.all_reduce_mean(torch.tensor([1.0, 10.0]) * (rank + 1))
        total = distributed.all_reduce_sum(torch.tensor([rank + 1]))
        objects = distributed.all_gather_objects(f"rank {rank}")
        centre = relpos.Centering(3, momentum=0.0)
        centre.update(torch.full((4, 3), float(rank)))  # batch means 0 and 1: the centre is their mean
        out = {"gathered": gathered, "mean": mean, "total": total, "objects": objects, "centre": centre.center}

        def build_cache():  # rank 0 is slow on purpose: rank 1 must still wait for it to finish
            with open(report / "turns.txt", "a") as fh:
                fh.write(f"start {rank}\n")
            time.sleep(0.3 if rank == 0 else 0.0)
            with open(report / "turns.txt", "a") as fh:
                fh.write(f"end {rank}\n")
            return rank

        out["turn"] = distributed.run_in_turn(build_cache, distributed.Launch(rank, 2, rank, 2))
        from relpos.memory import MemoryBank

        bank = MemoryBank(size=8, dim=3)
        bank.enqueue(torch.full((2, 3), float(rank + 1)))
        out["bank"] = bank.filled()
        # equal shares gathered without exchanging the counts: the same rows in the same order
        out["equal"] = distributed.all_gather(torch.full((2, 3), float(rank + 1)), equal_shares=True)
        equal_bank = MemoryBank(size=8, dim=3)
        equal_bank.enqueue(torch.full((2, 3), float(rank + 1)), equal_shares=True)
        out["equal_bank"] = equal_bank.filled()
        torch.save(out, report / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_gather_and_reduce_across_two_processes(tmp_path):
    context = multiprocessing.get_context("fork")
    port = free_port()
    processes = [context.Process(target=_gather_process, args=(r, port, tmp_path)) for r in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(JOIN_TIMEOUT_S)
        assert process.exitcode == 0
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        # [rank 0's row of 1s, rank 1's two rows of 2s], the same on both processes
        assert out["gathered"].tolist() == [[1.0] * 3, [2.0] * 3, [2.0] * 3]
        assert out["mean"].tolist() == [1.5, 15.0]  # ([1, 10] + [2, 20]) / 2
        assert out["total"].tolist() == [3]
        assert out["objects"] == ["rank 0", "rank 1"]
        assert out["centre"].tolist() == [[0.5] * 3]
        assert out["turn"] == rank
        # a memory bank filled by both processes holds both processes' rows, on each of them
        assert sorted(out["bank"][:, 0].tolist()) == [1.0, 1.0, 2.0, 2.0]
        assert out["equal"].tolist() == [[1.0] * 3, [1.0] * 3, [2.0] * 3, [2.0] * 3]  # rank order
        assert torch.equal(out["equal_bank"], out["bank"])
    # rank 0 builds first, the other starts only once it is done (a data cache is built once)
    assert (tmp_path / "turns.txt").read_text() == "start 0\nend 0\nstart 1\nend 1\n"


# -- training -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory, grid_mean_registered):
    out = tmp_path_factory.mktemp("single") / "run"
    result = relpos.train(tiny_config(out), data=tiny_windows())
    return out, torch.cat([p.detach().flatten() for p in result.pretext.parameters()])


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, grid_mean_registered):
    tmp = tmp_path_factory.mktemp("two")
    outcomes = run_processes(tiny_config(tmp / "run"), 2, tmp)
    return tmp / "run", outcomes


def test_two_processes_match_one_process_with_the_same_global_batch(single_process_run, two_process_run):
    single_dir, single_params = single_process_run
    run_dir, outcomes = two_process_run
    no_errors(outcomes)
    assert len(losses(run_dir)) == STEPS
    # The global batch (4 windows, drawn from the shared stream) is the same; DDP averages the two
    # halves' gradients, the gradient of the mean loss, so training follows the same path.
    np.testing.assert_allclose(losses(run_dir), losses(single_dir), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([float(v) for v in column(run_dir, "loss_baseline")],
                               [float(v) for v in column(single_dir, "loss_baseline")], rtol=1e-6)
    # Every process ends with exactly the same weights, and they are the single process's.
    assert torch.equal(outcomes[0]["params"], outcomes[1]["params"])
    # Summing two halves' gradients (gloo's all-reduce) and one mean over the whole batch round
    # differently: after the run's steps a few of 3,617 weights near zero differ by ~1e-5 on some
    # CPUs (seen: 1.16e-5 on one machine, 0 on another), so the bound is 5e-5, far below a step's size.
    torch.testing.assert_close(outcomes[0]["params"], single_params, rtol=1e-4, atol=5e-5)
    assert outcomes[0]["loss"] == outcomes[1]["loss"] == pytest.approx(losses(run_dir)[-1])


def test_the_checkpoint_holds_every_process_random_streams(two_process_run):
    run_dir, _ = two_process_run
    state = load_checkpoint(run_dir, resume=True)
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    # Each process draws its augmentations and patches from its own stream, seeded from (seed, rank).
    assert not torch.equal(state["rng_ranks"][0]["generator"], state["rng_ranks"][1]["generator"])
    assert torch.equal(state["rng"]["generator"], state["rng_ranks"][0]["generator"])
    # Only rank 0 wrote files: one metrics row per step, one checkpoint, no temporary files left.
    assert column(run_dir, "step") == [str(s) for s in range(1, STEPS + 1)]
    assert [p.name for p in (Path(run_dir) / "checkpoints").iterdir()] == ["last.pt"]
    assert not list(Path(run_dir).rglob(".*tmp*"))


def test_killed_two_process_run_resumes_to_the_uninterrupted_losses(two_process_run, tmp_path):
    uninterrupted, _ = two_process_run
    out = tmp_path / "run"
    # Both processes vanish after step 5: the last checkpoint is step 3, and rank 0 logged step 4
    # (which the resumed run drops and replays).
    outcomes = run_processes(tiny_config(out), 2, tmp_path, env={EXIT_AFTER_STEP: "5"})
    assert outcomes == [{}, {}]
    assert load_checkpoint(out)["step"] == 3
    assert len(losses(out)) == 4
    outcomes = run_processes(relpos.resume_config(out), 2, tmp_path, resume=True)
    no_errors(outcomes)
    assert column(out, "step") == [str(s) for s in range(1, STEPS + 1)]
    assert losses(out) == losses(uninterrupted)  # exactly, step by step
    assert load_checkpoint(out)["step"] == STEPS


def test_resume_on_another_number_of_processes_is_refused(two_process_run):
    run_dir, _ = two_process_run
    config = relpos.resume_config(run_dir, overrides=[f"train.steps={STEPS + 2}"])
    with pytest.raises(ConfigError) as info:
        relpos.train(config, resume=True, data=tiny_windows())
    assert str(info.value) == (
        f"Cannot resume the run in {str(run_dir)!r} on 1 process: it was trained on 2, and only the same number "
        f"continues it exactly (the checkpoint holds each process's random streams); resume it on 2 processes "
        f"(torchrun), or start a new run with --out DIR."
    )
    assert load_checkpoint(run_dir)["step"] == STEPS  # untouched


def test_crashing_process_stops_the_other_with_its_name(tmp_path):
    outcomes = run_processes(tiny_config(tmp_path / "run", crash_step=2, crash_rank=1), 2, tmp_path)
    assert "the test pretext crashed on purpose" in outcomes[1]["error"]
    # Rank 0 does not wait forever: it stops and says which process failed and why.
    assert outcomes[0]["error"] == (
        "TrainingError: Training stopped at step 2 because process 1 of 2 failed (the test pretext crashed on "
        "purpose), and no checkpoint had been written, so nothing of this run was kept."
    )
    assert not outcomes[0]["reported_elsewhere"]


def test_global_batch_that_does_not_split_is_refused_before_data_is_read(tmp_path):
    outcomes = run_processes(tiny_config(tmp_path / "run", batch_size=3), 2, tmp_path)
    for outcome in outcomes:
        assert outcome["error"] == (
            "ConfigError: 'train.batch_size' is 3, the global batch of all 2 processes, which must split "
            "evenly between them; use a multiple of 2."
        )
    assert not (tmp_path / "run").exists()


def test_more_processes_than_windows_is_refused_once(tmp_path, monkeypatch):
    config = tiny_config(tmp_path / "run", batch_size=4)
    few = relpos.Windows(x=torch.zeros(3, 2, 32))
    monkeypatch.setattr(sys.modules[__name__], "tiny_windows", lambda: few)
    outcomes = run_processes(config, 4, tmp_path)
    expected = ("DataError: The data holds 3 windows but the run has 4 processes, each of which needs windows "
                "of its own; start at most 3 processes or give more data.")
    assert [o["error"] for o in outcomes] == [expected] * 4
    # Every process met the same error: one of them says it, the others stay quiet.
    assert [o["reported_elsewhere"] for o in outcomes] == [False, True, True, True]
    assert not (tmp_path / "run").exists()


def test_cuda_with_fewer_gpus_than_processes_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    launch = distributed.Launch(rank=0, world_size=2, local_rank=0, local_world_size=2)
    with pytest.raises(ConfigError, match=r"^This machine runs 2 processes of the run on --device cuda but has "
                                          r"1 GPU; start at most 1 per machine \(torchrun --nproc_per_node 1\) "
                                          r"or train on --device cpu\.$"):
        distributed.device_for("cuda", launch)
    with pytest.raises(ConfigError, match=r"'cuda:0', one GPU for all 2 processes"):
        distributed.device_for("cuda:0", launch)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.device_for("cuda", distributed.Launch(1, 2, 1, 2)) == torch.device("cuda", 1)


# -- the command line, as torchrun runs it -----------------------------------------------------------
def _cli_process(rank: int, world: int, port: int, argv: list[str], report: Path) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with open(report / f"stderr{rank}.txt", "w") as err, open(report / f"stdout{rank}.txt", "w") as out:
        os.dup2(err.fileno(), 2)
        os.dup2(out.fileno(), 1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        from relpos.cli import main

        code = main(argv)
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def run_cli_processes(argv: list[str], world: int, tmp_path: Path) -> list[tuple[int, str, str]]:
    """``relpos ARGV`` in ``world`` processes; (exit status, stdout, stderr) of each."""
    context = multiprocessing.get_context("fork")
    port = free_port()
    processes = [context.Process(target=_cli_process, args=(r, world, port, argv, tmp_path)) for r in range(world)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(JOIN_TIMEOUT_S)
    assert not any(p.is_alive() for p in processes), "a process was still waiting"
    return [(p.exitcode, (tmp_path / f"stdout{r}.txt").read_text(), (tmp_path / f"stderr{r}.txt").read_text())
            for r, p in enumerate(processes)]


def test_bad_input_is_said_once_by_the_cli_with_status_2(tmp_path):
    out = tmp_path / "run"
    results = run_cli_processes(["train", "--modality", "eeg", "--pretext", "part", "--set", "train.batch_size=5",
                                 "--device", "cpu", "--out", str(out), "--no-progress"], 2, tmp_path)
    assert [code for code, _, _ in results] == [2, 2]
    assert results[0][2] == (
        "relpos: error: 'train.batch_size' is 5, the global batch of all 2 processes, which must split evenly "
        "between them; use a multiple of 2.\n"
    )
    assert results[1][2] == ""  # the same error, said once
    assert not out.exists()


def test_resume_refusal_is_said_once(two_process_run, tmp_path):
    run_dir, _ = two_process_run
    # three processes for a run of two: refused before the data is read, by the first process only
    results = run_cli_processes(["train", "--resume", "--out", str(run_dir), "--steps", str(STEPS + 3),
                                 "--set", "train.batch_size=6"], 3, tmp_path)
    assert [code for code, _, _ in results] == [2, 2, 2]
    assert results[0][2].startswith(f"relpos: error: Cannot resume the run in {str(run_dir)!r} with other settings")
    assert results[1][2] == results[2][2] == ""
    results = run_cli_processes(["train", "--resume", "--out", str(run_dir), "--steps", str(STEPS + 3)], 4, tmp_path)
    assert results[0][2] == (
        f"relpos: error: Cannot resume the run in {str(run_dir)!r} on 4 processes: it was trained on 2, and only "
        f"the same number continues it exactly (the checkpoint holds each process's random streams); resume it "
        f"on 2 processes (torchrun), or start a new run with --out DIR.\n"
    )
    assert [code for code, _, _ in results] == [2] * 4


def test_torchrun_trains_with_python_m_relpos(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip(f"torchrun is not installed beside {sys.executable}")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "relpos", "train",
         "--modality", "eeg", "--pretext", "part", "--set", "encoder.dim=16", "--set", "encoder.depth=1",
         "--set", "encoder.heads=2", "--set", "pretext.n_pairs=8", "--set", "train.batch_size=4",
         "--set", "train.log_every=1", "--set", "train.tensorboard=false", "--steps", "2", "--no-progress",
         "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    layout = [line for line in proc.stderr.splitlines() if line.startswith("relpos: training on")]
    assert layout == [
        "relpos: training on 2 processes (gloo, cpu): global batch 4 = 2 windows per process per step; "
        "train.lr 0.0005 as configured (not rescaled for the number of processes)."
    ]
    assert proc.stdout.count("relpos: trained 2 steps") == 1  # rank 0 alone reports
    assert column(out, "step") == ["1", "2"]
    assert load_checkpoint(out, resume=True)["world_size"] == 2


def test_errors_before_the_group_exists_are_said_by_each_machines_first_process(monkeypatch):
    error = KeyboardInterrupt()
    for local_rank, says in ((0, True), (1, False)):
        monkeypatch.setenv("WORLD_SIZE", "4")
        monkeypatch.setenv("RANK", str(2 + local_rank))  # the second machine's two processes
        monkeypatch.setenv("LOCAL_RANK", str(local_rank))
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert distributed.should_report(error) is says
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert distributed.should_report(error)  # a single process says everything
    marked = ConfigError("x")
    marked.reported_elsewhere = True
    assert not distributed.should_report(marked)


def test_a_checkpoint_missing_a_process_random_state_is_refused_in_one_sentence(two_process_run, tmp_path):
    run_dir, _ = two_process_run
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    state["rng_ranks"] = state["rng_ranks"][:1]  # the streams of process 1 are gone
    damaged = tmp_path / "last.pt"
    torch.save(state, damaged)
    with pytest.raises(relpos.errors.RelposError) as info:
        load_checkpoint(damaged, resume=True)
    assert str(info.value) == (
        f"Checkpoint {str(damaged)!r} is not a relpos checkpoint: its 'rng_ranks' entry holds 1 random state "
        f"but the run had 2 processes, one state each."
    )
    load_checkpoint(damaged)  # the weights are still readable (relpos eval, load_encoder)
