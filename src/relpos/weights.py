"""Strict weight loading: say how many of an encoder's weights a state dict fills, and refuse a partial fit.

``torch.nn.Module.load_state_dict(strict=False)`` loads whatever names happen to match and returns
the rest in a tuple nobody reads; a checkpoint of another architecture, or one whose names carry an
extra prefix, then leaves a randomly initialised encoder that looks pretrained (braindecode PR 992:
0 of 99 weights matched without a word). :func:`load_weights` compares the names and shapes first,
reports matched, missing and unexpected keys (:class:`LoadReport`), and loads only a complete fit
unless the caller passes ``strict=False``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .errors import RelposError, warn

#: Names a message shows of a list before "and N more".
SHOWN_NAMES = 4


@dataclass
class LoadReport:
    """How a state dict fits a module's weights.

    Attributes
    ----------
    matched : list of str
        Names present on both sides with the same shape (what is loaded).
    missing : list of str
        The module's names the state dict lacks (left as initialised when loading non-strictly).
    unexpected : list of str
        The state dict's names the module does not have (ignored when loading non-strictly).
    wrong_shape : list of str
        Names present on both sides with different shapes (never loaded).
    total : int
        Weights of the module (entries of its ``state_dict``).
    """

    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[str] = field(default_factory=list)
    total: int = 0

    @property
    def complete(self) -> bool:
        """Every weight of the module is filled and nothing is left over."""
        return not (self.missing or self.unexpected or self.wrong_shape)

    def summary(self) -> str:
        """``"matched 97 of 99; missing: 'a', 'b'; unexpected: 'c'"``."""
        parts = [f"{label}: {_names(names)}" for label, names in (
            ("missing", self.missing), ("unexpected", self.unexpected), ("wrong shape", self.wrong_shape)) if names]
        return "; ".join([f"matched {len(self.matched)} of {self.total}", *parts])


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:SHOWN_NAMES])
    return shown + (f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else "")


def compare_state(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> LoadReport:
    """How ``tensors`` fits ``module.state_dict()``, by name and shape (nothing is loaded)."""
    own = module.state_dict()
    report = LoadReport(total=len(own))
    for name, target in own.items():
        value = tensors.get(name)
        if value is None:
            report.missing.append(name)
        elif tuple(getattr(value, "shape", ())) != tuple(target.shape):
            report.wrong_shape.append(name)
        else:
            report.matched.append(name)
    report.unexpected = [name for name in tensors if name not in own]
    return report


def load_weights(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], where: str,
                 strict: bool = True) -> LoadReport:
    """Load ``tensors`` into ``module`` after checking that they fit; return the :class:`LoadReport`.

    Parameters
    ----------
    module : torch.nn.Module
        The encoder (any module) to fill.
    tensors : mapping of str to torch.Tensor
        The state dict to load.
    where : str
        Starts the sentence of an error (``"Checkpoint 'runs/x/checkpoints/last.pt'"``).
    strict : bool
        True (default): load only a complete fit (every weight filled, nothing left over). False:
        load the weights that match by name and shape, keep the others as initialised, and warn
        with the counts.

    Raises
    ------
    RelposError
        When no weight matches (with or without ``strict``: nothing would be loaded), when a name
        matches with another shape, or, with ``strict``, when the fit is partial; one sentence
        with the counts and the first names of each kind.
    """
    report = compare_state(module, tensors)
    if report.complete:
        module.load_state_dict(dict(tensors))
        return report
    if not report.matched:
        raise RelposError(
            f"{where} fills none of the encoder's {report.total} weights ({report.summary()}), so nothing would "
            f"be loaded; these are weights of another architecture or named differently (e.g. with a prefix)."
        )
    if report.wrong_shape:
        raise RelposError(
            f"{where} holds weights of other shapes than the encoder's ({report.summary()}); these are weights "
            f"of another architecture or size, which cannot be loaded even with strict=False."
        )
    if strict:
        raise RelposError(
            f"{where} fits the encoder only in part ({report.summary()}), so the encoder would be partly "
            f"untrained; load weights of this architecture, or pass strict=False to load the "
            f"{len(report.matched)} that match and keep the others as initialised."
        )
    module.load_state_dict({name: tensors[name] for name in report.matched}, strict=False)
    warn(f"{where}: strict=False loaded {report.summary()}; the other weights keep their initial values.")
    return report
