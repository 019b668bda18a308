"""Checks of the training engine on whichever Keras backend KERAS_BACKEND selects, run as
subprocesses by tests/model/test_engine.py (the test suite itself runs on TensorFlow):

    KERAS_BACKEND=jax python -m tests.model.engine_checks compiles schedule-variable
    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python -m tests.model.engine_checks data-parallel

The last line printed is one JSON object, each check's results under its name: what the
tests assert on.

The model is a small ferflow-shaped classifier (the same input, backbone, features and
output layers as ferflow.training.model builds, with two convolutions for a backbone), so a JAX
compile takes a second, not the DenseNet's minute.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from ferflow.training.model import BACKBONE_NAME, FEATURES_NAME, INPUT_NAME, OUTPUT_NAME
from ferflow.training.runtime import configure_runtime, count_compiles, distribution_scope
from ferflow.training.train import fine_tune, fit_head, training_input
from tests.model.conftest import synthetic_faces, tiny_params

SIZE = 32


def small_ferflow_model(size: int = SIZE, classes: int = 7, seed: int = 0) -> keras.Model:
    """pixels (n, S, S) -> backbone (2 convolutions, BatchNorm) -> features -> softmax."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((size, size, 1))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(image)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    backbone = keras.Model(image, x, name=BACKBONE_NAME)
    pixels = keras.Input((size, size), name=INPUT_NAME)
    x = keras.layers.Rescaling(1 / 255.0)(keras.layers.Reshape((size, size, 1))(pixels))
    features = keras.layers.GlobalAveragePooling2D(name=FEATURES_NAME)(backbone(x, training=False))
    hidden = keras.layers.Dense(16, activation="relu")(features)
    outputs = keras.layers.Dense(classes, activation="softmax", dtype="float32", name=OUTPUT_NAME)(hidden)
    return keras.Model(pixels, outputs, name="ferflow_small")


def faces(params, per_class: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    return synthetic_faces(params, per_class, split)


def check_compiles() -> dict:
    """Both phases and an evaluation pass over row counts that are not multiples of the batch."""
    from ferflow.evaluation.evaluate import predict_probabilities

    params = tiny_params(
        f"base.image_size={SIZE}",
        f"model.input_size={SIZE}",
        "train.epochs=2",
        "train.cache_features=false",
        "train.batch_size=16",
        "finetune.epochs=3",
        "finetune.optimizer=adam",
        "finetune.augment.horizontal_flip=true",
        "finetune.augment.erasing=0.5",
    )
    configure_runtime(params)
    train, val = faces(params, 5, "train"), faces(params, 3, "val")  # 35 and 21 rows, batch 16
    model = small_ferflow_model()
    work = Path(tempfile.mkdtemp(prefix="engine-compiles-"))
    with count_compiles() as phase1:
        fit_head(model, train, val, params, work / "head")
    with count_compiles() as phase2:
        records = fine_tune(model, train, val, params, work / "tune", 2)
    with count_compiles() as evaluation:
        probs = predict_probabilities(model.predict_on_batch, val[0], 16, tta_flip=True)
    inputs = training_input((np.zeros((32, 4), "uint8"), np.zeros((32, 7), "float32")), 16, 0)
    return {
        "training_input": type(inputs["x"]).__name__,
        "batch_on_device": type(inputs["x"][0][0]).__module__.startswith("jax"),
        "rows": {"train": len(train[0]), "val": len(val[0])},
        "phase1": dict(phase1),
        "phase2": dict(phase2),
        "evaluate": dict(evaluation),
        "epochs": [r["epoch"] for r in records],
        "val_accuracy": [r["val_accuracy"] for r in records],
        "probs_shape": list(probs.shape),
    }


def check_schedule_variable() -> dict:
    """The compiled train step reads the schedule's end from the optimizer variable: once it
    is moved to the current step, the rate is at its floor (0) and plain SGD changes no
    weight in the next epoch."""
    from ferflow.training.schedules import WarmupSchedule

    params = tiny_params(f"base.image_size={SIZE}", f"model.input_size={SIZE}")
    x, y = faces(params, 4, "train")
    model = small_ferflow_model()
    schedule = WarmupSchedule("cosine", 0.1, total_steps=1000, final_fraction=0.0)
    optimizer = keras.optimizers.SGD(schedule)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    optimizer.build(model.trainable_variables)
    total = schedule.track_total(optimizer)
    onehot = keras.utils.to_categorical(y, 7)
    initial = [np.array(v) for v in model.trainable_variables]
    model.fit(x.astype("float32"), onehot, batch_size=4, epochs=1, shuffle=False, verbose=0)
    before = [np.array(v) for v in model.trainable_variables]
    moved_while_running = max(np.abs(a - b).max() for a, b in zip(before, initial, strict=True))
    total.assign(float(int(optimizer.iterations.numpy())))  # the schedule ends here
    model.fit(x.astype("float32"), onehot, batch_size=4, epochs=1, shuffle=False, verbose=0)
    after = [np.array(v) for v in model.trainable_variables]
    return {
        "max_change_before_end": float(moved_while_running),
        "max_change_after_end": float(max(np.abs(a - b).max() for a, b in zip(after, before, strict=True))),
        "learning_rate_after_end": float(np.array(optimizer.learning_rate)),
    }


def check_data_parallel() -> dict:
    """Phase 2 data-parallel over every local device (run with 2 forced host devices)."""
    import jax

    params = tiny_params(
        f"base.image_size={SIZE}",
        f"model.input_size={SIZE}",
        "train.batch_size=8",
        "runtime.data_parallel=all",
        "finetune.epochs=2",
        "finetune.optimizer=adam",
        "finetune.train_batchnorm=true",
    )
    configure_runtime(params)
    train, val = faces(params, 5, "train"), faces(params, 2, "val")
    work = Path(tempfile.mkdtemp(prefix="engine-dp-"))
    with distribution_scope("auto"):  # auto means GPUs: none here, so one device
        auto_distribution = keras.distribution.distribution()
    with distribution_scope(params.runtime.data_parallel):
        distribution = keras.distribution.distribution()
        model = small_ferflow_model()
        with count_compiles() as compiles:
            records = fine_tune(model, train, val, params, work / "tune")
        layout = distribution.get_data_layout((8, SIZE, SIZE))
        replicas_equal = []
        for variable in model.trainable_variables:
            shards = [np.asarray(s.data) for s in variable.value.addressable_shards]
            replicas_equal.append(
                len(shards) == len(jax.devices()) and all(np.array_equal(shards[0], s) for s in shards)
            )
    return {
        "devices": len(jax.devices()),
        "mesh_devices": int(distribution.device_mesh.devices.size),
        "batch_axis": layout.axes[0],
        "losses": [r["loss"] for r in records],
        "replicas_equal": all(replicas_equal),
        "train_step_compiles": compiles.get("jit(train_step)", 0),
        "auto_on_cpu_distributes": auto_distribution is not None,
    }


CHECKS = {
    "compiles": check_compiles,
    "schedule-variable": check_schedule_variable,
    "data-parallel": check_data_parallel,
}


def main(argv: list[str]) -> int:
    """Runs the named checks in one process (JAX starts once); prints {check: result}."""
    results: dict = {"backend": keras.backend.backend()}
    for name in argv:
        started = time.perf_counter()
        results[name] = CHECKS[name]() | {"seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
