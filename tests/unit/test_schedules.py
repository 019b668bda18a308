"""Learning-rate schedules: values at chosen steps, and the optimizers they drive."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from ferflow.training.schedules import WarmupSchedule, make_optimizer, schedule_for


def lr(schedule: WarmupSchedule, step: int) -> float:
    return float(keras.ops.convert_to_numpy(schedule(step)))


def test_cosine_warms_up_linearly_then_decays_to_the_final_fraction():
    schedule = WarmupSchedule("cosine", peak=1.0, total_steps=110, warmup_steps=10, final_fraction=0.1)

    assert lr(schedule, 0) == pytest.approx(0.1)  # (0 + 1) / 10
    assert lr(schedule, 4) == pytest.approx(0.5)
    assert lr(schedule, 10) == pytest.approx(1.0)  # the peak right after warmup
    assert lr(schedule, 60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way down the cosine
    assert lr(schedule, 110) == pytest.approx(0.1)
    assert lr(schedule, 500) == pytest.approx(0.1)  # stays at the end value


def test_onecycle_rises_from_a_25th_of_the_peak_and_anneals_to_almost_zero():
    schedule = WarmupSchedule("onecycle", peak=2.0, total_steps=100)

    assert schedule.warmup_steps == 30  # 30% of the run when no warmup is given
    assert lr(schedule, 0) == pytest.approx(2.0 / 25)
    assert lr(schedule, 15) == pytest.approx(2.0 / 25 + (2.0 - 2.0 / 25) * 0.5, rel=1e-5)
    assert lr(schedule, 30) == pytest.approx(2.0)
    assert lr(schedule, 100) == pytest.approx(2.0 / 25 / 1e4, rel=1e-3)
    values = [lr(schedule, s) for s in range(30, 101, 10)]
    assert values == sorted(values, reverse=True)


def test_constant_with_warmup_holds_the_peak_after_warmup():
    schedule = WarmupSchedule("constant", peak=0.01, total_steps=50, warmup_steps=5)

    assert lr(schedule, 1) == pytest.approx(0.004)
    assert [lr(schedule, s) for s in (5, 20, 49, 80)] == pytest.approx([0.01] * 4)


def test_a_constant_rate_without_warmup_is_the_plain_float_of_the_study():
    assert schedule_for("constant", 1e-3, epochs=20, steps_per_epoch=100) == 1e-3
    schedule = schedule_for("cosine", 1e-3, epochs=20, steps_per_epoch=100, warmup_epochs=1.5)
    assert isinstance(schedule, WarmupSchedule)
    assert (schedule.total_steps, schedule.warmup_steps) == (2000, 150)


def test_the_schedule_round_trips_through_its_config():
    schedule = WarmupSchedule("cosine", peak=0.5, total_steps=40, warmup_steps=4, final_fraction=0.2)

    again = WarmupSchedule.from_config(schedule.get_config())

    assert [lr(again, s) for s in (0, 10, 39)] == pytest.approx([lr(schedule, s) for s in (0, 10, 39)])


def test_the_optimizer_reads_the_schedule_at_its_own_step():
    schedule = WarmupSchedule("cosine", peak=1.0, total_steps=10, warmup_steps=0)
    optimizer = make_optimizer("adamw", schedule, weight_decay=0.01)
    variable = keras.Variable(np.ones(3, "float32"))
    optimizer.build([variable])
    for _ in range(5):
        optimizer.apply_gradients([(keras.ops.ones(3), variable)])

    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert float(optimizer.learning_rate) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


@pytest.mark.parametrize(
    ("name", "kind"),
    [("sgd", keras.optimizers.SGD), ("adam", keras.optimizers.Adam), ("adamw", keras.optimizers.AdamW)],
)
def test_each_optimizer_name_gives_its_keras_optimizer(name, kind):
    assert type(make_optimizer(name, 0.1, momentum=0.9, weight_decay=0.01)) is kind


def test_a_bad_schedule_kind_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'linear'"):
        WarmupSchedule("linear", 1.0, 10)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_with_ema_the_saved_weights_are_the_average_of_the_steps(name):
    # given a one-weight linear model trained 6 steps with an EMA of momentum 0.5
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(make_optimizer(name, 0.1, ema_momentum=0.5), "mse")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(keras.ops.convert_to_numpy(self.model.trainable_weights[0])[0, 0]))

    x = np.arange(1, 7, dtype="float32").reshape(6, 1)
    model.fit(x, 3 * x, batch_size=1, epochs=1, shuffle=False, verbose=0, callbacks=[Record()])
    # when fit ends, then the model holds Keras' average of the 6 weights it stepped through:
    # the first step's weight, then 0.5 x average + 0.5 x weight after each later step
    average = seen[0]
    for weight in seen[1:]:
        average = 0.5 * average + 0.5 * weight
    final = float(keras.ops.convert_to_numpy(model.trainable_weights[0])[0, 0])
    assert len(seen) == 6 and seen[-1] != pytest.approx(average)
    assert final == pytest.approx(average, rel=1e-5)


def test_without_ema_the_saved_weights_are_the_last_step():
    optimizer = make_optimizer("adamw", 0.1)
    assert not optimizer.use_ema
    assert make_optimizer("sgd", 0.1, ema_momentum=0.999).ema_momentum == pytest.approx(0.999)
    assert isinstance(optimizer, keras.optimizers.AdamW)


def test_nesterov_sgd_looks_ahead_and_sgd_takes_decoupled_weight_decay():
    # given one weight at 1.0 and a constant gradient of 1.0
    def step(optimizer, times=2):
        weight = keras.Variable(1.0)
        for _ in range(times):
            optimizer.apply_gradients([(keras.ops.convert_to_tensor(1.0), weight)])
        return float(keras.ops.convert_to_numpy(weight))

    # then plain momentum moves 0.1, then 0.1 + 0.9 x 0.1; Nesterov adds the look-ahead
    # (each step moves lr x g + momentum x the new velocity): 0.1 + 0.9 x 0.1, then 0.1 + 0.9 x 0.19
    assert step(make_optimizer("sgd", 0.1, momentum=0.9)) == pytest.approx(1 - 0.1 - 0.19)
    assert step(make_optimizer("sgd", 0.1, momentum=0.9, nesterov=True)) == pytest.approx(1 - 0.19 - 0.271)
    # and weight decay shrinks the weight by lr x decay x weight before each step
    assert step(make_optimizer("sgd", 0.1, weight_decay=0.5), times=1) == pytest.approx(1 - 0.05 - 0.1)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["finetune.nesterov=true"], "nesterov needs optimizer: sgd with momentum"),
        (
            ["finetune.optimizer=adam", "finetune.weight_decay=0.001"],
            "weight_decay needs optimizer adamw or sgd",
        ),
    ],
)
def test_optimizer_options_that_would_be_ignored_are_errors(overrides, message):
    from ferflow.config import ParamsError, apply_overrides, parse_params

    with pytest.raises(ParamsError, match=message):
        parse_params(apply_overrides({}, overrides))


# --- beside Keras' own schedule -----------------------------------------------------------


def test_cosine_is_keras_cosine_decay_with_the_peak_held_one_more_step():
    """Why WarmupSchedule is kept beside `keras.optimizers.schedules.CosineDecay` (with
    warmup): the values agree through the warmup, then ours lags by one step (it holds
    the peak for two steps), and Keras' `decay_steps` is a Python number compiled into the
    train step, so it cannot follow a time budget's plan (`track_total`)."""
    peak, total, warmup, final = 1e-3, 60, 8, 0.05
    ours = WarmupSchedule("cosine", peak, total, warmup, final)
    theirs = keras.optimizers.schedules.CosineDecay(
        peak / warmup, decay_steps=total - warmup, alpha=final, warmup_target=peak, warmup_steps=warmup - 1
    )

    def keras_lr(step: int) -> float:
        return float(keras.ops.convert_to_numpy(theirs(step)))

    for step in range(warmup):
        assert lr(ours, step) == pytest.approx(keras_lr(step), rel=1e-5), step
    for step in range(warmup, total + 5):
        assert lr(ours, step) == pytest.approx(keras_lr(step - 1), rel=1e-5), step
    assert lr(ours, warmup) != pytest.approx(keras_lr(warmup), rel=1e-5)  # the one step apart
