"""Atomic checkpoints, loaded safely.

A checkpoint is written to a temporary file in the same folder, flushed to disk, and renamed over
the old one, so a process killed at any moment leaves either the previous checkpoint or the new
one, never a torn file. A temporary file left by a process killed between writing and renaming
is removed the next time that run starts (:func:`remove_stale_temporaries`).

Checkpoints are read with ``torch.load(..., weights_only=True)``: the file may hold tensors,
numbers, strings, lists, tuples and dicts, nothing that names Python code, so a checkpoint from an
untrusted source cannot run anything when it is opened. Everything relpos stores is in those
forms: the configuration as :meth:`relpos.config.RunConfig.to_dict`, the random states as tensors
and lists of ints (:func:`rng_state`). Checkpoints written before that change stored NumPy's
random state as a ``numpy.ndarray`` of ``uint32``; exactly the NumPy types needed to rebuild that
one array are allow-listed (:data:`LEGACY_NUMPY_GLOBALS`), so those checkpoints keep loading.

A distributed run (``torchrun``) also stores ``world_size``, every process's random streams in
``rng_ranks`` (a list, in rank order, of what :func:`rng_state` returns) and the window-index
generator the processes share in ``index_generator``; ``rng`` is then rank 0's. A checkpoint
without ``world_size`` (every single-process checkpoint, old or new) was written by one process.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import RelposError

CHECKPOINT_NAME = "last.pt"

#: What the NumPy random state of checkpoints written before the safe format needs: the uint32
#: key array is pickled as ``_reconstruct(ndarray, shape, dtype)`` plus its raw bytes. Both module
#: names of ``_reconstruct`` are listed because NumPy 1 pickles it as ``numpy.core.multiarray``.
_reconstruct = (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct
LEGACY_NUMPY_GLOBALS: list[Any] = [
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
    (_reconstruct, "numpy._core.multiarray._reconstruct"),
    (_reconstruct, "numpy.core.multiarray._reconstruct"),
]

#: Entries every checkpoint has (for :func:`relpos.load_encoder` and ``relpos eval``).
REQUIRED_ENTRIES = {"step": "an integer", "model": "a mapping", "config": "a mapping", "encoder": "a mapping"}
#: Entries ``--resume`` needs on top.
RESUME_ENTRIES = {"optimizer": "a mapping", "rng": "a mapping"}


def checkpoint_path(run_dir: str | Path) -> Path:
    """``RUN_DIR/checkpoints/last.pt``."""
    return Path(run_dir) / "checkpoints" / CHECKPOINT_NAME


#: What a message about a missing run suggests unless the caller says otherwise.
TRAIN_FIRST = "train a run there first (relpos train --out DIR)"


def find_checkpoint(run: str | Path, hint: str = TRAIN_FIRST, exported: bool = False) -> Path:
    """The checkpoint file of ``run``: a run directory's ``checkpoints/last.pt``, or ``run`` itself
    when it is a file (a checkpoint, or with ``exported`` a ``.safetensors`` export).

    Raises
    ------
    RelposError
        One sentence that says what ``run`` *is* when it is not a run: missing, a file, a named
        pipe, a symbolic link that loops, a folder without a checkpoint, or one whose
        ``checkpoints/last.pt`` is a folder. ``hint`` ends the sentences about a missing run.
    """
    from .paths import path_kind

    run = Path(run)
    kind = path_kind(run)
    if kind is None:
        raise RelposError(f"Run directory {str(run)!r} does not exist; {hint}.")
    if kind == "a file":
        if run.suffix == ".safetensors" and not exported:
            raise RelposError(
                f"{str(run)!r} is an exported encoder (a .safetensors file written by `relpos export`), "
                f"not a run directory; pass the run directory it was exported from."
            )
        if run.suffix != ".pt" and not zipfile.is_zipfile(run):
            raise RelposError(
                f"{str(run)!r} is a file, not a run directory, and not a checkpoint either (checkpoints are "
                f"torch.save archives); pass a folder written by `relpos train`."
            )
        return run  # a checkpoint file; load_checkpoint says if it is damaged
    if kind != "a folder":
        raise RelposError(f"{str(run)!r} is {kind}, not a run directory; pass a folder written by `relpos train`.")
    ckpt = checkpoint_path(run)
    ckpt_kind = path_kind(ckpt)
    if ckpt_kind == "a file":
        return ckpt
    if ckpt_kind is None:
        raise RelposError(
            f"Folder {str(run)!r} has no checkpoint ({str(ckpt)!r} does not exist), so it is not a "
            f"finished run; {hint}."
        )
    raise RelposError(
        f"The checkpoint {str(ckpt)!r} of run {str(run)!r} is {ckpt_kind}, not a file, so the run has no "
        f"checkpoint to read; move it out of the way and train the run again."
    )


def temporary_path(path: str | Path) -> Path:
    """The temporary file :func:`atomic_torch_save` writes before renaming it to ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except (OverflowError, OSError):
        return False
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the ``.NAME.tmp-PID`` files that killed writers of ``path`` left behind.

    Only files of exactly that pattern, in ``path``'s folder, are touched. A file whose process is
    still alive (another process writing the same file right now) is kept; this process's own
    leftovers are stale by definition, as it has not started writing yet.

    Returns
    -------
    list of Path
        The files removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(path.name)}\.tmp-(\d+)")
    removed = []
    for entry in path.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match is None or not entry.is_file():
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and _process_is_alive(pid):
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except FileNotFoundError:
            pass
    return removed


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that never leaves a partial file at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# -- loading ------------------------------------------------------------------------------------
def _refusal(path: Path, exc: pickle.UnpicklingError) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", str(exc)) or re.search(r"got <class '([\w.]+)'>", str(exc))
    what = f"the Python object {found.group(1)!r}" if found else "a Python object that is not plain data"
    return (
        f"Checkpoint {str(path)!r} was refused: it asks to load {what}, and relpos reads only tensors, "
        f"numbers, strings, lists and dicts from a checkpoint, since anything else could run code "
        f"when opened."
    )


def _kind(value: Any) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


def _check_structure(path: Path, state: Any, resume: bool) -> None:
    """Raise one sentence naming the first entry that is missing or of the wrong kind."""
    where = f"Checkpoint {str(path)!r} is not a relpos checkpoint"
    if not isinstance(state, Mapping):
        raise RelposError(f"{where}: it holds {_kind(state)}, expected a mapping of step, model, config and encoder.")
    expected = {**REQUIRED_ENTRIES, **(RESUME_ENTRIES if resume else {})}
    for key, kind in expected.items():
        if key not in state:
            raise RelposError(
                f"{where}: its {key!r} entry is missing (it needs {', '.join(expected)})."
            )
        value = state[key]
        ok = isinstance(value, int) and not isinstance(value, bool) if kind == "an integer" else isinstance(value, Mapping)
        if not ok:
            raise RelposError(f"{where}: its {key!r} entry is {_kind(value)}, expected {kind}.")
    if state["step"] < 0:
        raise RelposError(f"{where}: its 'step' entry is {state['step']}, expected a step >= 0.")
    for name, value in state["model"].items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise RelposError(
                f"{where}: its 'model' entry maps {name!r} to {_kind(value)}, expected parameter names to tensors."
            )
    if "data_info" in state and not isinstance(state["data_info"], Mapping):
        raise RelposError(f"{where}: its 'data_info' entry is {_kind(state['data_info'])}, expected a mapping.")
    if resume:
        for key in ("state", "param_groups"):
            if key not in state["optimizer"]:
                raise RelposError(f"{where}: its optimizer state has no {key!r} entry.")
        _check_rng(where, state["rng"])
        _check_ranks(where, state)


def _check_ranks(where: str, state: Mapping) -> None:
    world = checkpoint_world_size(state)
    if world < 1:
        raise RelposError(f"{where}: its 'world_size' entry is {state['world_size']!r}, expected an integer >= 1.")
    if world == 1:
        return
    ranks = state.get("rng_ranks")
    if not isinstance(ranks, (list, tuple)):
        raise RelposError(
            f"{where}: its 'rng_ranks' entry is {_kind(ranks)}, expected a list of {world} random states "
            f"(one per process)."
        )
    if len(ranks) != world:
        raise RelposError(
            f"{where}: its 'rng_ranks' entry holds {len(ranks)} random state{'s' if len(ranks) != 1 else ''} "
            f"but the run had {world} processes, one state each."
        )
    for per_rank in ranks:
        if not isinstance(per_rank, Mapping):
            raise RelposError(f"{where}: its 'rng_ranks' entry holds {_kind(per_rank)}, expected mappings.")
        _check_rng(where, per_rank)
    index = state.get("index_generator")
    if not (isinstance(index, torch.Tensor) and index.dtype == torch.uint8):
        raise RelposError(f"{where}: its 'index_generator' entry is {_kind(index)}, expected a uint8 tensor.")


def checkpoint_world_size(state: Mapping[str, Any]) -> int:
    """How many processes wrote the run of a loaded checkpoint (1 for single-process checkpoints)."""
    world = state.get("world_size", 1)
    if not isinstance(world, int) or isinstance(world, bool):
        return 0
    return world


def _check_rng(where: str, rng: Mapping) -> None:
    for key in ("generator", "torch"):
        value = rng.get(key)
        if not (isinstance(value, torch.Tensor) and value.dtype == torch.uint8):
            raise RelposError(f"{where}: its random state {key!r} is {_kind(value)}, expected a uint8 tensor.")
    for key in ("numpy", "python"):
        if key not in rng:
            raise RelposError(f"{where}: its random state has no {key!r} entry.")


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", resume: bool = False, mmap: bool = False
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`atomic_torch_save`, safely.

    Parameters
    ----------
    path : str or Path
        The checkpoint file, or a run directory (its ``checkpoints/last.pt``).
    map_location : str or torch.device
        Where tensors are loaded.
    resume : bool
        Also require what resuming needs (optimizer and random states).
    mmap : bool
        Map the tensors from the file instead of reading them (cheap when only the configuration
        is needed).

    Returns
    -------
    dict

    Raises
    ------
    RelposError
        One sentence when the file is missing, damaged, not a ``torch.save`` archive, asks to load
        anything but tensors and plain data, or lacks an entry relpos needs.
    """
    path = find_checkpoint(path)
    # torch.save writes a zip archive; anything else (a bare pickle, torch's legacy format) is
    # refused before a byte of it is unpickled.
    if not zipfile.is_zipfile(path):
        raise RelposError(
            f"Checkpoint {str(path)!r} cannot be read: it is not an archive written by torch.save, "
            f"which every relpos checkpoint is."
        )
    try:
        with torch.serialization.safe_globals(LEGACY_NUMPY_GLOBALS):
            state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise RelposError(_refusal(path, exc)) from None
    except Exception as exc:  # noqa: BLE001 - a damaged file is a user-facing problem
        raise RelposError(f"Checkpoint {str(path)!r} cannot be read: {' '.join(str(exc).split())}.") from None
    _check_structure(path, state, resume)
    return dict(state)


def unsafe_objects(path: str | Path) -> list[str]:
    """The Python objects (``module.name``) in the checkpoint at ``path`` that the safe loader
    refuses, read from its pickle without loading anything; ``[]`` for a loadable checkpoint."""
    return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))


def checkpoint_config(state: Mapping[str, Any], path: str | Path):
    """The :class:`~relpos.config.RunConfig` a loaded checkpoint was trained with."""
    from .config import config_from_dict
    from .errors import ConfigError

    try:
        return config_from_dict(state["config"])
    except ConfigError as exc:
        raise RelposError(
            f"Checkpoint {str(path)!r} holds a configuration this relpos cannot use ({str(exc).rstrip('.')})."
        ) from None


# -- random states ---------------------------------------------------------------------------------
def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random stream training draws from, in forms the safe loader accepts."""
    numpy_state = np.random.get_state(legacy=False)
    version, internal, gauss_next = random.getstate()
    state = {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": [int(k) for k in numpy_state["state"]["key"]],
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any], generator: torch.Generator) -> None:
    """Restore the streams :func:`rng_state` saved (also the NumPy tuple of older checkpoints)."""
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, Mapping):
        np.random.set_state({
            "bit_generator": numpy_state["bit_generator"],
            "state": {"key": np.asarray(numpy_state["key"], dtype=np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        })
    else:  # checkpoints before the safe format: NumPy's legacy tuple
        np.random.set_state(tuple(numpy_state))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
