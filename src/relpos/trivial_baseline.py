"""A pretext's trivial baseline, and the training loop's check that the loss moves below it.

A loss value means little on its own: PART's mean squared error of 140 on a sleep night is the loss
of always predicting the mean offset, so a model stuck there has learned nothing, while 140 on
another recipe could be excellent. The contract is therefore method-agnostic: a pretext that has a
natural trivial predictor (PART: the best constant prediction of its targets; a softmax objective:
the uniform distribution) reports that predictor's loss on the same batch under the log key
:data:`BASELINE_KEY` (and lists it in its ``log_keys``). The loop then

* writes it beside the loss in metrics.csv, TensorBoard and the progress bar,
* warns once when, from its check step on, the loss smoothed over a trailing window is not clearly
  below the baseline smoothed the same way (above :data:`CLEARLY_BELOW` times it); the check step
  is the latest of :data:`CHECK_FRACTION` of the run, the end of warm-up plus one window (so no
  averaged step is a warm-up step), and :data:`MIN_CHECK_STEPS`, so a short run or one still
  warming up is never judged;
* says in its final message where the run ended relative to the baseline, in terms that agree with
  the warning (one verdict, :meth:`BaselineWatch.summary`).

Steps are the run's global steps, and the watch's state travels in the checkpoint
(:meth:`BaselineWatch.state_dict`), so a resumed run judges exactly as an uninterrupted one.

A pretext without a natural baseline simply does not report the key, and none of this happens.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

#: The log key under which a pretext reports its trivial baseline's loss on the current batch.
BASELINE_KEY = "loss_baseline"
#: Fraction of the run after which a loss still at the baseline is reported: early enough to stop a
#: run that will not learn, late enough for warm-up (the sleep recipe's 20 steps of 1000) to be over.
CHECK_FRACTION = 0.25
#: Fewest steps before any judgement: a run this short is a smoke test, not a claim about learning.
MIN_CHECK_STEPS = 30
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


def check_step(total_steps: int, warmup_steps: int = 0, check_fraction: float = CHECK_FRACTION) -> int:
    """The global step from which the watch judges a run: the latest of ``check_fraction`` of the run,
    the end of warm-up plus one smoothing window, and :data:`MIN_CHECK_STEPS`. A run shorter than
    that is never judged."""
    return max(
        math.ceil(check_fraction * total_steps),
        int(warmup_steps) + smoothing_window(total_steps),
        MIN_CHECK_STEPS,
    )


class BaselineWatch:
    """Follow a run's loss against its pretext's trivial baseline.

    Parameters
    ----------
    total_steps : int
        The run's length (``train.steps``).
    warmup_steps : int
        The run's learning-rate warm-up (``train.warmup_steps``): nothing is judged before it ends.
    check_fraction : float
        Fraction of the run after which a loss not clearly below the baseline is reported.
    clearly_below : float
        The smoothed loss counts as learning when it is below this fraction of the smoothed baseline.
    """

    def __init__(self, total_steps: int, warmup_steps: int = 0, check_fraction: float = CHECK_FRACTION,
                 clearly_below: float = CLEARLY_BELOW):
        self.total_steps = int(total_steps)
        self.window = smoothing_window(self.total_steps)
        self.check_step = check_step(self.total_steps, warmup_steps, check_fraction)
        self.clearly_below = clearly_below
        # The last steps' values, as many as any run length averages: a resumed run whose
        # train.steps grew (so its window grew) still averages exactly the steps it would have.
        self.losses: deque[float] = deque(maxlen=MAX_WINDOW_STEPS)
        self.baselines: deque[float] = deque(maxlen=MAX_WINDOW_STEPS)
        self.last_step = 0
        #: The step at which the warning was given (0: not given).
        self.warned_step = 0

    @property
    def active(self) -> bool:
        """Whether any baseline has been reported."""
        return bool(self.baselines)

    @property
    def warned(self) -> bool:
        return self.warned_step > 0

    def smoothed(self) -> tuple[float, float] | None:
        """``(loss, baseline)`` averaged over the trailing window, or None before the first report."""
        if not self.baselines:
            return None
        losses, baselines = list(self.losses)[-self.window:], list(self.baselines)[-self.window:]
        return sum(losses) / len(losses), sum(baselines) / len(baselines)

    def _averaged(self) -> int:
        return min(len(self.baselines), self.window)

    def is_clearly_below(self) -> bool | None:
        """The verdict both the warning and :meth:`summary` give: whether the smoothed loss is
        clearly below the smoothed baseline (None before the first report)."""
        values = self.smoothed()
        if values is None:
            return None
        mean_loss, mean_baseline = values
        return mean_loss < self.clearly_below * mean_baseline

    def update(self, step: int, loss: float, baseline: float | None) -> str | None:
        """Record one step; return the warning (once per run) when the loss is stuck at the baseline.

        Parameters
        ----------
        step : int
            The run's global step, counting from 1 (a resumed run goes on from its checkpoint's).
        loss, baseline : float
            This step's loss and the pretext's trivial baseline on the same batch (None: not reported).
        """
        if baseline is None or not math.isfinite(baseline):
            return None
        self.losses.append(float(loss))
        self.baselines.append(float(baseline))
        self.last_step = int(step)
        # Judged from the check step on, on a full window (every averaged step past warm-up), until
        # the first warning; so a run that ends stuck has been warned about by its last step.
        if self.warned or step < self.check_step or self._averaged() < self.window:
            return None
        if self.is_clearly_below():
            return None
        self.warned_step = int(step)
        mean_loss, mean_baseline = self.smoothed()
        return (
            f"after {step} of {self.total_steps} steps the loss ({mean_loss:.4g}, mean of "
            f"{_last_steps(self._averaged())}) is not clearly below the pretext's trivial baseline "
            f"({mean_baseline:.4g}, the '{BASELINE_KEY}' column of metrics.csv), so the pretext is not "
            f"learning from this data (docs/pretraining.md says what to check and what helped on real data)."
        )

    def summary(self) -> str | None:
        """Where the run ended relative to the baseline, as a clause for the final message.

        It uses the warning's verdict, and says so when the two differ in time: a run warned about
        that later got clearly below its baseline, or one too short to be judged at all.
        """
        values = self.smoothed()
        if values is None:
            return None
        mean_loss, mean_baseline = values
        if mean_baseline > 0:
            relative = f"{100 * mean_loss / mean_baseline:.0f} % of"
        else:
            relative = "against"
        if self.is_clearly_below():
            verdict = "clearly below it"
            if self.warned:
                verdict += f" by the end, though not at step {self.warned_step} when the warning was given"
        else:
            verdict = "not clearly below it"
            if self.last_step < self.check_step:
                verdict += f"; a run is judged from step {self.check_step} on, so this one is too short to tell"
        return (
            f"mean loss of {_last_steps(self._averaged())} {mean_loss:.4g}, {relative} the trivial "
            f"baseline {mean_baseline:.4g} ({verdict})"
        )

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps so that a resumed run judges as an uninterrupted one would."""
        return {"losses": list(self.losses), "baselines": list(self.baselines),
                "last_step": self.last_step, "warned_step": self.warned_step}

    def load_state_dict(self, state: Any) -> None:
        """Take back :meth:`state_dict`; raise ValueError, changing nothing, when it is malformed."""
        try:
            losses = [float(v) for v in state["losses"]]
            baselines = [float(v) for v in state["baselines"]]
            last_step, warned_step = int(state["last_step"]), int(state["warned_step"])
        except (KeyError, TypeError, ValueError, OverflowError):
            raise ValueError("expected the lists 'losses' and 'baselines' and the steps 'last_step', 'warned_step'") from None
        if len(losses) != len(baselines) or last_step < 0 or warned_step < 0:
            raise ValueError("the lists 'losses' and 'baselines' differ in length, or a step is negative")
        self.losses.clear()
        self.baselines.clear()
        self.losses.extend(losses)
        self.baselines.extend(baselines)
        self.last_step, self.warned_step = last_step, warned_step


def _last_steps(count: int) -> str:
    return "the last step" if count == 1 else f"the last {count} steps"
