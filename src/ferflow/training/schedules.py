"""Learning-rate schedules and optimizers, computed per step inside the optimizer.

A Keras `LearningRateSchedule` is evaluated from the optimizer's own step counter inside
the compiled train step, so every backend sees the same values at every step. (A callback
that sets the learning rate per batch does not: the JAX trainer reads variables only at
the start of an epoch.)

Kinds (`finetune.schedule`), with `w` warmup steps, `T` total steps and peak rate `lr`:

- `constant`: `lr` (after a linear warmup from `lr / w` when `w > 0`): the study's.
- `cosine`: linear warmup from `lr / w` to `lr`, then half a cosine from `lr` to
  `lr * final_fraction` at step `T`.
- `onecycle`: warmup from `lr / 25` to `lr` (a cosine ramp over `w`, or the first 30% of
  `T` when no warmup is given), then half a cosine down to `lr / 25 / 1e4`.

Past `T` every schedule stays at its last value. `T` can move during training
(`track_total`): under `finetune.epochs: auto` the time budget (ferflow.training.budget) sets it from
the epochs it plans, so the schedule ends where the budget does.

Why not Keras' `CosineDecay(warmup_target=..., warmup_steps=...)`: its `decay_steps` is a
Python number compiled into the train step, so it cannot follow the budget's plan; it has
no one-cycle form; and its `cosine` values are these shifted by one step after the warmup
(this schedule holds the peak for two steps; tests/unit/test_schedules.py pins the relation).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import keras
from keras import ops

ScheduleKind = Literal["constant", "cosine", "onecycle"]
ONECYCLE_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e4
ONECYCLE_DEFAULT_WARMUP = 0.3


@keras.saving.register_keras_serializable(package="ferflow")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate at optimizer step `step` (0-based) for one of the kinds above."""

    def __init__(
        self,
        kind: ScheduleKind,
        peak: float,
        total_steps: int,
        warmup_steps: int = 0,
        final_fraction: float = 0.0,
    ) -> None:
        if kind not in ("constant", "cosine", "onecycle"):
            raise ValueError(f"schedule kind {kind!r}: use constant, cosine or onecycle")
        if total_steps < 1 or warmup_steps < 0:
            raise ValueError(
                f"schedule needs total_steps >= 1 and warmup_steps >= 0 ({total_steps}, {warmup_steps})"
            )
        self.kind, self.peak = kind, float(peak)
        self.total_steps, self.final_fraction = int(total_steps), float(final_fraction)
        if kind == "onecycle" and warmup_steps == 0:
            warmup_steps = max(1, int(ONECYCLE_DEFAULT_WARMUP * total_steps))
        self.warmup_steps = min(int(warmup_steps), self.total_steps)
        self.total_variable: Any = None

    def track_total(self, optimizer: keras.optimizers.Optimizer) -> Any:
        """Make `T` a variable of `optimizer`, returned: assigning it moves the schedule's end.

        An optimizer variable, because that is what the compiled step reads afresh: the JAX
        trainer passes the optimizer's variables into its jitted step at every epoch start,
        while any other Python value or variable would be frozen into the compiled program.
        """
        if self.total_variable is None:
            initial = keras.initializers.Constant(float(self.total_steps))
            self.total_variable = optimizer.add_variable((), initial, "float32", name="schedule_total_steps")
        return self.total_variable

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        peak = self.peak
        warmup = float(self.warmup_steps)
        if self.kind == "onecycle":
            start, end = peak / ONECYCLE_DIV, peak / ONECYCLE_DIV / ONECYCLE_FINAL_DIV
            ramp = ops.clip(step / max(warmup, 1.0), 0.0, 1.0)
            rising = start + (peak - start) * 0.5 * (1.0 - ops.cos(math.pi * ramp))
        else:
            end = peak * self.final_fraction
            rising = peak * ops.minimum((step + 1.0) / max(warmup, 1.0), 1.0)
        if self.kind == "constant":
            return rising
        total = float(self.total_steps) if self.total_variable is None else self.total_variable
        span = ops.maximum(ops.cast(total, "float32") - warmup, 1.0)
        progress = ops.clip((step - warmup) / span, 0.0, 1.0)
        falling = end + (peak - end) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < warmup, rising, falling)

    def get_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "final_fraction": self.final_fraction,
        }


def make_optimizer(
    name: str,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    ema_momentum: float | None = None,
    nesterov: bool = False,
) -> keras.optimizers.Optimizer:
    """sgd (with momentum, optionally Nesterov's), adam or adamw.

    `weight_decay` is decoupled (Keras' `weight_decay`: each step shrinks the weights by
    rate x decay) for adamw and sgd; adam takes none.

    `ema_momentum`: keep an exponential moving average of the weights (Keras' `use_ema`);
    `fit` writes the average into the model when it ends, so the average is what is saved.
    """
    ema: dict[str, Any] = {} if ema_momentum is None else {"use_ema": True, "ema_momentum": ema_momentum}
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, **ema)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay, **ema)
    if name == "sgd":
        decay = {"weight_decay": weight_decay} if weight_decay else {}
        return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=nesterov, **decay, **ema)
    raise ValueError(f"optimizer {name!r}: use sgd, adam or adamw")


def schedule_for(
    kind: ScheduleKind,
    peak: float,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    final_fraction: float = 0.0,
) -> float | WarmupSchedule:
    """The optimizer's learning rate: a plain float for an unwarmed constant rate (the
    study's optimizer exactly), else a `WarmupSchedule` over `epochs x steps_per_epoch`."""
    if kind == "constant" and warmup_epochs == 0:
        return peak
    total = max(1, epochs * steps_per_epoch)
    return WarmupSchedule(kind, peak, total, round(warmup_epochs * steps_per_epoch), final_fraction)
