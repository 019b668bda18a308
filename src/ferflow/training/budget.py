"""The wall-clock budget of a phase (`finetune.time_budget_s`), and `finetune.epochs: auto`.

The first epoch of a process is not a guide to the others: it includes compiling the step
functions (on a cold H200, ~40-120 s of a 9-minute run, against ~4 s per later epoch). So
the budget plans from the *steady* epochs, those after the first:

- fixed epochs (repeatable runs): the phase stops before an epoch that would end past the
  budget, judged by the slowest steady epoch (the first epoch alone, before there is one);
  an epoch is measured end to end, from the previous epoch's end, so what the callbacks do
  between epochs (backups, MLflow logging) counts;
- `epochs: auto`: after every steady epoch the plan is `done + floor(left / per_epoch)`,
  `per_epoch` being the median steady epoch plus a margin. The learning-rate schedule's end
  moves with the plan (`WarmupSchedule.total_variable`, read inside the compiled step), so
  the schedule reaches its floor at the last planned epoch, inside the budget. The plan is
  in each epoch's logs (`epochs_planned`) and the phase's summary.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import keras

log = logging.getLogger(__name__)

AUTO_EPOCHS_CAP = 1000  # `fit`'s epochs under `epochs: auto`: the budget ends the phase long before
PLAN_MARGIN = 0.05  # per planned epoch, on top of the median steady epoch: noise, backups, logging


class TimeBudget(keras.callbacks.Callback):
    """Ends `fit` inside `seconds` of wall clock (from `fit`'s start). With `plan`, it plans
    the number of epochs (`epochs: auto`) and moves the end of a schedule, given its
    total-steps variable (`total_steps`), to the plan's last step."""

    def __init__(
        self,
        seconds: float,
        plan: bool = False,
        total_steps: Any = None,
        steps_per_epoch: int = 1,
        clock: Callable[[], float] = time.perf_counter,
        margin: float = PLAN_MARGIN,
    ) -> None:
        super().__init__()
        self.seconds, self.planning, self.total_steps = seconds, plan, total_steps
        self.steps_per_epoch = steps_per_epoch
        self.clock, self.margin = clock, margin
        self.started = self.last_end = clock()
        # seconds of each epoch of this `fit`, end to end: what the callbacks after this one
        # do at an epoch's end (backups, MLflow logging) is part of the epoch it follows
        self.lengths: list[float] = []
        self.planned: int | None = None
        self._begun = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        # A resumed epoch is a `fit` of its own before the rest (ferflow.training.backup.fit_resuming):
        # the budget and the epoch lengths run on from the phase's first `fit`.
        if self._begun:
            return
        self._begun = True
        self.started = self.last_end = self.clock()
        self.lengths = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        now = self.clock()
        self.lengths.append(now - self.last_end)
        self.last_end = now
        elapsed, done = now - self.started, epoch + 1
        steady = self.lengths[1:]
        if self.planning and steady:
            # the plan alone decides: it stops when the next epoch, at the median steady
            # length plus the margin, would not fit; a guard judging by the slowest epoch
            # could stop one epoch before the plan, and so before the schedule's floor
            self._plan(done, elapsed, statistics.median(steady), logs)
            if self.planned is not None and self.planned <= done:
                self.model.stop_training = True
            return
        worst = max(steady) if steady else self.lengths[0]
        if elapsed + worst > self.seconds:
            log.warning(
                "stopping after epoch %d: the next would end past the %.0f s budget (%.0f s used, "
                "epochs take %.1f s)%s",
                done,
                self.seconds,
                elapsed,
                worst,
                "" if self.planning else "; the schedule was planned for more epochs",
            )
            self.model.stop_training = True

    def _plan(self, done: int, elapsed: float, median: float, logs: dict[str, Any] | None) -> None:
        per_epoch = median * (1.0 + self.margin)
        planned = max(done, done + math.floor((self.seconds - elapsed) / per_epoch))
        if planned != self.planned:
            if self.total_steps is not None:
                self.total_steps.assign(float(planned * self.steps_per_epoch))
            if self.planned is None:
                log.info(
                    "epochs: auto -> %d (steady epoch %.1f s, %.0f s of %.0f s used)",
                    planned,
                    median,
                    elapsed,
                    self.seconds,
                )
            self.planned = planned
        if logs is not None:
            logs["epochs_planned"] = float(planned)
