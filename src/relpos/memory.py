"""A FIFO memory bank of embeddings that survives a resume and is global across processes (public API).

Non-parametric methods (SOVE's judges, NNCLR's support set, MoCo's negatives) keep the embeddings of
earlier steps in a first-in first-out queue. Two things go wrong in the libraries we looked at, and
are designed out here:

* the queue, its write position and how much of it is filled are **persistent buffers**, so they are
  in the pretext's ``state_dict``, hence in every checkpoint, and a resumed run continues with the
  very same memory (lightly's ``MemoryBankModule`` registers them with ``persistent=False``: its
  issue #993);
* :meth:`MemoryBank.enqueue` gathers the rows of every process before writing
  (:func:`relpos.distributed.all_gather`, the identity in a single process), so every process holds
  the same, global bank when training is distributed (lightly's bank is per process by default:
  its issue #1018).

Until the bank is full, :meth:`MemoryBank.filled` returns only the rows written so far, so a method
never samples the zeros the bank starts with.
"""

from __future__ import annotations

import torch
from torch import nn

from .distributed import all_gather
from .errors import ConfigError


class MemoryBank(nn.Module):
    """A first-in first-out queue of ``size`` embeddings of ``dim`` values, kept in the checkpoint.

    Parameters
    ----------
    size : int
        Rows the bank holds; once full, each new row replaces the oldest.
    dim : int
        Values per row.

    Attributes
    ----------
    embeddings : torch.Tensor
        ``(size, dim)`` persistent buffer; row ``i`` holds the ``i``-th slot of the ring.
    pointer : torch.Tensor
        0-d long persistent buffer: the slot the next row is written to.
    count : torch.Tensor
        0-d long persistent buffer: how many slots have been written (at most ``size``).

    Examples
    --------
    >>> bank = MemoryBank(size=3, dim=1)
    >>> bank.enqueue(torch.tensor([[1.0], [2.0]]))
    >>> bank.enqueue(torch.tensor([[3.0], [4.0]]))  # 4 replaces 1, the oldest
    >>> bank.embeddings.flatten().tolist(), int(bank.pointer), int(bank.count)
    ([4.0, 2.0, 3.0], 1, 3)
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        for name, value in (("size", size), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"A memory bank's {name} must be a positive whole number, got {value!r}.")
        self.size = int(size)
        self.dim = int(dim)
        self.register_buffer("embeddings", torch.zeros(self.size, self.dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        #: (pointer, count) as Python ints beside the buffers, so a step never reads them back from a GPU;
        #: None after a state_dict was loaded (then read from the buffers once).
        self._positions: tuple[int, int] | None = (0, 0)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._positions = None

    def _host_positions(self) -> tuple[int, int]:
        if self._positions is None:
            self._positions = (int(self.pointer), int(self.count))
        return self._positions

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"

    @property
    def n_filled(self) -> int:
        """How many rows hold embeddings (``size`` once the bank has wrapped around)."""
        return self._host_positions()[1]

    @property
    def fill_fraction(self) -> float:
        """``n_filled / size``, in [0, 1]."""
        return self.n_filled / self.size

    def filled(self) -> torch.Tensor:
        """``(n_filled, dim)``: the rows written so far, in slot order (all of them once full)."""
        return self.embeddings[: self.n_filled]

    @torch.no_grad()
    def enqueue(self, rows: torch.Tensor, equal_shares: bool = False) -> None:
        """Write ``(n, dim)`` rows (gathered across processes first) over the oldest slots.

        ``equal_shares``: every process enqueues as many rows as this one (one row per sample of a
        batch that splits evenly), so the gather reads no counts back (:func:`relpos.distributed.all_gather`).

        Rows go to consecutive slots from :attr:`pointer`, wrapping around at the end; when more
        rows arrive than the bank holds, only the last ``size`` are kept (the earlier ones would be
        overwritten within the same call anyway).
        """
        if rows.dim() != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"MemoryBank.enqueue needs (n, {self.dim}) rows, got shape {tuple(rows.shape)}.")
        rows = all_gather(rows.detach(), equal_shares).to(self.embeddings)
        n = rows.shape[0]
        if n == 0:
            return
        start, count = self._host_positions()
        if n > self.size:  # keep the newest `size` rows, written where they would have landed
            start = (start + n - self.size) % self.size
            rows = rows[-self.size:]
            n = self.size
        slots = (start + torch.arange(n, device=rows.device)) % self.size
        self.embeddings[slots.to(self.embeddings.device)] = rows
        self._positions = ((start + n) % self.size, min(self.size, count + n))
        self.pointer.fill_(self._positions[0])
        self.count.fill_(self._positions[1])
