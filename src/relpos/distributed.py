"""Data-parallel training across processes, through ``torch.distributed`` as ``torchrun`` starts it.

relpos writes no launcher and no communication layer of its own: ``torchrun`` starts the
processes and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``
and ``MASTER_PORT``; :func:`setup` reads them and joins the default process group (gloo on CPU,
nccl on CUDA GPUs). A process started any other way (no ``WORLD_SIZE``, or ``WORLD_SIZE=1``) is a
single-process run and nothing here changes it.

The collectives are **the identity in a single process**, so a pretext calls them
unconditionally:

* :func:`all_reduce_mean` / :func:`all_reduce_sum`: a statistic every process must agree on
  (DINO's centre, a logged value);
* :func:`all_reduce_sum_with_grad`: the same sum with gradients flowing back to every process (a
  statistic of the global batch inside a loss);
* :func:`all_gather`: the rows of every process concatenated in rank order (a memory bank is
  filled with every process's entries, not just its own); no gradient flows through it;
* :func:`all_gather_objects`, :func:`barrier`, :func:`run_in_turn` (rank 0 first, e.g. building a
  data cache once before the others memory-map it), :func:`check_peers` (every process learns
  whether any failed, so none waits forever for a peer that is gone).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from .errors import ConfigError, RelposError

T = TypeVar("T")

#: How long a collective waits for a slow peer before failing (building a large data cache on
#: rank 0 while the others wait is the slow case); ``RELPOS_DIST_TIMEOUT_S`` overrides it.
DEFAULT_TIMEOUT_S = 3600
#: Key of the process group's store under which a failing process leaves its one-line reason.
_FAILURE_KEY = "relpos/failure"
#: Whether :func:`setup` created the process group (and :func:`leave` should destroy it).
_group_created_here = False


class PeerFailed(RelposError):
    """Another process of the run failed and reports why itself; this one stops without repeating it."""

    reported_elsewhere = True


@dataclass(frozen=True)
class Launch:
    """Where this process stands in a distributed run (as torchrun's environment says).

    Attributes
    ----------
    rank, world_size : int
        This process's global rank and the number of processes.
    local_rank, local_world_size : int
        Its rank and the number of processes on this machine.
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(
            f"The environment variable {name} is {text!r}, expected a whole number: relpos reads it as "
            f"part of a torchrun launch's layout; unset it to train in one process, or start the run "
            f"with torchrun, which sets it."
        ) from None


def launch_from_env() -> Launch:
    """The run's layout from torchrun's variables (a single process when they are absent).

    When a process group is already initialised (a script that called
    ``torch.distributed.init_process_group`` itself) its rank and size are used.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    else:
        world, rank = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    local_rank = _env_int("LOCAL_RANK", rank % max(local_world, 1))
    if world < 1 or not 0 <= rank < world or not 0 <= local_rank < max(local_world, 1):
        raise ConfigError(
            f"The environment variables RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE do not fit "
            f"together (RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local_rank}, LOCAL_WORLD_SIZE={local_world}; "
            f"each rank must be from 0 to its size - 1); unset them to train in one process, or start the "
            f"run with torchrun, which sets them."
        )
    return Launch(rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world)


def launch_rank() -> int:
    """This process's rank as torchrun's environment says, also after the process group is gone."""
    try:
        return launch_from_env().rank
    except ConfigError:
        return 0


def should_report(error: BaseException) -> bool:
    """Whether this process prints ``error``, so that a distributed run says each error once.

    An error marked ``reported_elsewhere`` (:func:`check_peers`) is said by another process. One
    raised before the process group exists (a bad option, a missing checkpoint) depends only on the
    command line and the machine's files, so every process of a machine meets it alike: the first
    process of each machine (``LOCAL_RANK`` 0) says it.
    """
    if getattr(error, "reported_elsewhere", False):
        return False
    if is_distributed():
        return True
    try:
        return launch_from_env().local_rank == 0
    except ConfigError:  # an environment torchrun did not set up: say everything
        return True


# -- the process group ---------------------------------------------------------------------------
def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """``train.device`` as a device: ``auto`` is the GPU when there is one, else the CPU.

    ``key`` is the setting named in a message (``eval.device`` for ``relpos eval``).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"Invalid value for {key!r}: {name!r}; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key!r} is {name!r} but no CUDA GPU is available; use cpu or auto.")
    return device


def device_for(name: str, launch: Launch) -> torch.device:
    """The device this process trains on, checked against the run's layout.

    In a distributed run ``cuda`` (or ``auto`` on a GPU machine) means the GPU of the process's local
    rank, one GPU per process; ``cuda:N`` and ``mps`` are refused, since every process would share one
    device. A single process resolves ``name`` as before.
    """
    device = resolve_device(name)
    if launch.world_size == 1:
        return device
    if device.type == "cuda":
        if device.index is not None:
            raise ConfigError(
                f"'train.device' is {name!r}, one GPU for all {launch.world_size} processes of this run; use "
                f"--device cuda, which gives each process the GPU of its local rank."
            )
        available = torch.cuda.device_count()
        if available < launch.local_world_size:
            raise ConfigError(
                f"This machine runs {launch.local_world_size} processes of the run on --device cuda but has "
                f"{available} GPU{'s' if available != 1 else ''}; start at most {available} per machine "
                f"(torchrun --nproc_per_node {available}) or train on --device cpu."
            )
        return torch.device("cuda", launch.local_rank)
    if device.type != "cpu":
        raise ConfigError(
            f"'train.device' is {name!r}, which distributed training does not support; use cpu (gloo) or "
            f"cuda (nccl)."
        )
    return device


def setup(device: torch.device, launch: Launch) -> bool:
    """Join the default process group of a torchrun launch; True when this call created it.

    gloo on CPU, nccl on CUDA (after selecting the process's GPU). Nothing happens in a single
    process or when the group exists already.
    """
    import torch.distributed as dist

    global _group_created_here
    if launch.world_size == 1 or dist.is_initialized():
        return False
    if not dist.is_available():
        raise ConfigError("This PyTorch build has no torch.distributed, so it cannot train on several processes.")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=_env_int("RELPOS_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        rank=launch.rank,
        world_size=launch.world_size,
        timeout=timeout,
        **({"device_id": device} if device.type == "cuda" else {}),
    )
    _group_created_here = True
    return True


def leave() -> None:
    """Destroy the process group :func:`setup` created, if it did (a group the caller made is kept).

    Called when training ends, successfully or not: a process that exits with a live group can
    abort in the group's threads at interpreter shutdown, which torchrun then reports instead of the
    real error.
    """
    import torch.distributed as dist

    global _group_created_here
    if not _group_created_here:
        return
    _group_created_here = False
    try:
        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - leaving must never hide the error that ended training
        pass


def backend() -> str | None:
    """The process group's backend (``"gloo"``, ``"nccl"``), or None in a single process."""
    import torch.distributed as dist

    return dist.get_backend() if is_distributed() else None


# -- where this process stands --------------------------------------------------------------------
def is_distributed() -> bool:
    """Whether this process belongs to a process group of more than one process."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes of the run (1 when not distributed)."""
    import torch.distributed as dist

    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    import torch.distributed as dist

    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """Whether this process writes the run's files (rank 0, or the only process)."""
    return rank() == 0


def rank_seed(seed: int, process_rank: int) -> int:
    """A 32-bit seed for the random streams of process ``process_rank`` of a run seeded ``seed``.

    Mixed by NumPy's ``SeedSequence``, so neighbouring (seed, rank) pairs give unrelated streams
    (``seed + rank`` would make rank 1 of seed 0 replay rank 0 of seed 1).
    """
    return int(np.random.SeedSequence([int(seed), int(process_rank)]).generate_state(1)[0])


# -- collectives (the identity in a single process) -----------------------------------------------
def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over the processes (a new tensor); ``tensor`` itself in a single process."""
    import torch.distributed as dist

    if not is_distributed():
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def all_reduce_sum_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over the processes, differentiable; ``tensor`` itself in a single process.

    The backward pass sums the gradients of every process, so a statistic of the global batch (a
    mean over every process's rows) passes to each process's rows the gradient of every process's loss,
    as in one process. Every process must call it, in the same order.
    """
    if not is_distributed():
        return tensor
    return _SumOverProcesses.apply(tensor)


class _SumOverProcesses(torch.autograd.Function):
    # torch.distributed.nn.functional.all_reduce does the same but is deprecated (torch 2.x) for
    # functional collectives that carry no gradient.
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(grad.contiguous())


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over the processes (a new tensor); ``tensor`` itself in a single process.

    Integer tensors are averaged in float64.
    """
    if not is_distributed():
        return tensor
    if not (tensor.is_floating_point() or tensor.is_complex()):
        tensor = tensor.to(torch.float64)
    return all_reduce_sum(tensor) / world_size()


def all_gather(tensor: torch.Tensor, equal_shares: bool = False) -> torch.Tensor:
    """Every process's ``tensor`` concatenated along dim 0, in rank order; ``tensor`` in one process.

    The processes may hold different numbers of rows (the other dimensions must agree): the counts
    are exchanged first and read on the host. With ``equal_shares`` the caller says every process
    holds as many rows as this one (e.g. its slice of a global batch that splits evenly), and the
    rows are gathered at once, with nothing read back from the device. The result is detached: no
    gradient flows back to the other processes (a memory bank or a logged statistic needs none).
    """
    import torch.distributed as dist

    if not is_distributed():
        return tensor
    tensor = tensor.detach().contiguous()
    if tensor.ndim == 0:
        tensor = tensor.reshape(1)
    if equal_shares:
        pieces = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(pieces, tensor)
        return torch.cat(pieces)
    rows = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.int64)
    counts = [torch.zeros_like(rows) for _ in range(world_size())]
    dist.all_gather(counts, rows)
    counts_list = [int(c.item()) for c in counts]
    most = max(counts_list)
    padded = tensor
    if tensor.shape[0] < most:  # all_gather moves equal shapes only
        pad = tensor.new_zeros((most - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([tensor, pad])
    pieces = [torch.empty_like(padded) for _ in counts_list]
    dist.all_gather(pieces, padded)
    return torch.cat([piece[:count] for piece, count in zip(pieces, counts_list)])


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's picklable ``obj``, in rank order (``[obj]`` in a single process).

    Meant for small things (random states, error messages), not for tensors on the training path.
    """
    import torch.distributed as dist

    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    """Wait until every process reaches this point (nothing in a single process)."""
    import torch.distributed as dist

    if is_distributed():
        dist.barrier()


def run_in_turn(work: Callable[[], T], launch: Launch | None = None) -> T:
    """Run ``work`` on rank 0 first, then on each machine's local rank 0, then on every other process.

    For work that builds something on disk the others then reuse (a data cache): rank 0 builds it
    while the others wait, and the rest find it built. The phase of machines other than rank 0's
    covers caches on each machine's own disk without two processes of one machine building at once.
    An error in ``work`` is raised after the phases, so no process waits for one that failed.
    """
    if not is_distributed():
        return work()
    launch = launch or launch_from_env()
    phase = 0 if launch.rank == 0 else 1 if launch.local_rank == 0 else 2
    result: Any = None
    error: BaseException | None = None
    for turn in range(3):
        if turn == phase:
            try:
                result = work()
            except Exception as exc:  # noqa: BLE001 - re-raised below, once every process has had its turn
                error = exc
        barrier()
    if error is not None:
        raise error
    return result


def check_peers(error: BaseException | None) -> None:
    """Every process calls this at the same point, with the exception it met there (or None).

    When no process failed it returns. Otherwise the lowest failed rank raises its own error (named
    with its rank when other processes did not fail); a process that met the same error raises it
    marked ``reported_elsewhere``, and every other process raises :class:`PeerFailed`. The command
    line prints neither again: one message, and no process left waiting for a peer that is gone.
    In a single process it just re-raises ``error``.
    """
    if not is_distributed():
        if error is not None:
            raise error
        return
    mine = None if error is None else " ".join(str(error).split()) or type(error).__name__
    statuses = all_gather_objects(mine)
    failed = [r for r, status in enumerate(statuses) if status is not None]
    if not failed:
        return
    here, size = rank(), world_size()
    if here == failed[0]:
        assert error is not None
        if len(failed) < size and isinstance(error, RelposError):
            error.args = (f"Process {here} of {size}: {mine}",)
        raise error
    if error is not None and mine == statuses[failed[0]]:
        error.reported_elsewhere = True  # the same error, said once by the lowest rank
        raise error
    raise PeerFailed(f"Process {failed[0]} of {size} failed: {statuses[failed[0]]}")


def note_failure(message: str) -> None:
    """Leave this process's failure reason where the others can read it once their collective fails."""
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        _get_default_store().set(_FAILURE_KEY, f"process {rank()} of {world_size()} failed ({message})")
    except Exception:  # noqa: BLE001 - the store may be gone already; the process's own error still shows
        pass


def peer_failure() -> str | None:
    """The reason a failed peer left with :func:`note_failure`, or None (not distributed, none left)."""
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        store = _get_default_store()
        if store.check([_FAILURE_KEY]):
            return store.get(_FAILURE_KEY).decode()
    except Exception:  # noqa: BLE001 - no store: the peer died without leaving a note
        pass
    return None


def is_collective_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because a peer went away (not this process's fault)."""
    dist_error = getattr(torch.distributed, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        marker in text for marker in ("Connection closed by peer", "Connection reset by peer", "Gloo", "NCCL",
                                      "Broken pipe", "ProcessGroup")
    )
