"""The wall-clock budget of a time-boxed phase 2 (its guard and `epochs: auto` planning),
and the JAX compilation cache switch."""

from __future__ import annotations

import time
from types import SimpleNamespace

import keras

from ferflow.training.budget import TimeBudget
from ferflow.training.runtime import configure_compilation_cache


def run_epochs(budget: TimeBudget, seconds: list[float]) -> int:
    """Drive the callback through epochs of the given lengths; return how many ran."""
    model = SimpleNamespace(stop_training=False)
    budget.set_model(model)
    budget.on_train_begin()
    for epoch, length in enumerate(seconds):
        budget.on_epoch_begin(epoch)
        time.sleep(length)
        budget.on_epoch_end(epoch)
        if model.stop_training:
            return epoch + 1
    return len(seconds)


def test_training_stops_before_an_epoch_that_would_overrun_the_budget():
    # 0.1 s epochs in a 0.35 s budget: after 3 epochs (0.3 s) a 4th would end at 0.4 s
    assert run_epochs(TimeBudget(0.35), [0.1] * 10) == 3


def test_a_budget_that_fits_every_epoch_never_stops_training():
    assert run_epochs(TimeBudget(60.0), [0.01] * 5) == 5


class FakeClock:
    """A clock the test advances: epochs of exact lengths, whatever the machine is doing."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TotalSteps:
    """Stands in for the schedule's total-steps variable."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def assign(self, value: float) -> None:
        self.values.append(value)


def drive(budget: TimeBudget, clock: FakeClock, lengths: list[float]) -> list[dict]:
    """Run epochs of the given lengths on the fake clock; return each epoch's logs."""
    model = SimpleNamespace(stop_training=False)
    budget.set_model(model)
    budget.on_train_begin()
    logs_seen = []
    for epoch, length in enumerate(lengths):
        budget.on_epoch_begin(epoch)
        clock.now += length
        logs: dict = {}
        budget.on_epoch_end(epoch, logs)
        logs_seen.append(logs)
        if model.stop_training:
            break
    return logs_seen


def test_the_guard_judges_by_the_steady_epochs_not_the_compile_epoch():
    # given a cold start: epoch 1 compiles for 100 s, later epochs take 4 s, budget 400 s
    clock = FakeClock()
    budget = TimeBudget(400.0, clock=clock)
    # when it runs fixed epochs
    ran = drive(budget, clock, [100.0] + [4.0] * 200)
    # then it trains until the next steady epoch would overrun: 1 + 75 epochs (100 + 75 x 4 = 400)
    assert len(ran) == 76


def test_auto_epochs_plan_from_the_steady_epochs_and_move_the_schedule_end():
    # given epochs: auto, a 400 s budget, 10 steps an epoch, a 100 s compile epoch, 4 s epochs
    clock, total = FakeClock(), TotalSteps()
    budget = TimeBudget(400.0, plan=True, total_steps=total, steps_per_epoch=10, clock=clock, margin=0.05)
    # when it runs
    ran = drive(budget, clock, [100.0] + [4.0] * 200)
    # then after the first steady epoch it plans 2 + floor(296 / 4.2) = 72 epochs and ends
    # the schedule at that epoch's last step; the margin it did not need is planned in as it
    # goes, and the run ends at its last planned epoch, with the schedule, inside the budget
    assert ran[1]["epochs_planned"] == 72.0 and total.values[0] == 720.0
    assert len(ran) == ran[-1]["epochs_planned"] == 75
    assert total.values[-1] == 750.0
    assert clock.now <= 400.0


def test_auto_epochs_replan_when_epochs_slow_down():
    clock, total = FakeClock(), TotalSteps()
    budget = TimeBudget(100.0, plan=True, total_steps=total, steps_per_epoch=1, clock=clock, margin=0.0)
    # epochs double in length halfway: the plan shrinks, the schedule end with it
    ran = drive(budget, clock, [10.0] + [2.0] * 10 + [4.0] * 100)
    assert total.values[0] == 2 + 44  # 88 s left at 2 s an epoch
    assert total.values[-1] < total.values[0]
    assert len(ran) == ran[-1]["epochs_planned"]
    assert clock.now <= 100.0


def test_time_other_callbacks_spend_after_an_epoch_counts_in_the_plan():
    # given 1 s epochs after which a later callback (a backup, MLflow logging) spends 3 s,
    # outside the budget's own epoch_begin..epoch_end window
    clock, total = FakeClock(), TotalSteps()
    budget = TimeBudget(100.0, plan=True, total_steps=total, clock=clock, margin=0.0)
    model = SimpleNamespace(stop_training=False)
    budget.set_model(model)
    budget.on_train_begin()
    ran = 0
    while not model.stop_training:
        budget.on_epoch_begin(ran)
        clock.now += 1.0
        budget.on_epoch_end(ran, {})
        clock.now += 3.0  # the callbacks after it
        ran += 1
    # then the plan is made from 4 s epochs: 25 fit, not ~100
    assert ran == total.values[-1] == 25
    assert clock.now <= 100.0


def test_a_budget_too_short_for_a_second_epoch_stops_after_the_first():
    clock = FakeClock()
    budget = TimeBudget(150.0, plan=True, total_steps=TotalSteps(), clock=clock)
    assert len(drive(budget, clock, [100.0] + [4.0] * 10)) == 1


def test_the_compilation_cache_is_a_jax_switch(tmp_path, monkeypatch):
    monkeypatch.setenv("FERFLOW_COMPILATION_CACHE", str(tmp_path / "xla"))

    configured = configure_compilation_cache(None)

    if keras.backend.backend() == "jax":
        assert configured == (tmp_path / "xla").resolve() and configured.is_dir()
    else:  # TensorFlow and PyTorch keep no persistent cache: nothing is created
        assert configured is None and not (tmp_path / "xla").exists()


def small_model() -> keras.Model:
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(3)(inputs))


def test_the_divergence_guard_stops_on_weights_that_are_not_finite():
    import numpy as np

    from ferflow.training.callbacks import DivergenceGuard

    model = small_model()
    guard = DivergenceGuard()
    guard.set_model(model)
    guard.on_epoch_end(0, {"loss": 1.9})  # healthy: nothing happens
    assert guard.problem is None and not getattr(model, "stop_training", False)
    kernel = model.layers[-1].kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))

    guard.on_epoch_end(1, {"loss": 1.8})  # the loss alone looks fine

    assert model.stop_training
    assert guard.problem.startswith("epoch 2: 1 weight tensors hold NaN or infinite values")


def test_the_divergence_guard_stops_on_an_exploding_loss():
    from ferflow.training.callbacks import DivergenceGuard

    model = small_model()
    guard = DivergenceGuard()
    guard.set_model(model)
    guard.on_epoch_end(0, {"loss": 2.0})
    guard.on_epoch_end(1, {"loss": 40.0})  # 20x: noisy but under the 50x factor
    assert guard.problem is None

    guard.on_epoch_end(2, {"loss": 3.6e8})

    assert guard.problem == "epoch 3: the loss exploded to 3.6e+08 (first epoch 2)"
    assert model.stop_training


def test_jit_compile_auto_means_xla_on_jax_only():
    from ferflow.training.runtime import resolve_jit_compile

    assert resolve_jit_compile("auto") is (keras.backend.backend() == "jax")
    assert resolve_jit_compile(True) is True and resolve_jit_compile(False) is False
