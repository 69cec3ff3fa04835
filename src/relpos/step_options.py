"""Options of the training step that change its speed, not what it computes (beyond rounding).

* ``train.compile`` (default off): the step's forward (the pretext, with its encoder, or DDP's
  wrapper of it) runs through ``torch.compile``. Where ``torch.compile`` is missing or fails on the
  first step (no C++ compiler for the CPU backend, an unsupported Python, an operation it cannot
  trace), one warning line says why and the run goes on in eager mode from that same step, with the
  random streams rewound, so its numbers are those of ``train.compile: false``. The parameters are
  the pretext's own: checkpoints and exports do not change.
* ``train.amp`` (default on): bf16 autocast on CUDA; the parameters, their gradients and the
  optimiser's moments stay float32 (the master weights). No effect on a CPU.
* AdamW is the fused CUDA kernel on CUDA (one launch for every parameter); elsewhere PyTorch's
  default implementation, so CPU runs keep their numbers.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .errors import warn

#: AdamW's betas for every run (the ViT-pretraining convention).
BETAS = (0.9, 0.95)


def adamw(param_groups: list[dict[str, Any]], lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``param_groups``: the fused kernel on CUDA, PyTorch's default elsewhere."""
    if device.type == "cuda":
        return torch.optim.AdamW(param_groups, lr=lr, betas=BETAS, fused=True)
    return torch.optim.AdamW(param_groups, lr=lr, betas=BETAS)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = (text[:200] + "...") if len(text) > 200 else text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class StepForward:
    """The step's forward, ``forward(batch, generator)``: compiled with ``torch.compile`` when
    ``enabled``, eager otherwise or once compiling has failed (said in one warning line)."""

    def __init__(self, model: torch.nn.Module, enabled: bool, say: bool = True):
        self.model = model
        self.say = say  # rank 0 warns; the other processes fall back silently
        self.compiled: Callable[..., Any] | None = None
        self.proven = False  # the compiled forward has run once
        if not enabled:
            return
        if not hasattr(torch, "compile"):
            self._fall_back(f"this PyTorch ({torch.__version__}) has no torch.compile")
            return
        try:
            self.compiled = torch.compile(model)
        except Exception as exc:  # noqa: BLE001 - e.g. "Dynamo is not supported on Python 3.x"
            self._fall_back(f"torch.compile is unavailable here ({_one_line(exc)})")

    @property
    def active(self) -> bool:
        """Whether steps run compiled."""
        return self.compiled is not None

    def _fall_back(self, why: str) -> None:
        self.compiled = None
        if self.say:
            warn(f"train.compile is on but {why}; training without it (eager, as with train.compile: false).")

    def __call__(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> Any:
        if self.compiled is None:
            return self.model(batch, generator)
        if self.proven:
            return self.compiled(batch, generator)
        # The first call compiles; where that fails, the step runs again in eager mode from the same
        # random state, so the run is the one train.compile: false gives.
        rewind = generator.get_state()
        try:
            output = self.compiled(batch, generator)
        except Exception as exc:  # noqa: BLE001 - any failure of the compiler stack
            generator.set_state(rewind)
            self._fall_back(f"torch.compile failed on the first step ({_one_line(exc)})")
            try:
                torch._dynamo.reset()
            except Exception:  # noqa: BLE001 - only frees the compiler's caches
                pass
            return self.model(batch, generator)
        self.proven = True
        return output
