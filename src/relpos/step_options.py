"""Options of the training step that change its speed, not what it computes (beyond rounding).

* ``train.compile`` (default off): the step's forward (the pretext, with its encoder, or DDP's
  wrapper of it) runs through ``torch.compile``. Where ``torch.compile`` is missing or fails on the
  first step, in its forward or in its backward (no C++ compiler for the CPU backend, an unsupported
  Python, an operation it cannot trace, a backward graph that does not compile), one warning line
  says why and the run goes on in eager mode from that same step, with the random streams rewound,
  the module's buffers restored and the gradients zeroed, so its numbers are those of
  ``train.compile: false``. The parameters are the pretext's own: checkpoints and exports do not
  change, and a run resumes exactly under compile as without it.
* ``train.amp`` (default on): bf16 autocast on CUDA; the parameters, their gradients and the
  optimiser's moments stay float32 (the master weights). No effect on a CPU.
* AdamW is PyTorch's fused kernel on CUDA and on a CPU (one call for every parameter; on the
  default EEG recipe's 4.1 M parameters 5.6 ms a step against 22 ms, one CPU thread); elsewhere, or
  with a PyTorch without the fused CPU kernel, its default implementation. A CPU run's numbers
  therefore differ from those of relpos before this change in the last digits (the same after 40
  steps of the default recipe to 9 digits; 84.8987 against 84.9004 after 100).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable

import torch

from .errors import warn

#: AdamW's betas for every run (the ViT-pretraining convention).
BETAS = (0.9, 0.95)


def adamw(param_groups: list[dict[str, Any]], lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``param_groups``: PyTorch's fused kernel (one call for every parameter) on CUDA and
    on a CPU, PyTorch's default implementation on other devices or where this PyTorch has no fused
    kernel for the device."""
    if device.type in ("cuda", "cpu"):
        try:
            return torch.optim.AdamW(param_groups, lr=lr, betas=BETAS, fused=True)
        except (RuntimeError, ValueError):  # e.g. a PyTorch before 2.4 has no fused CPU kernel
            pass
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
        self.backward_proven = False  # and its backward too
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
            _reset_compiler()
            return self.model(batch, generator)
        self.proven = True
        return output

    def forward_backward(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                         autocast: Callable[[], AbstractContextManager] = nullcontext,
                         check: Callable[[Any], None] | None = None,
                         zero_grad: Callable[[], None] | None = None) -> Any:
        """The step's forward (under ``autocast``), ``check`` of its output, ``zero_grad`` and the
        backward of its loss; returns the forward's output ``(loss, logs)``, the gradients accumulated.

        The gradients are cleared after the forward, just before the backward, as the loop always did:
        cleared before the forward, the CPU step was 8-10 % slower (the forward's tensors then take the
        memory the gradients had, and the backward allocates theirs afresh).

        The compiled backward graph is built at the first ``backward``; where that fails, the step is
        redone in eager mode as a failed forward is (one warning line, the random stream rewound), with
        the module's buffers (e.g. BatchNorm statistics the compiled forward updated) restored and the
        gradients it left zeroed, so the run is the one ``train.compile: false`` gives.
        """
        trying = self.compiled is not None and not self.backward_proven
        if trying:  # once: what the compiled step's first forward may change, to undo
            rewind = generator.get_state()
            buffers = [(buffer, buffer.detach().clone()) for buffer in self.model.buffers()]
        with autocast():
            output = self(batch, generator)
        if check is not None:
            check(output)
        if not trying or self.compiled is None:  # eager (from the start, or after the forward failed)
            _backward(output, zero_grad)
            return output
        try:
            _backward(output, zero_grad)
        except Exception as exc:  # noqa: BLE001 - any failure of the compiler stack
            generator.set_state(rewind)
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
            self.model.zero_grad(set_to_none=True)
            self._fall_back(f"torch.compile failed in the first step's backward ({_one_line(exc)})")
            _reset_compiler()
            with autocast():
                output = self.model(batch, generator)
            if check is not None:
                check(output)
            _backward(output, zero_grad)
            return output
        self.backward_proven = True
        return output


def _backward(output: Any, zero_grad: Callable[[], None] | None) -> None:
    if zero_grad is not None:
        zero_grad()
    output[0].backward()


def _reset_compiler() -> None:
    """Free the compiler's caches once a run has fallen back to eager mode."""
    try:
        torch._dynamo.reset()
    except Exception:  # noqa: BLE001 - only frees the compiler's caches
        pass
