"""A pretext's trivial baseline, and the training loop's check that the loss moves below it.

A loss value means little on its own: PART's mean squared error of 140 on a sleep night is the loss
of always predicting the mean offset, so a model stuck there has learned nothing, while 140 on
another recipe could be excellent. The contract is therefore method-agnostic: a pretext that has a
natural trivial predictor (PART: the best constant prediction of its targets; a softmax objective:
the uniform distribution) reports that predictor's loss on the same batch under the log key
:data:`BASELINE_KEY` (and lists it in its ``log_keys``). The loop then

* writes it beside the loss in metrics.csv, TensorBoard and the progress bar,
* warns once when, after :data:`CHECK_FRACTION` of the run, the loss smoothed over a trailing
  window is not clearly below the baseline smoothed the same way (above :data:`CLEARLY_BELOW`
  times it), and
* says in its final message where the run ended relative to the baseline.

A pretext without a natural baseline simply does not report the key, and none of this happens.
"""

from __future__ import annotations

import math
from collections import deque

#: The log key under which a pretext reports its trivial baseline's loss on the current batch.
BASELINE_KEY = "loss_baseline"
#: Fraction of the run after which a loss still at the baseline is reported: early enough to stop a
#: run that will not learn, late enough for warm-up (the sleep recipe's 20 steps of 1000) to be over.
CHECK_FRACTION = 0.25
#: "Clearly below" the baseline: the smoothed loss must be under this fraction of it. Batch-to-batch
#: noise of the baseline itself is a few per cent at the recipes' batch sizes, so 0.9 is a drop that
#: noise does not fake.
CLEARLY_BELOW = 0.9
#: The trailing window (in steps) over which loss and baseline are averaged: a tenth of the run,
#: at most this many steps.
MAX_WINDOW_STEPS = 100


def smoothing_window(total_steps: int) -> int:
    """Steps averaged for the check: a tenth of the run, between 1 and :data:`MAX_WINDOW_STEPS`."""
    return max(1, min(MAX_WINDOW_STEPS, math.ceil(0.1 * total_steps)))


class BaselineWatch:
    """Follow a run's loss against its pretext's trivial baseline.

    Parameters
    ----------
    total_steps : int
        The run's length (``train.steps``).
    check_fraction : float
        Fraction of the run after which a loss not clearly below the baseline is reported.
    clearly_below : float
        The smoothed loss counts as learning when it is below this fraction of the smoothed baseline.
    """

    def __init__(self, total_steps: int, check_fraction: float = CHECK_FRACTION,
                 clearly_below: float = CLEARLY_BELOW):
        self.total_steps = int(total_steps)
        self.window = smoothing_window(self.total_steps)
        self.check_step = max(1, math.ceil(check_fraction * self.total_steps))
        self.clearly_below = clearly_below
        self.losses: deque[float] = deque(maxlen=self.window)
        self.baselines: deque[float] = deque(maxlen=self.window)
        self.warned = False

    @property
    def active(self) -> bool:
        """Whether any baseline has been reported."""
        return bool(self.baselines)

    def smoothed(self) -> tuple[float, float] | None:
        """``(loss, baseline)`` averaged over the trailing window, or None before the first report."""
        if not self.baselines:
            return None
        return sum(self.losses) / len(self.losses), sum(self.baselines) / len(self.baselines)

    def update(self, step: int, loss: float, baseline: float | None) -> str | None:
        """Record one step; return the warning (once per run) when the loss is stuck at the baseline.

        Parameters
        ----------
        step : int
            Optimiser steps taken, counting from 1.
        loss, baseline : float
            This step's loss and the pretext's trivial baseline on the same batch (None: not reported).
        """
        if baseline is None or not math.isfinite(baseline):
            return None
        self.losses.append(float(loss))
        self.baselines.append(float(baseline))
        # The window must be full so one lucky batch does not decide it, unless the run ends first.
        full = len(self.baselines) == self.window or step == self.total_steps
        if self.warned or step < self.check_step or not full:
            return None
        mean_loss, mean_baseline = self.smoothed()
        if mean_loss < self.clearly_below * mean_baseline:
            return None
        self.warned = True
        return (
            f"after {step} of {self.total_steps} steps the loss ({mean_loss:.4g}, mean of "
            f"{_last_steps(len(self.losses))}) is not clearly below the pretext's trivial baseline "
            f"({mean_baseline:.4g}, the '{BASELINE_KEY}' column of metrics.csv), so the pretext is not "
            f"learning from this data (docs/pretraining.md says what to check and what helped on real data)."
        )

    def summary(self) -> str | None:
        """Where the run ended relative to the baseline, as a clause for the final message."""
        values = self.smoothed()
        if values is None:
            return None
        mean_loss, mean_baseline = values
        if mean_baseline > 0:
            relative = f"{100 * mean_loss / mean_baseline:.0f} % of"
        else:
            relative = "against"
        verdict = "clearly below it" if mean_loss < self.clearly_below * mean_baseline else "not clearly below it"
        return (
            f"mean loss of {_last_steps(len(self.losses))} {mean_loss:.4g}, {relative} the trivial "
            f"baseline {mean_baseline:.4g} ({verdict})"
        )


def _last_steps(count: int) -> str:
    return "the last step" if count == 1 else f"the last {count} steps"
