"""The training engine on JAX (the GPU workers' backend), checked on the CPU in subprocesses
(tests/model/engine_checks.py): one compile per step function whatever the row count, a
schedule whose end the compiled step reads from a variable, and data-parallel phase 2 over
two host devices. The same checks run in-process on the suite's own backend where they
are backend-independent."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def run_checks(*checks: str, env: dict[str, str] | None = None) -> dict:
    pytest.importorskip("jax")
    done = subprocess.run(
        [sys.executable, "-m", "tests.model.engine_checks", *checks],
        cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax"
    return result


@pytest.fixture(scope="module")
def jax_checks() -> dict:
    return run_checks("compiles", "schedule-variable")


def test_each_phase_compiles_its_train_and_predict_steps_once_on_jax(jax_checks):
    # given 35 train and 21 val rows at batch 16 (neither a multiple of the batch)
    result = jax_checks["compiles"]
    assert result["rows"] == {"train": 35, "val": 21}
    # then phase 1, phase 2 and evaluation each compile each step function exactly once
    for phase in ("phase1", "phase2"):
        assert result[phase].get("jit(train_step)") == 1, result[phase]
        assert result[phase].get("jit(predict_step)") == 1, result[phase]
        assert "jit(test_step)" not in result[phase], result[phase]
    assert result["evaluate"] == {"jit(predict_step)": 1}
    # and phase 2 gathered its batches on the device from data put there once
    assert result["training_input"] == "EpochBatches" and result["batch_on_device"]
    assert result["probs_shape"] == [21, 7]
    assert result["epochs"] == [2, 3, 4]


def test_the_compiled_step_reads_the_schedule_end_from_its_variable_on_jax(jax_checks):
    result = jax_checks["schedule-variable"]
    assert result["max_change_before_end"] > 0  # the rate was not 0 before
    assert result["learning_rate_after_end"] == 0.0
    assert result["max_change_after_end"] == 0.0  # a frozen end would still move the weights


def test_the_schedule_end_moves_on_the_suites_backend_too():
    from tests.model.engine_checks import check_schedule_variable

    result = check_schedule_variable()

    assert result["max_change_before_end"] > 0
    assert result["max_change_after_end"] == 0.0


def test_phase_2_trains_data_parallel_over_two_host_devices_on_jax():
    result = run_checks("data-parallel", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})[
        "data-parallel"
    ]
    assert result["devices"] == 2 and result["mesh_devices"] == 2
    assert result["batch_axis"] == "batch"  # each batch is split between the devices
    assert all(0 < loss < 10 for loss in result["losses"])
    assert result["replicas_equal"]  # every weight is the same on both replicas
    assert result["train_step_compiles"] == 1
    assert not result["auto_on_cpu_distributes"]  # data_parallel: auto spreads over GPUs only


def test_epoch_batches_cover_every_row_each_epoch_in_an_order_drawn_from_seed_and_epoch():
    import numpy as np

    from ferflow.training.train import EpochBatches

    labels = np.arange(48)
    arrays = (labels[:, None] * np.ones((1, 3), "uint8"), labels)
    batches = EpochBatches(arrays, 16, seed=0)

    def epoch(data: EpochBatches) -> list[int]:
        rows = [int(r) for index in range(len(data)) for r in np.asarray(data[index][1])]
        data.on_epoch_end()
        return rows

    first, second = epoch(batches), epoch(batches)
    assert len(batches) == 3
    assert sorted(first) == sorted(second) == list(range(48))
    assert first != second
    # a dataset started at epoch 1 (a resumed run) draws epoch 1's order again
    assert epoch(EpochBatches(arrays, 16, seed=0, first_epoch=1)) == second
    # and skipping its first batch leaves exactly the rows of the other two, in order
    resumed = EpochBatches(arrays, 16, seed=0, first_epoch=1, skip=1)
    assert len(resumed) == 2 and epoch(resumed) == second[16:]
    with pytest.raises(ValueError, match="not whole batches"):
        EpochBatches((labels[:40],), 16)
    with pytest.raises(ValueError, match="cannot skip 3"):
        EpochBatches(arrays, 16, skip=3)


def test_a_budget_boxed_auto_run_ends_inside_its_budget_with_the_schedule_at_its_floor(tmp_path):
    # given phase 2 with epochs: auto in a 12 s budget, epochs made ~0.4 s long and steady
    # (the first epoch, which traces the step, must take under half the budget: the guard
    # judges by it until there is a steady epoch; on a loaded 2-core CI machine it took >3 s)
    import time

    import keras

    from ferflow.training.train import fine_tune
    from tests.model.conftest import synthetic_faces, tiny_params
    from tests.model.engine_checks import SIZE, small_ferflow_model

    class SlowEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            time.sleep(0.4)

    params = tiny_params(
        f"base.image_size={SIZE}",
        f"model.input_size={SIZE}",
        "finetune.epochs=auto",
        "finetune.time_budget_s=12",
        "finetune.schedule=cosine",
        "finetune.warmup_epochs=1",
        "finetune.final_lr_fraction=0.0",
        "finetune.optimizer=adam",
    )
    train, val = synthetic_faces(params, 3, "train"), synthetic_faces(params, 2, "val")
    started = time.perf_counter()
    # when it trains
    records = fine_tune(small_ferflow_model(), train, val, params, tmp_path / "tune", 0, [SlowEpochs()])
    elapsed = time.perf_counter() - started
    # then it ran the epochs it planned, the last one ending the schedule, inside the budget
    assert len(records) >= 3
    assert records[-1]["epochs_planned"] == len(records)
    assert records[-1]["learning_rate"] == pytest.approx(0.0, abs=1e-7)
    assert records[1]["learning_rate"] > 0.1 * params.finetune.learning_rate
    assert elapsed <= 12.0 + 3.0  # the budget counts from fit's start; model set-up comes before


def test_class_weights_reach_phase_two_loss(tmp_path):
    # given imbalanced faces (class 0 six times as frequent as the others)
    import numpy as np

    from ferflow.training.train import fine_tune
    from tests.model.conftest import synthetic_faces, tiny_params
    from tests.model.engine_checks import SIZE, small_ferflow_model

    base = (
        f"base.image_size={SIZE}",
        f"model.input_size={SIZE}",
        "finetune.epochs=1",
        "runtime.deterministic=true",
    )
    params = tiny_params(*base)
    x, y = synthetic_faces(params, 6, "train")
    keep = (y == 0) | (np.arange(len(y)) % 6 == 0)
    train, val = (x[keep], y[keep]), synthetic_faces(params, 2, "val")
    # when phase 2 trains from the same weights without, with sqrt and with balanced class weights
    losses = {}
    for weighted in (False, "sqrt", True):
        tuned = tiny_params(*base, f"finetune.class_weights={weighted}")
        records = fine_tune(small_ferflow_model(), train, val, tuned, tmp_path / str(weighted))
        losses[weighted] = records[0]["loss"]
    # then each weighted loss is another number: the weights reached the loss
    assert np.isfinite(losses[True]) and losses[True] != pytest.approx(losses[False], rel=1e-3)
    assert np.isfinite(losses["sqrt"]) and losses["sqrt"] != pytest.approx(losses[False], rel=1e-3)
    assert losses["sqrt"] != pytest.approx(losses[True], rel=1e-3)


def test_ema_reaches_phase_two_and_its_average_is_the_model_it_leaves(tmp_path):
    # given the same start, data and seed (deterministic), phase 2 with and without an EMA
    import numpy as np

    from ferflow.training.train import fine_tune
    from tests.model.conftest import synthetic_faces, tiny_params
    from tests.model.engine_checks import SIZE, small_ferflow_model

    base = (f"base.image_size={SIZE}", f"model.input_size={SIZE}", "finetune.epochs=2")
    params = tiny_params(*base, "runtime.deterministic=true")
    train, val = synthetic_faces(params, 4, "train"), synthetic_faces(params, 2, "val")
    weights = {}
    for run, ema in (("last", "null"), ("last again", "null"), ("average", "0.9")):
        model = small_ferflow_model()
        tuned = tiny_params(*base, "runtime.deterministic=true", f"finetune.ema_momentum={ema}")
        fine_tune(model, train, val, tuned, tmp_path / run)
        weights[run] = np.concatenate([np.ravel(w) for w in model.get_weights()])
    # then without EMA the run repeats exactly, and with it the model left behind is another
    # one: the average, not the last step's weights
    np.testing.assert_allclose(weights["last again"], weights["last"], atol=1e-6)
    assert np.all(np.isfinite(weights["average"]))
    assert not np.allclose(weights["average"], weights["last"], atol=1e-6)


def test_a_run_stopped_mid_epoch_resumes_exactly_on_jax_too():
    pytest.importorskip("jax")
    test = (
        "tests/unit/test_mid_epoch_resume.py::"
        "test_a_run_stopped_mid_epoch_resumes_after_its_last_backed_up_batch_and_ends_as_if_never_stopped"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-3000:]
