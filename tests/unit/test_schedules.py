"""Learning-rate schedules: values at chosen steps, and the optimizers they drive."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from ferflow.schedules import WarmupSchedule, make_optimizer, schedule_for


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
