"""What ferflow's training callbacks cost in a phase-2 epoch, against a bare fit, and what
the per-step host sync cost that they no longer make.

One model (the study's DenseNet169 at 48 px, random weights, backbone open, BatchNorm frozen,
SGD 1e-3 as `fine_tune` compiles it; BENCH_BACKBONE=densenet121 for a lighter one) is
compiled once, then `fit` runs 2 epochs with each callback set in turn, all sets twice
(round-robin, so drift on the shared machine spreads over all of them). Printed: median
wall and CPU seconds per epoch, images/s and the ratio to the bare fit.

"per-step sync" is what phase 2 ran before: Keras' TerminateOnNaN and a last-batch-loss
callback read the loss as a Python float after every batch, on the main thread, so the
loop waited for the device at every step. ferflow's set now has only `async_safe` batch
callbacks (NanGuard, the progress bar), which Keras calls from a worker thread on JAX.

    .venv/bin/python bench/bench_callbacks.py            # 700 random 48x48 images
    KERAS_BACKEND=jax BENCH_BACKBONE=densenet121 .venv/bin/python bench/bench_callbacks.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
from epoch_timer import EpochTimer

from ferflow.config import load_params
from ferflow.training.backup import EpochBackup
from ferflow.training.callbacks import EpochRecorder, Validation, phase_callbacks
from ferflow.training.model import build_model, set_backbone_trainable
from ferflow.training.runtime import configure_runtime

REPO = Path(__file__).resolve().parents[1]


class LossEveryBatch(keras.callbacks.Callback):
    """What phase 2's last-batch-loss callback and progress postfix did: the loss as a float
    after every batch, on the main thread."""

    loss = 0.0

    def on_train_batch_end(self, batch, logs=None):
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])


def main() -> int:
    n = int(os.environ.get("BENCH_IMAGES", "700"))
    backbone = os.environ.get("BENCH_BACKBONE", "densenet169")
    params = load_params(REPO / "params.yaml", ["model.weights=none", f"model.backbone={backbone}"])
    configure_runtime(params)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 48, 48)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 7, n), 7)
    val = (rng.integers(0, 256, (n // 4, 48, 48)).astype("float32"),)
    val += (keras.utils.to_categorical(rng.integers(0, 7, n // 4), 7),)
    model = build_model(params.model, params.base.image_size, 7, seed=params.base.seed)
    set_backbone_trainable(model, True)
    model.compile(
        optimizer=keras.optimizers.SGD(params.finetune.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.0),
        metrics=["accuracy"],
    )
    work = Path(tempfile.mkdtemp(prefix="bench-callbacks-"))

    def backup(name: str) -> EpochBackup:
        (work / name).mkdir(parents=True, exist_ok=True)
        return EpochBackup(work / name)

    def ferflow_set(name: str) -> list[keras.callbacks.Callback]:
        validation = Validation(val[0], val[1], 64, model.loss)
        callbacks, _, _ = phase_callbacks("finetune", backup(name), 0, None, False, validation)
        return callbacks

    sets: dict[str, Callable[[str], list[keras.callbacks.Callback]]] = {
        "bare": lambda name: [],
        "per-step sync (before)": lambda name: [keras.callbacks.TerminateOnNaN(), LossEveryBatch()],
        "EpochBackup": lambda name: [backup(name)],
        "EpochRecorder": lambda name: [EpochRecorder("finetune", 0, work / name)],
        "Keras BackupAndRestore": lambda name: [keras.callbacks.BackupAndRestore(str(work / name))],
        "ferflow's full set": ferflow_set,
    }
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in sets}
    model.fit(x, y, batch_size=64, epochs=1, validation_data=val, verbose=0)  # traces the step
    for round_ in range(2):
        for index, (name, make) in enumerate(sets.items()):
            callbacks = make(f"r{round_}-{index}")
            own_validation = any(isinstance(c, Validation) for c in callbacks)
            model.fit(
                x, y, batch_size=64, epochs=2, validation_data=None if own_validation else val, verbose=0,
                callbacks=[*callbacks, EpochTimer(*times[name])],
            )  # fmt: skip
            for callback in callbacks:
                if isinstance(callback, EpochBackup):
                    callback.close()
    bare_wall, bare_cpu = (float(np.median(t)) for t in times["bare"])
    print(
        f"phase-2 epoch of {n} images (+{n // 4} val), {backbone} 48 px, {keras.backend.backend()}, "
        "4 epochs per set, median:"
    )
    for name, (wall, cpu) in times.items():
        median_wall, median_cpu = float(np.median(wall)), float(np.median(cpu))
        print(
            f"  {name:34s} {median_wall:6.2f}s wall {n / median_wall:7.1f} img/s "
            f"({bare_wall / median_wall:.2f}x of bare) {median_cpu:6.2f}s CPU ({bare_cpu / median_cpu:.2f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
