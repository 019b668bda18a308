"""Phase-2 images/s at `finetune.steps_per_execution` 1 against larger values, same process.

The from-scratch model (DenseNet121 at 48 px, random weights, BatchNorm learning, AdamW,
in-graph augmentation) is compiled once per setting through `ferflow.training.train.fine_tune`'s
own pieces (TrainingModel, full batches, ferflow's phase-2 callbacks), then `fit` runs
2 epochs per setting, settings round-robin twice (drift on a shared machine spreads over
all of them). Printed: median epoch seconds, images/s and the ratio to 1.

On TensorFlow a value n > 1 runs n steps inside one compiled call (a graph loop); on JAX
Keras calls the jitted step n times from Python and the batch callbacks see every n-th
batch. Run it on each backend:

    .venv/bin/python bench/bench_steps_per_execution.py
    KERAS_BACKEND=jax .venv/bin/python bench/bench_steps_per_execution.py
    BENCH_IMAGES=2048 BENCH_SPE=1,4,16 .venv/bin/python bench/bench_steps_per_execution.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
from epoch_timer import EpochTimer

from ferflow.config import load_params
from ferflow.training.augment import TrainingModel
from ferflow.training.backup import EpochBackup
from ferflow.training.callbacks import Validation, phase_callbacks
from ferflow.training.model import build_model, set_backbone_trainable
from ferflow.training.runtime import configure_runtime, resolve_jit_compile
from ferflow.training.schedules import make_optimizer

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    n = int(os.environ.get("BENCH_IMAGES", "512"))
    settings = [int(v) for v in os.environ.get("BENCH_SPE", "1,8").split(",")]
    params = load_params(REPO / "profiles" / "from-scratch.yaml", ["train.batch_size=64"])
    configure_runtime(params)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 48, 48)).astype("uint8")
    y = keras.utils.to_categorical(rng.integers(0, 7, n), 7)
    val_x, val_y = x[: n // 4], y[: n // 4]
    work = Path(tempfile.mkdtemp(prefix="bench-spe-"))
    trainers = {}
    for spe in settings:
        model = build_model(params.model, params.base.image_size, 7, seed=params.base.seed)
        set_backbone_trainable(model, True, True, 0.9)
        trainer = TrainingModel(model, params.finetune.augment, seed=0)
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
        trainer.compile(
            optimizer=make_optimizer("adamw", 1e-3, 0.0, 1e-4),
            loss=loss,
            metrics=["accuracy"],
            jit_compile=resolve_jit_compile(params.runtime.jit_compile),
            steps_per_execution=spe,
        )
        trainer.fit(x, y, batch_size=64, epochs=1, verbose=0)  # compiles the step
        trainers[spe] = (trainer, loss)
    seconds: dict[int, list[float]] = {spe: [] for spe in settings}
    for round_ in range(2):
        for spe, (trainer, loss) in trainers.items():
            (work / f"r{round_}-{spe}").mkdir(parents=True)
            backup = EpochBackup(work / f"r{round_}-{spe}")
            callbacks, _, _ = phase_callbacks(
                "finetune", backup, 0, None, False, Validation(val_x, val_y, 64, loss)
            )
            timer = EpochTimer(seconds[spe])
            trainer.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[*callbacks, timer])
            backup.close()
    base = float(np.median(seconds[settings[0]]))
    backend = keras.backend.backend()
    print(f"phase-2 epoch of {n} images, DenseNet121 48 px, {backend}, 4 epochs each, median:")
    for spe in settings:
        median = float(np.median(seconds[spe]))
        rate = n / median
        print(f"  steps_per_execution={spe:<3d} {median:6.2f}s {rate:7.1f} img/s ({base / median:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
