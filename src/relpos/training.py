"""The training loop: one loop for every pretext.

AdamW with decoupled weight decay (not on biases, norms and tokens), linear warm-up then cosine
decay (precomputed per step), gradient clipping, a stop with a message on a non-finite loss, CSV +
TensorBoard logs, atomic checkpoints every ``train.ckpt_every`` steps and exact resume: the model,
optimiser, step and every random stream are restored, so a resumed CPU run reproduces the losses of
an uninterrupted one bit for bit.

A run that fails or is interrupted before its first checkpoint removes what it created (nothing
could be resumed from it); a resumed run never removes anything. Resuming with settings that differ
from the checkpoint's is refused, naming each one (only ``train.steps``, ``train.device`` and
``train.progress`` may change).

Under ``torchrun`` the same loop runs data-parallel (:mod:`relpos.distributed`, DDP): every process
trains on its share of the global batch ``train.batch_size``, rank 0 alone writes the run's files,
and every process's random streams are checkpointed, so a resumed run on the same number of
processes reproduces the uninterrupted one exactly.

Reading order: :func:`train`, then :func:`_train` (the run in named pieces: what it continues,
setup and restore, the steps, what a failure becomes), :func:`_train_steps` (the loop proper, on
one screen) and :class:`_Run` (what the steps share: batches, logs, checkpoints, cleanup).
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from . import __version__, distributed
from .checkpoint import (
    atomic_torch_save,
    atomic_write_text,
    checkpoint_config,
    checkpoint_path,
    checkpoint_world_size,
    load_checkpoint,
    remove_stale_temporaries,
    rng_state,
    set_rng_state,
    unsafe_objects,
)
from .config import RunConfig, TrainConfig, load_yaml, parse_override, resolve_config
from .errors import ConfigError, DataError, PluginError, RelposError, TrainingError, warn
from .modality import Modality, Windows, open_data
from .neighbours import RecordingIndex, check_rows, index_for_request
from .optim import lr_schedule, param_groups
from .paths import refuse_special_file
from .compose import get_pretext
from .plugins import get_modality
from .monitors import Monitors
from .pretext import Pretext, check_forward_output, check_recording_time, construct_pretext
from .space import CONTRACT_KEY, check_channel_token_pretext
from .transfer import to_device
from .step_options import StepForward, adamw
from .trivial_baseline import BASELINE_KEY, BaselineWatch

METRIC_FIELDS = ["step", "loss", "lr", "samples_per_s"]
_T = TypeVar("_T")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train`; says which checkpoint, if any, was kept.

    Attributes
    ----------
    checkpoint : Path or None
        The run's last checkpoint, or None when the run was interrupted before its first one (and
        what it had created was removed).
    step : int or None
        The step of that checkpoint.
    """

    def __init__(self, checkpoint: Path | None, step: int | None):
        super().__init__()
        self.checkpoint = checkpoint
        self.step = step


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path
    step: int
    loss: float
    pretext: Pretext
    config: RunConfig
    #: Where the run ended relative to its pretext's trivial baseline (None: the pretext reports none).
    baseline_summary: str | None = None



def build_modality(config: RunConfig) -> Modality:
    return get_modality(config.modality)(config.modality_config)


def build_pretext(config: RunConfig, modality: Modality, windows: Windows) -> Pretext:
    """The run's pretext, seeded, around the encoder built for ``windows`` (see ``construct_pretext``)."""
    pretext_cls = get_pretext(config.pretext)
    check_recording_time(pretext_cls, windows)  # before the encoder is built
    check_channel_token_pretext(pretext_cls, windows)
    torch.manual_seed(config.train.seed)
    return construct_pretext(pretext_cls, config.pretext_config, modality, config.encoder, windows)


class _MetricsLog:
    """metrics.csv (append-only, flushed each row) plus optional TensorBoard."""

    def __init__(self, run_dir: Path, fields: list[str], start_step: int, tensorboard: bool):
        self.path = run_dir / "metrics.csv"
        self.fields = fields
        if start_step > 0 and self.path.exists():
            # Drop rows a killed run logged after its last checkpoint; they are replayed exactly.
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= start_step]
            with open(self.path, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
        elif not self.path.exists() or start_step == 0:
            with open(self.path, "w", newline="") as fh:
                csv.DictWriter(fh, fieldnames=fields).writeheader()
        self.fh = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=fields, extrasaction="ignore")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)
            except ImportError:
                print("relpos: tensorboard is not installed; logging to metrics.csv only.", file=sys.stderr)

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow(row)
        self.fh.flush()
        if self.tb is not None:
            for key, value in row.items():
                if key != "step":
                    self.tb.add_scalar(f"train/{key}", value, row["step"])

    def close(self) -> None:
        self.fh.close()
        if self.tb is not None:
            self.tb.close()


#: Settings a resumed run may change; every other one must match the checkpoint's.
RESUMABLE_SETTINGS = ("out", "train.steps", "train.device", "train.progress")


def _same_data(saved: Any, requested: Any) -> bool:
    if saved == requested:
        return True
    if saved is None or requested is None:
        return False
    try:
        if os.path.exists(saved) and os.path.exists(requested):
            return os.path.samefile(saved, requested)
    except (OSError, TypeError, ValueError):
        return False
    return os.path.abspath(os.path.expanduser(saved)) == os.path.abspath(os.path.expanduser(requested))


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def changed_settings(saved: RunConfig, requested: RunConfig) -> list[tuple[str, Any, Any]]:
    """Settings of ``requested`` that differ from the run's ``saved`` ones, as (key, saved, requested).

    :data:`RESUMABLE_SETTINGS` are not compared. When a modality or pretext differs by name only
    the name is reported, since the options of two different modalities cannot be compared.
    """
    old, new = saved.to_dict(), requested.to_dict()
    changes = []
    if not _same_data(old["data"], new["data"]):
        changes.append(("data", old["data"], new["data"]))
    for section in ("modality", "pretext", "encoder", "train"):
        before, after = old[section], new[section]
        if "name" in before and before["name"] != after.get("name"):
            changes.append((f"{section}.name", before["name"], after.get("name")))
            continue
        for key in sorted(set(before) | set(after)):
            name = f"{section}.{key}"
            if name not in RESUMABLE_SETTINGS and before.get(key) != after.get(key):
                changes.append((name, before.get(key), after.get(key)))
    return changes


def _refuse_changed_settings(saved: RunConfig, requested: RunConfig, run_dir: Path) -> None:
    changes = changed_settings(saved, requested)
    if changes:
        def show(key: str, value: Any) -> str:
            return "unset (the modality's bundled sample)" if key == "data" and value is None else _show(value)

        listed = "; ".join(
            f"{key} is {show(key, a)} in the run but {show(key, b)} was asked for" for key, a, b in changes
        )
        raise ConfigError(
            f"Cannot resume the run in {str(run_dir)!r} with other settings ({listed}); only --steps, "
            f"--device and --no-progress may change on --resume, so drop the others or start a new "
            f"run with --out DIR."
        )


def resume_config(
    run_dir: str | Path,
    config_file: str | Path | Mapping[str, Any] | None = None,
    modality: str | None = None,
    pretext: str | None = None,
    overrides: Iterable[str] = (),
) -> RunConfig:
    """The configuration of the run in ``run_dir`` with the given settings applied on top.

    The arguments are those of :func:`relpos.config.resolve_config`, but what they leave unset
    comes from the run's checkpoint instead of the defaults; pass the result to
    ``train(config, resume=True)``, which refuses settings that differ from the run's (so a
    command line that names only ``--steps`` resumes the run as it was).
    """
    run_dir = Path(run_dir)
    ckpt_file = _resume_checkpoint(run_dir)
    state = load_checkpoint(ckpt_file, mmap=True)  # only the config is read; tensors stay on disk
    raw = checkpoint_config(state, ckpt_file).to_dict()
    del state
    if config_file is None:
        given: dict[str, Any] = {}
    elif isinstance(config_file, Mapping):
        given = copy.deepcopy(dict(config_file))
    else:
        given = load_yaml(config_file)
    # The name asked for, with the precedence of resolve_config: file < argument < --set.
    for section, argument in (("modality", modality), ("pretext", pretext)):
        value = given.get(section)
        name = value if isinstance(value, str) else value.get("name") if isinstance(value, dict) else None
        name = argument if argument is not None else name
        for text in overrides:
            path, parsed = parse_override(text)
            if path in ([section], [section, "name"]):
                name = parsed
        if name is not None and str(name) != raw[section]["name"]:
            raw[section] = {"name": name}  # the run's options belong to its own modality/pretext
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        elif not (key in ("modality", "pretext") and isinstance(value, str)):
            raw[key] = value
    config = resolve_config(raw, None, None, overrides)
    config.out = str(run_dir)
    return config


def _resume_checkpoint(run_dir: Path) -> Path:
    """The checkpoint ``--resume`` continues from, or one sentence saying what ``run_dir`` is instead."""
    from .checkpoint import find_checkpoint

    try:
        ckpt_file = find_checkpoint(run_dir, hint="start the run without --resume")
    except RelposError as exc:
        text = str(exc)
        raise RelposError(f"Cannot resume: {text[:1].lower()}{text[1:]}") from None
    if ckpt_file == run_dir:
        raise RelposError(f"Cannot resume: {str(run_dir)!r} is a file, not a run directory; pass the run's folder as --out.")
    return ckpt_file


#: Where ``--resume`` keeps a ``config.yaml`` whose settings were edited since the checkpoint.
EDITED_CONFIG = "config.yaml.edited"


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: list(value) if isinstance(value, tuple) else value}


def edited_settings(run_dir: Path, saved: RunConfig) -> list[tuple[str, Any, Any]] | None:
    """Settings of ``RUN/config.yaml`` that differ from the checkpoint's, as (key, checkpoint, file).

    ``--resume`` trains with the checkpoint's configuration (the README's rule); a file edited
    since would be overwritten without a word. :data:`RESUMABLE_SETTINGS` are not compared (they
    may change on resume anyway). None when there is no readable file; a file that is not a
    YAML mapping differs as a whole, as ``[("config.yaml", None, None)]``.
    """
    import yaml

    path = run_dir / "config.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None if not path.exists() else [("config.yaml", None, None)]
    try:
        edited = yaml.safe_load(text)
    except yaml.YAMLError:
        edited = None
    if not isinstance(edited, Mapping):
        return [("config.yaml", None, None)]
    old, new = _flat(saved.to_dict()), _flat(edited)
    return [
        (key, old.get(key), new.get(key)) for key in sorted(set(old) | set(new))
        if key not in RESUMABLE_SETTINGS and old.get(key) != new.get(key)
    ]


def keep_edited_config(run_dir: Path, saved: RunConfig) -> None:
    """Warn about each setting of ``config.yaml`` edited since the checkpoint, and keep the edited
    file as ``config.yaml.edited`` before the run rewrites ``config.yaml`` from the checkpoint."""
    changes = edited_settings(run_dir, saved)
    if not changes:
        return
    source = run_dir / "config.yaml"
    try:
        shutil.copyfile(source, run_dir / EDITED_CONFIG)
        kept = f"the edited file is kept as {str(run_dir / EDITED_CONFIG)!r}"
    except OSError as exc:
        kept = f"the edited file could not be kept ({exc.strerror or exc}) and is overwritten"
    if changes[0][0] == "config.yaml":
        what = "is not a YAML mapping of settings"
    else:
        what = "was edited since the checkpoint (" + "; ".join(
            f"{key}: {_show(a)} in the checkpoint, {_show(b)} in the file" for key, a, b in changes
        ) + ")"
    warn(
        f"{str(source)!r} {what}; --resume continues with the checkpoint's settings and rewrites "
        f"config.yaml from them, and {kept} (a changed setting is given on the command line, where "
        f"--resume says whether it may change)."
    )


class _NewRunFiles:
    """What a new run adds to its run directory, so that it can be removed again if the run dies
    before its first checkpoint. Files that were there before the run are never removed."""

    ENTRIES = ("config.yaml", "metrics.csv", "tensorboard", "checkpoints")

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        created = None  # the outermost folder mkdir(parents=True) is about to create
        folder = run_dir
        while not folder.exists() and folder != folder.parent:
            created, folder = folder, folder.parent
        self.created_folder = created
        self.existing = {name for name in self.ENTRIES if (run_dir / name).exists()}
        tensorboard = run_dir / "tensorboard"
        self.tensorboard_files = set(tensorboard.iterdir()) if tensorboard.is_dir() else set()

    def remove(self) -> None:
        if self.created_folder is not None:
            shutil.rmtree(self.created_folder, ignore_errors=True)
            return
        for name in self.ENTRIES:
            path = self.run_dir / name
            if name in self.existing:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink(missing_ok=True)
        tensorboard = self.run_dir / "tensorboard"
        if "tensorboard" in self.existing and tensorboard.is_dir():
            for path in set(tensorboard.iterdir()) - self.tensorboard_files:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


_TENSORBOARD_EVENTS = re.compile(r"events\.out\.tfevents\..+")


def _remove_leftovers(run_dir: Path, ckpt_file: Path, fresh: bool) -> None:
    """Remove what killed processes left: temporary files of their atomic writes and, before a
    fresh start (no checkpoint, so no run to continue), the TensorBoard events of runs that never
    reached a checkpoint (they would be drawn as a second curve beside this run's)."""
    remove_stale_temporaries(ckpt_file)
    for name in ("config.yaml", "metrics.csv"):
        remove_stale_temporaries(run_dir / name)
    tensorboard = run_dir / "tensorboard"
    if fresh and tensorboard.is_dir():
        for path in tensorboard.iterdir():
            if path.is_file() and _TENSORBOARD_EVENTS.fullmatch(path.name):
                path.unlink(missing_ok=True)


def _out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    # The CPU allocator reports a failed allocation as a plain RuntimeError.
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def _restore(state: dict[str, Any], pretext: Pretext, optimizer: torch.optim.Optimizer,
             generator: torch.Generator, index_generator: torch.Generator, process_rank: int,
             ckpt_file: Path) -> None:
    try:
        pretext.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise RelposError(
            f"Checkpoint {str(ckpt_file)!r} holds weights that do not fit the model its configuration "
            f"builds ({_one_line(exc)})."
        ) from None
    try:
        optimizer.load_state_dict(state["optimizer"])
        if checkpoint_world_size(state) > 1:  # this process's own streams, and the shared index draw
            set_rng_state(state["rng_ranks"][process_rank], generator)
            index_generator.set_state(state["index_generator"])
        else:
            set_rng_state(state["rng"], generator)
            if index_generator is not generator:  # one process with a stream of its own for the windows
                index_generator.set_state(state["index_generator"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, OverflowError) as exc:
        raise RelposError(
            f"Checkpoint {str(ckpt_file)!r} holds an optimizer or random state that cannot be restored "
            f"({_one_line(exc)})."
        ) from None


def _restore_baseline_watch(state: dict[str, Any], watch: BaselineWatch, ckpt_file: Path) -> None:
    """Continue the stuck-at-baseline watch where the checkpoint left it (checkpoints written
    before the watch was saved have none: it then starts afresh at the resumed step)."""
    if state.get("baseline_watch") is None:
        return
    try:
        watch.load_state_dict(state["baseline_watch"])
    except ValueError as exc:
        raise RelposError(
            f"Checkpoint {str(ckpt_file)!r} holds a 'baseline_watch' entry that cannot be restored ({exc})."
        ) from None


def _kept_checkpoint(ckpt_file: Path, last_saved: int | None) -> tuple[Path | None, int | None]:
    if not ckpt_file.exists():
        return None, None
    try:
        return ckpt_file, int(load_checkpoint(ckpt_file, mmap=True)["step"])
    except RelposError:
        return ckpt_file, last_saved


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line, cut at 300 characters, to quote inside a sentence."""
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(exc).__name__


def _check_layout(cfg: TrainConfig, launch: distributed.Launch) -> None:
    """Refuse a global batch that does not split evenly over the processes (before data is read)."""
    if launch.world_size > 1 and cfg.batch_size % launch.world_size:
        raise ConfigError(
            f"'train.batch_size' is {cfg.batch_size}, the global batch of all {launch.world_size} processes, "
            f"which must split evenly between them; use a multiple of {launch.world_size}."
        )


def _check_enough_windows(n_windows: int, launch: distributed.Launch) -> None:
    if n_windows < launch.world_size:
        raise DataError(
            f"The data holds {n_windows} window{'s' if n_windows != 1 else ''} but the run has "
            f"{launch.world_size} processes, each of which needs windows of its own; start at most "
            f"{n_windows} processes or give more data."
        )


def _refuse_other_world_size(state: dict[str, Any], launch: distributed.Launch, run_dir: Path) -> None:
    trained_with = checkpoint_world_size(state)
    if trained_with == launch.world_size:
        return
    how = "without torchrun (one process)" if trained_with == 1 else f"on {trained_with} processes (torchrun)"
    raise ConfigError(
        f"Cannot resume the run in {str(run_dir)!r} on {launch.world_size} "
        f"process{'es' if launch.world_size != 1 else ''}: it was trained on {trained_with}, and only the "
        f"same number continues it exactly (the checkpoint holds each process's random streams); resume "
        f"it {how}, or start a new run with --out DIR."
    )


class _PendingValues:
    """The loss and logged values of the steps since the last flush, kept where they were computed.

    Each step's tensors (the loss first, then the logged tensors in the order they were logged) are
    stacked into one small float64 vector on the device; logged Python numbers stay on the host. A
    flush brings every buffered vector to the host in one transfer (so a GPU never waits for the host
    inside a step) and, in a distributed run, averages them over the processes in one all-reduce.
    """

    def __init__(self) -> None:
        self.steps: list[tuple[int, tuple[str, ...], torch.Tensor, dict[str, Any]]] = []

    def __bool__(self) -> bool:
        return bool(self.steps)

    def add(self, step: int, loss: torch.Tensor, logs: Mapping[str, Any]) -> None:
        """Buffer ``step``'s loss and logs without reading them."""
        on_device = tuple(key for key, value in logs.items()
                          if isinstance(value, torch.Tensor) and value.device == loss.device)
        on_host = {key: value for key, value in logs.items() if key not in on_device}
        values = torch.stack([loss.detach().reshape(()).double()]
                             + [logs[key].detach().reshape(()).double() for key in on_device])
        self.steps.append((step, on_device, values, on_host))

    def flush(self, reduce: bool) -> list[tuple[int, float, dict[str, float]]]:
        """``(step, loss, logs)`` of every buffered step, in order, as Python floats; the buffer empties.

        ``reduce``: average every value over the processes of a distributed run (a collective call).
        """
        steps, self.steps = self.steps, []
        if not steps:
            return []
        device_values = torch.cat([values for _, _, values, _ in steps]).tolist()  # the one transfer
        rows, start = [], 0
        for step, on_device, values, on_host in steps:
            loss, *logged = device_values[start:start + len(values)]
            start += len(values)
            logs = dict(zip(on_device, logged))
            logs.update((key, float(value)) for key, value in on_host.items())
            rows.append((step, loss, logs))
        if reduce:  # every process buffered the same steps and keys: one all-reduce of them all
            flat = torch.tensor([value for _, loss, logs in rows for value in (loss, *logs.values())],
                                dtype=torch.float64, device=steps[0][2].device)
            averaged, start = distributed.all_reduce_mean(flat).tolist(), 0
            for i, (step, _, logs) in enumerate(rows):
                values = averaged[start:start + 1 + len(logs)]
                start += 1 + len(logs)
                rows[i] = (step, values[0], dict(zip(logs, values[1:])))
        return rows

    def first_not_finite(self) -> tuple[int, float] | None:
        """``(step, loss)`` of the first buffered step whose own loss is not finite, read without any
        collective call (a failing process still says why it failed)."""
        for step, _, values, _ in self.steps:
            loss = float(values[0])
            if not math.isfinite(loss):
                return step, loss
        return None


def train(
    config: RunConfig,
    resume: bool = False,
    data: Any = None,
) -> TrainResult:
    """Pretrain an encoder.

    Parameters
    ----------
    config : RunConfig
        The resolved configuration (see :func:`relpos.config.resolve_config`).
    resume : bool
        Continue the run in ``config.run_dir()`` from its last checkpoint. ``config`` must match
        the checkpoint's configuration except ``train.steps``, ``train.device`` and
        ``train.progress`` (:func:`resume_config` builds such a config from the run itself);
        anything else that differs is refused with a :class:`~relpos.errors.ConfigError` naming
        each setting.
    data : optional
        In-memory data for the modality (instead of ``config.data``).

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingError
        The loss became non-finite, or memory ran out. If that happens before the first
        checkpoint of a new run, what the run created is removed.
    TrainingInterrupted
        Ctrl-C; likewise, a new run interrupted before its first checkpoint leaves nothing behind.

    Notes
    -----
    Started by ``torchrun`` (``WORLD_SIZE`` > 1), every process calls this with the same
    arguments: ``train.batch_size`` is the global batch, split evenly; rank 0 writes the run's
    files; the returned loss is the mean over the processes. A resumed run must have as many
    processes as the one that wrote the checkpoint (a :class:`~relpos.errors.ConfigError`
    otherwise). See :mod:`relpos.distributed`.
    """
    try:
        result = _train(config, resume, data)
        # Every process leaves the group together: rank 0 still measures the monitors and draws the
        # loss after the last collective, and a process that destroyed its side of a gloo group
        # meanwhile could abort at exit ("terminate called without an active exception", 1 run in
        # about 15 of tests/test_distributed.py's torchrun test before this barrier).
        try:
            distributed.barrier()
        except Exception:  # noqa: BLE001 - a peer gone after the last save: this process's run is complete
            pass
        return result
    finally:
        # (A group the caller created itself is left to the caller; after a failure no process waits.)
        distributed.leave()


def _train(config: RunConfig, resume: bool, data: Any) -> TrainResult:
    """:func:`train` itself; :func:`train` leaves the process group whatever happens.

    The run in named pieces: what it continues (:func:`_checkpoint_to_continue`), its setup and
    restore (:func:`_setup`), its steps (:func:`_train_steps`) and saves (:meth:`_Run.save`), and
    what a failure becomes (:meth:`_Run.explain_failure`).
    """
    run_dir = config.run_dir()
    launch = distributed.launch_from_env()  # one process unless torchrun started several
    config, state, ckpt_file = _checkpoint_to_continue(config, run_dir, resume, launch)
    run = _setup(config, data, launch, state, ckpt_file)
    del state  # restored into the model and optimiser; its tensors need not stay in memory
    run.create_run_dir()
    try:
        run.open_outputs()
        _train_steps(run)
    except KeyboardInterrupt:
        # Ctrl-C may land inside save(), after the rename but before last_saved is updated, so the
        # file on disk says which checkpoint was kept.
        raise TrainingInterrupted(*_kept_checkpoint(ckpt_file, run.last_saved)) from None
    except BaseException as exc:
        explained = run.explain_failure(exc)
        if explained is None:
            raise
        raise explained from None
    finally:
        run.close()
    return run.finish()


def _train_steps(run: _Run) -> None:
    """The loop proper: one optimiser step per iteration, from the step after the run's checkpoint
    (or the first) to ``train.steps``."""
    cfg, pretext, optimizer = run.cfg, run.pretext, run.optimizer
    pretext.train()
    forward = StepForward(run.model, cfg.compile, say=run.main_process)  # train.compile (relpos.step_options)
    for step in range(run.start + 1, cfg.steps + 1):
        run.step = step
        # Every schedule is a function of (steps taken, total), so resume stays exact.
        for group in optimizer.param_groups:
            group["lr"] = float(run.lrs[step - 1])
        pretext.set_progress(step - 1, cfg.steps)
        decay = pretext.weight_decay_at(step - 1, cfg.steps)
        if decay is not None:
            optimizer.param_groups[0]["weight_decay"] = float(decay)  # param_groups: decayed first
        batch = run.next_batch()
        # once: what forward returns is of the same kinds at every step
        check = (lambda output: check_forward_output(pretext, output)) if step == run.start + 1 else None
        # forward, zero_grad and backward; a compiled step that fails in either is redone in eager mode
        loss, logs = forward.forward_backward(batch, run.generator, run.autocast, check,
                                              lambda: optimizer.zero_grad(set_to_none=True))
        run.pending.add(step, loss, logs)  # kept on the device: no host read inside the step
        if run.flushes_at(step):  # before the update, so a non-finite loss here never reaches the weights
            run.flush()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(pretext.parameters(), cfg.grad_clip)
        optimizer.step()
        pretext.after_step(step)
        run.report(step)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            run.save(step)


def _checkpoint_to_continue(
    config: RunConfig, run_dir: Path, resume: bool, launch: distributed.Launch
) -> tuple[RunConfig, dict[str, Any] | None, Path]:
    """What the run continues, as ``(config, checkpoint, checkpoint file)``.

    A new run keeps ``config`` and has no checkpoint; it is refused in a directory that already
    holds one. A resumed run takes the checkpoint's configuration with ``train.steps``,
    ``train.device`` and ``train.progress`` from ``config``, and is refused when any other setting
    differs, when it has another number of processes, or when it has already finished; a
    ``config.yaml`` edited since the checkpoint is kept aside, with a warning.
    """
    ckpt_file = checkpoint_path(run_dir)
    if not resume:
        if ckpt_file.exists():
            raise RelposError(
                f"Run directory {str(run_dir)!r} already holds a checkpoint; pass --resume to continue "
                f"it, or --out DIR for a new run."
            )
        return config, None, ckpt_file
    ckpt_file = _resume_checkpoint(run_dir)
    state = load_checkpoint(ckpt_file, resume=True)
    saved = checkpoint_config(state, ckpt_file)
    saved.out = str(run_dir)
    _refuse_changed_settings(saved, config, run_dir)
    _refuse_other_world_size(state, launch, run_dir)
    # steps, device and progress were checked when ``config`` was resolved
    saved.train.steps = config.train.steps
    saved.train.device = config.train.device
    saved.train.progress = config.train.progress
    if state["step"] >= saved.train.steps:
        raise RelposError(
            f"The run in {str(run_dir)!r} already finished {state['step']} steps "
            f"(train.steps={saved.train.steps}); raise --steps to train longer."
        )
    if launch.rank == 0:  # the process that rewrites config.yaml
        keep_edited_config(run_dir, checkpoint_config(state, ckpt_file))
    return saved, state, ckpt_file


def _setup(config: RunConfig, data: Any, launch: distributed.Launch, state: dict[str, Any] | None,
           ckpt_file: Path) -> _Run:
    """Build the run in every process and restore ``state`` (None for a new run).

    Everything that can fail on bad input happens here, before the run directory is created. In a
    distributed run every process learns whether any failed (check_peers), so none waits forever.
    """
    cfg = config.train
    device = distributed.device_for(cfg.device, launch)
    _check_layout(cfg, launch)
    distributed.setup(device, launch)
    run = _with_peers_checked(lambda: _build_run(config, data, launch, device, state, ckpt_file))
    if run.distributed:
        run.spread_over_processes()
    return run


def _build_run(config: RunConfig, data: Any, launch: distributed.Launch, device: torch.device,
               state: dict[str, Any] | None, ckpt_file: Path) -> _Run:
    """The modality, its data, the pretext (with its encoder), the optimiser and the random streams,
    restored from ``state`` when the run continues a checkpoint."""
    cfg = config.train
    modality = build_modality(config)
    if modality.gives_positions():  # a pretext that cannot read placed channels: refused before any data
        check_channel_token_pretext(get_pretext(config.pretext), True)
    # Rank 0 builds a missing data cache first; the others then memory-map the same entry.
    windows = distributed.run_in_turn(
        lambda: open_data(modality, data if data is not None else config.data), launch
    )
    _check_enough_windows(len(windows), launch)
    pretext = build_pretext(config, modality, windows).to(device)
    optimizer = adamw(param_groups(pretext, cfg.weight_decay), cfg.lr, device)  # fused on CUDA
    # A pretext that asks for neighbours gets its window draws from a stream of their own even in one
    # process, as every process has under torchrun, so its rows do not depend on the process count.
    # (Other pretexts keep one stream in one process: their runs and checkpoints stay as they were.)
    own_index_stream = getattr(pretext, "window_request", None) is not None
    generator, index_generator = _random_streams(cfg.seed, launch, own_index_stream)
    run = _Run(config, launch, device, modality, windows, pretext, optimizer, generator, index_generator, ckpt_file)
    request = getattr(pretext, "window_request", None)
    if request is not None:  # samples of K windows of one recording: which recordings can serve them
        run.recording_index = index_for_request(request, windows, config.pretext, say=launch.rank == 0)
    if state is not None:
        run.restore(state)
    return run


def _random_streams(seed: int, launch: distributed.Launch,
                    own_index_stream: bool = False) -> tuple[torch.Generator, torch.Generator]:
    """Seed every random stream of this process; return (its generator, the window-index generator).

    The window indices of the global batch are drawn from one stream every process shares (each
    takes its slice), so the data a step sees does not depend on the number of processes;
    augmentation and the pretext's own draws use the process's stream, seeded from (seed, rank), so
    the processes do not repeat each other's crops and patches. One process shares one stream for
    both unless ``own_index_stream`` (then it seeds them as rank 0 of several would).
    """
    generator = torch.Generator().manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    if launch.world_size == 1 and not own_index_stream:
        return generator, generator
    own_seed = distributed.rank_seed(seed, launch.rank)
    random.seed(own_seed)
    np.random.seed(own_seed)
    torch.manual_seed(own_seed)
    return torch.Generator().manual_seed(own_seed), torch.Generator().manual_seed(seed)


def _with_peers_checked(work: Callable[[], _T]) -> _T:
    """``work()``, after which every process learns whether any failed (:func:`distributed.check_peers`
    re-raises the failure everywhere; in one process it is raised as is)."""
    result, error = None, None
    try:
        result = work()
    except Exception as exc:  # noqa: BLE001 - re-raised by check_peers
        error = exc
    distributed.check_peers(error)
    return result


def _nothing() -> None:
    """The part of a process that does not write the run's files in a step that rank 0 does."""


class _Run:
    """One training run: what :func:`_setup` built, where it writes, and how far it has got.

    Every process holds one; only the main process (rank 0) writes the run's files.
    """

    def __init__(self, config: RunConfig, launch: distributed.Launch, device: torch.device, modality: Modality,
                 windows: Windows, pretext: Pretext, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                 index_generator: torch.Generator, ckpt_file: Path):
        self.config, self.cfg = config, config.train
        self.run_dir, self.ckpt_file = config.run_dir(), ckpt_file
        self.launch, self.device = launch, device
        self.distributed = launch.world_size > 1
        self.main_process = launch.rank == 0  # writes the run's files; the others only train
        self.modality, self.windows = modality, windows
        self.pretext, self.optimizer = pretext, optimizer
        self.model: torch.nn.Module = pretext  # DDP's wrapper of it in a distributed run
        self.generator, self.index_generator = generator, index_generator
        self.lrs = lr_schedule(self.cfg)
        self.baseline_watch = BaselineWatch(self.cfg.steps, self.cfg.warmup_steps)
        #: One watch per component of a composed pretext, which logs ``NAME/loss_baseline`` (relpos.compose).
        self.part_watches = {name: BaselineWatch(self.cfg.steps, self.cfg.warmup_steps)
                             for name in _component_baselines(pretext.log_keys)}
        self.per_process = self.cfg.batch_size // launch.world_size
        use_amp = self.cfg.amp and device.type == "cuda"
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else nullcontext
        self.start = 0  # the checkpoint's step on resume
        self.step = 0  # the step being trained (the start before the first)
        self.last_saved: int | None = None  # step of the newest checkpoint on disk
        self.loss = float("nan")  # the last flushed step's loss, averaged over the processes
        self.logs: dict[str, float] = {}  # and its logged values
        self.flushed_step: int | None = None  # the step of the last flush
        #: The steps since the last flush, their loss and logs still on the device (read by flush).
        self.pending = _PendingValues()
        self.new_files: _NewRunFiles | None = None
        #: The recordings the pretext's window_request draws from; None: independent windows.
        self.recording_index: RecordingIndex | None = None
        self.log: _MetricsLog | None = None
        self.progress: Any = None
        self._format_checked = False
        self._t_last, self._samples = 0.0, 0
        #: RankMe (and the online kNN) every train.monitor_every steps (relpos.monitors); None: off.
        self.monitors = (Monitors(windows, modality, self.cfg.monitor_windows, self.cfg.monitor_knn, self.cfg.seed)
                         if self.cfg.monitor_every else None)
        self.monitored: dict[str, float] = {}

    # -- setup and restore ------------------------------------------------------------------------
    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint: weights, optimiser, random streams, the baseline watch, step."""
        _restore(state, self.pretext, self.optimizer, self.generator, self.index_generator, self.launch.rank,
                 self.ckpt_file)
        _restore_baseline_watch(state, self.baseline_watch, self.ckpt_file)
        for name, watch in self.part_watches.items():
            _restore_baseline_watch({"baseline_watch": (state.get("baseline_watches") or {}).get(name)}, watch,
                                    self.ckpt_file)
        self.start = self.step = int(state["step"])
        self.last_saved = self.start if self.start > 0 else None

    def spread_over_processes(self) -> None:
        """Wrap the pretext for data-parallel training (DDP); rank 0 says how the batch is split."""
        from torch.nn.parallel import DistributedDataParallel

        device, cfg = self.device, self.cfg
        # Unused parameters are allowed: a head may sit out some steps (DINO's frozen last layer).
        self.model = DistributedDataParallel(
            self.pretext, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
        if self.main_process:
            print(
                f"relpos: training on {self.launch.world_size} processes ({distributed.backend()}, {device.type}): "
                f"global batch {cfg.batch_size} = {self.per_process} windows per process "
                f"per step; train.lr {cfg.lr} as configured (not rescaled for the number of processes).",
                file=sys.stderr,
            )

    def create_run_dir(self) -> None:
        """Create the run directory and clear what killed processes left in it (rank 0). A new run
        first notes what is there, so that what it adds can be removed if it dies before its first
        checkpoint."""
        if self.start == 0 and self.main_process:
            self.new_files = _NewRunFiles(self.run_dir)
        _with_peers_checked(self._create_run_dir if self.main_process else _nothing)

    def _create_run_dir(self) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RelposError(
                f"Cannot create the run directory {str(self.run_dir)!r}: {exc.strerror or exc}; choose another --out."
            ) from None
        _remove_leftovers(self.run_dir, self.ckpt_file, fresh=self.start == 0)

    def open_outputs(self) -> None:
        """Write config.yaml and open metrics.csv (rank 0), then the progress bar."""
        _with_peers_checked(self._open_files if self.main_process else _nothing)
        if self.cfg.progress and self.main_process:
            from tqdm.auto import tqdm

            self.progress = tqdm(total=self.cfg.steps, initial=self.start,
                                 desc=f"{self.config.pretext} on {self.config.modality}", unit="step")
        self._t_last = time.perf_counter()

    def _open_files(self) -> None:
        try:
            atomic_write_text(self.config.to_yaml(), self.run_dir / "config.yaml")
        except OSError as exc:
            raise RelposError(
                f"Cannot write to the run directory {str(self.run_dir)!r}: {exc.strerror or exc}; choose "
                f"another --out."
            ) from None
        monitored = ["rankme", *(["knn"] if self.cfg.monitor_knn else [])] if self.monitors is not None else []
        self.log = _MetricsLog(self.run_dir, _metric_fields(self.pretext.log_keys) + monitored, self.start,
                               self.cfg.tensorboard)

    # -- one step -------------------------------------------------------------------------------
    def next_batch(self) -> dict[str, torch.Tensor]:
        """This process's slice of the step's global batch of windows, augmented, on the device."""
        first = self.launch.rank * self.per_process
        if self.recording_index is not None:
            return self._neighbour_batch(first)
        index = torch.randint(0, len(self.windows), (self.cfg.batch_size,), generator=self.index_generator)
        mine = index[first:first + self.per_process]
        x = self.modality.augment(self.windows.x[mine], self.generator)
        if self.windows.positions is not None:  # channels with positions: tokens are placed by them (relpos.space)
            return {"x": to_device(x, self.device), "positions": to_device(self.windows.positions[mine], self.device)}
        return {"x": to_device(x, self.device)}  # pinned, without blocking the host (relpos.transfer)

    def _neighbour_batch(self, first: int) -> dict[str, torch.Tensor]:
        """The batch of a pretext with a ``window_request``: the global batch's rows of K windows of one
        recording drawn from the shared index stream, this process's slice of them gathered, every
        window augmented, with the windows' onsets and indices."""
        request, index, n = self.pretext.window_request, self.recording_index, self.cfg.batch_size
        rows = check_rows(request.draw(index, n, self.index_generator), request, index, n, self.config.pretext)
        rows = rows[first:first + self.per_process]
        x = self.modality.augment(self.windows.x[rows.reshape(-1)], self.generator)
        x = x.reshape(*rows.shape, *x.shape[1:])
        onsets = torch.from_numpy(self.windows.onsets)[rows].float()
        return {"x": to_device(x, self.device), "onsets": to_device(onsets, self.device),
                "window_index": to_device(rows, self.device)}

    def flushes_at(self, step: int) -> bool:
        """Whether the buffered values are read at ``step``: the run's first step (the contract is
        checked and the bar shows a loss early), every row of metrics.csv, before every checkpoint
        and at the last step. The same steps in every process (the flush is a collective call)."""
        cfg = self.cfg
        return (step == self.start + 1 or step == cfg.steps or step % cfg.log_every == 0
                or step % cfg.ckpt_every == 0 or (self.monitors is not None and step % cfg.monitor_every == 0))

    def flush(self) -> None:
        """Bring the buffered steps' values to the host in one transfer (averaged over the processes)
        and feed them, step by step, to the stuck-at-baseline watches and the non-finite check."""
        for step, loss, logs in self.pending.flush(reduce=self.distributed):
            self.loss, self.logs, self.flushed_step = loss, logs, step
            self.watch_baseline(step, logs)
            self.stop_if_not_finite(step)

    def watch_baseline(self, step: int, logs: Mapping[str, Any]) -> None:
        """Feed the stuck-at-baseline watch; rank 0 prints its warning (once per run)."""
        baseline = logs.get(BASELINE_KEY)
        stuck = self.baseline_watch.update(step, self.loss, None if baseline is None else float(baseline))
        for name, watch in self.part_watches.items():  # each component of a composed pretext on its own
            said = watch.update(step, float(logs[f"{name}/loss"]), float(logs[f"{name}/{BASELINE_KEY}"]))
            if said is not None:
                said = f"pretext {name!r}: " + said.replace(f"'{BASELINE_KEY}' column", f"'{name}/{BASELINE_KEY}' column")
                stuck = said if stuck is None else f"{stuck}; {said}"
        if stuck is not None and self.main_process:
            if self.progress is not None:
                self.progress.write(f"relpos: warning: {stuck}", file=sys.stderr)
            else:
                warn(stuck)

    def stop_if_not_finite(self, step: int) -> None:
        if math.isfinite(self.loss):
            return
        error = self._not_finite(step, self.loss)
        # Every process sees the same averaged loss and stops here; rank 0 says so.
        error.reported_elsewhere = not self.main_process
        raise error

    def _not_finite(self, step: int, loss: float) -> TrainingError:
        return TrainingError(
            f"The loss became {loss} at step {step}, so training stopped and {self.kept()} "
            f"(try a lower train.lr, now {self.cfg.lr}, or check the data for NaN values)."
        )

    def report(self, step: int) -> None:
        """Advance the progress bar; every ``train.log_every`` steps and at the last, log a row (of the
        values the flush of this step read)."""
        self._samples += self.cfg.batch_size
        logs = self.logs
        baseline = logs.get(BASELINE_KEY)
        measured = self.monitor(step)
        if self.progress is not None:
            self.progress.update(1)
        if self.progress is not None and self.flushed_step == step:
            self.progress.set_postfix(
                loss=f"{self.loss:.4f}", **({"baseline": f"{float(baseline):.4f}"} if baseline is not None else {}),
                **{key: f"{value:.3g}" for key, value in self.monitored.items()},
            )
        if (step % self.cfg.log_every == 0 or step == self.cfg.steps or measured) and self.log is not None:
            assert self.flushed_step == step, "flushes_at must cover every row of metrics.csv"
            now = time.perf_counter()
            row = {"step": step, "loss": self.loss, "lr": float(self.lrs[step - 1]),
                   "samples_per_s": self._samples / max(now - self._t_last, 1e-9)}
            row.update({k: float(v) for k, v in logs.items()})
            row.update(measured)
            self.log.write(row)
            self._t_last, self._samples = now, 0

    def monitor(self, step: int) -> dict[str, float]:
        """Every ``train.monitor_every`` steps and at the last, on rank 0: RankMe (and the online kNN) of the
        encoder, with a warning the first time RankMe says the embeddings collapsed (:mod:`relpos.monitors`)."""
        if self.monitors is None or not self.main_process or (step % self.cfg.monitor_every and step != self.cfg.steps):
            return {}
        self.monitored = self.monitors.measure(self.pretext.encoder, self.config)
        collapsed = self.monitors.collapse_warning(step, self.monitored["rankme"])
        if collapsed is not None:
            if self.progress is not None:
                self.progress.write(f"relpos: warning: {collapsed}", file=sys.stderr)
            else:
                warn(collapsed)
        return self.monitored

    # -- save -----------------------------------------------------------------------------------
    def save(self, step: int) -> None:
        """Write the checkpoint of ``step``: rank 0 writes, with every process's random streams."""
        # Every process hands its random streams to rank 0, which alone writes; the check that
        # follows is also the barrier no process passes before the file is complete (PyTorch
        # PR #84881's race).
        rng_ranks = distributed.all_gather_objects(rng_state(self.generator)) if self.distributed else None
        _with_peers_checked(lambda: self._write_checkpoint(step, rng_ranks) if self.main_process else None)
        self.last_saved = step

    def checkpoint(self, step: int, rng_ranks: list[dict[str, Any]] | None) -> dict[str, Any]:
        """What the checkpoint of ``step`` holds (:mod:`relpos.checkpoint` says how it is read)."""
        windows = self.windows
        contents = {
            "step": step,
            "model": self.pretext.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(self.generator),
            "config": self.config.to_dict(),
            "encoder": self.pretext.encoder.init_args(),
            "data_info": {"extent": list(windows.extent), "channels": windows.channels, "windows": len(windows),
                          **_jsonable(windows.info)},  # windows: what memories were sized by (relpos show)
            "relpos_version": __version__,
            "baseline_watch": self.baseline_watch.state_dict(),  # so a resumed run judges on the run's steps
        }
        if self.part_watches:
            contents["baseline_watches"] = {name: w.state_dict() for name, w in self.part_watches.items()}
        if rng_ranks is not None:
            contents.update(world_size=len(rng_ranks), rng_ranks=rng_ranks,
                            index_generator=self.index_generator.get_state())
        elif self.index_generator is not self.generator:
            contents["index_generator"] = self.index_generator.get_state()
        return contents

    def _write_checkpoint(self, step: int, rng_ranks: list[dict[str, Any]] | None) -> None:
        try:
            atomic_torch_save(self.checkpoint(step, rng_ranks), self.ckpt_file)
        except OSError as exc:  # a full disk or a folder taken away is no reason for a traceback
            raise TrainingError(
                f"Cannot write the checkpoint {str(self.ckpt_file)!r} at step {step}: {exc.strerror or exc}, so "
                f"training stopped and {self.kept()} (free some space, or train into another --out)."
            ) from None
        if not self._format_checked:  # once: what a pretext stores is of the same kinds at every step
            self._format_checked = True
            unsafe = unsafe_objects(self.ckpt_file)
            if unsafe:
                if self.start == 0:
                    self.ckpt_file.unlink()  # it could never be loaded back, so the run has no checkpoint
                raise PluginError(
                    f"Pretext {self.config.pretext!r} keeps {', '.join(repr(u) for u in unsafe)} in its state, "
                    f"which a checkpoint cannot hold (relpos loads only tensors, numbers, strings, lists and "
                    f"dicts back, so that opening a checkpoint never runs code); store it as tensors or "
                    f"plain data."
                )

    def kept(self) -> str:
        """What of the run is kept, to end a sentence saying that training stopped."""
        if self.last_saved is None:
            return "no checkpoint had been written, so nothing of this run was kept"
        return f"the last good checkpoint (step {self.last_saved}) is {str(self.ckpt_file)!r}"

    # -- the end --------------------------------------------------------------------------------
    def explain_failure(self, exc: BaseException) -> Exception | None:
        """The one-sentence error that replaces ``exc`` (a lost peer, memory running out), or None
        to let ``exc`` through as it is (noted for the peers of a distributed run)."""
        step, launch = self.step, self.launch
        earlier = self._not_finite_before()
        if earlier is not None:  # what failed ran on weights a non-finite loss had already spoilt
            error = self._not_finite(*earlier)
            if self.distributed:
                distributed.note_failure(str(error))
            return error
        if self.distributed and distributed.is_collective_failure(exc):
            # A peer is gone, so this process cannot go on; say which one when it left a note.
            peer = distributed.peer_failure() or (
                "another process of the run stopped (its own message, or torchrun's summary, names it)"
            )
            error = TrainingError(f"Training stopped at step {step} because {peer}, and {self.kept()}.")
            error.reported_elsewhere = not self.main_process
            return error
        if _out_of_memory(exc):
            advice = self.pretext.memory_hint(self.per_process) or (
                f"lower train.batch_size, now {self.cfg.batch_size}, or the encoder's size"
            )
            # On the first step of a run the settings themselves do not fit: bad input (exit 2).
            error_type = ConfigError if step == self.start + 1 else TrainingError
            where = f" in process {launch.rank} of {launch.world_size}" if self.distributed else ""
            message = (f"Out of memory at step {step} on {self.device}{where}, so training stopped and "
                       f"{self.kept()} ({advice}).")
            if self.distributed:
                distributed.note_failure(message)
            return error_type(message)
        said_elsewhere = isinstance(exc, distributed.PeerFailed) or getattr(exc, "reported_elsewhere", False)
        if self.distributed and not said_elsewhere:
            distributed.note_failure(_one_line(exc))
        return None

    def _not_finite_before(self) -> tuple[int, float] | None:
        """The first step since the last flush whose loss was not finite, if any (the values are read
        here, when the run has failed, as non-finite detection lags by up to ``train.log_every`` steps)."""
        try:
            return self.pending.first_not_finite()
        except Exception:  # noqa: BLE001 - a device that failed cannot be read; the failure itself is said
            return None

    def close(self) -> None:
        """Close the progress bar and the logs; a new run without a checkpoint removes what it added."""
        if self.progress is not None:
            self.progress.close()
        if self.log is not None:
            self.log.close()
        if self.new_files is not None and not self.ckpt_file.exists():  # a new run never starts with one
            self.new_files.remove()

    def finish(self) -> TrainResult:
        if self.log is not None:  # the process that logged draws RUN/plots/loss.png; a failure only warns
            from .show import plot_loss_quietly

            plot_loss_quietly(self.run_dir)
        return TrainResult(run_dir=self.run_dir, step=self.cfg.steps, loss=self.loss, pretext=self.pretext,
                           config=self.config, baseline_summary=self._baseline_summary())

    def _baseline_summary(self) -> str | None:
        parts = [f"{name}: {said}" for name, w in self.part_watches.items() if (said := w.summary())]
        return "; ".join(filter(None, [self.baseline_watch.summary(), *parts])) or None


def _metric_fields(log_keys: Iterable[str]) -> list[str]:
    """metrics.csv's columns: the pretext's trivial baseline, when it reports one, beside the loss."""
    extra = [key for key in log_keys if key != BASELINE_KEY]
    baseline = [BASELINE_KEY] if BASELINE_KEY in log_keys else []
    return METRIC_FIELDS[:2] + baseline + METRIC_FIELDS[2:] + extra


def _component_baselines(log_keys: Iterable[str]) -> list[str]:
    """The components of a composed pretext that log a trivial baseline (``NAME/loss_baseline``)."""
    keys = set(log_keys)
    return [key[: -len(BASELINE_KEY) - 1] for key in log_keys
            if key.endswith(f"/{BASELINE_KEY}") and f"{key[: -len(BASELINE_KEY) - 1]}/loss" in keys]


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in info.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
            out[key] = list(value)
        elif key in (CONTRACT_KEY, "channel_sets"):  # plain nested data (relpos.space): names, numbers, lists
            out[key] = json.loads(json.dumps(value))
    return out
