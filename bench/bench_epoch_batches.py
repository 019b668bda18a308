"""What phase 2's resumable input costs: `EpochBatches` (every epoch's order drawn from the
seed and the epoch, so a run stopped mid-epoch resumes after its last backed-up batch)
against the array input phase 2 had before (Keras shuffles), and what backups inside an
epoch cost.

One model (the CPU profile's densenet-bc-cpu at 48 px, random weights, backbone open, SGD;
BENCH_BACKBONE=densenet169 for the study's) is compiled once, then `fit` runs 2 epochs with
each input in turn for 3 epochs, the first not counted (switching input kinds retraces the
train step), all twice (BENCH_ROUNDS; round-robin, so drift on the shared machine spreads over all of
them). Printed: median seconds per epoch, images/s and the ratio to the array input;
then the training thread's time for one mid-epoch snapshot (the copy; the write is on a
background thread).

    .venv/bin/python bench/bench_epoch_batches.py             # 1,024 random 48x48 images
    KERAS_BACKEND=jax .venv/bin/python bench/bench_epoch_batches.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
from epoch_timer import EpochTimer

from ferflow.config import load_params
from ferflow.training.backup import EpochBackup
from ferflow.training.model import build_model, set_backbone_trainable
from ferflow.training.runtime import configure_runtime
from ferflow.training.train import training_input

REPO = Path(__file__).resolve().parents[1]
BATCH = 64


def main() -> int:
    n = int(os.environ.get("BENCH_IMAGES", "1024")) // BATCH * BATCH
    backbone = os.environ.get("BENCH_BACKBONE", "densenet-bc-cpu")
    params = load_params(REPO / "profiles" / "cpu.yaml", [f"model.backbone={backbone}"])
    configure_runtime(params)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 48, 48)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 7, n), 7)
    model = build_model(params.model, params.base.image_size, 7, seed=params.base.seed)
    set_backbone_trainable(model, True, params.finetune.train_batchnorm)
    model.compile(
        optimizer=keras.optimizers.SGD(params.finetune.learning_rate, momentum=params.finetune.momentum),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    work = Path(tempfile.mkdtemp(prefix="bench-epoch-batches-"))
    epoch = [0]

    def arrays(name: str) -> tuple[dict[str, Any], list[keras.callbacks.Callback]]:
        return {"x": x, "y": y, "batch_size": BATCH, "shuffle": True}, []

    def epoch_batches(name: str) -> tuple[dict[str, Any], list[keras.callbacks.Callback]]:
        epoch[0] += 1
        return training_input((x, y), BATCH, 0, epoch[0]), []

    def with_backups(name: str) -> tuple[dict[str, Any], list[keras.callbacks.Callback]]:
        inputs, _ = epoch_batches(name)
        return inputs, [EpochBackup(work / name, every_s=2.0)]

    inputs: dict[str, Callable[[str], tuple[dict[str, Any], list[keras.callbacks.Callback]]]] = {
        "arrays, Keras shuffles (before)": arrays,
        "EpochBatches (now)": epoch_batches,
        "EpochBatches + backup every 2 s": with_backups,
    }
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in inputs}
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)  # traces the step
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    for round_ in range(rounds):
        for index, (name, make) in enumerate(inputs.items()):
            data, callbacks = make(f"r{round_}-{index}")
            wall: list[float] = []
            model.fit(**data, epochs=3, verbose=0, callbacks=[*callbacks, EpochTimer(wall)])
            times[name][0].extend(wall[1:])  # a new input kind retraces the step in its first epoch
            for callback in callbacks:
                if isinstance(callback, EpochBackup):
                    callback.close()
    base = float(np.median(times["arrays, Keras shuffles (before)"][0]))
    print(
        f"phase-2 epoch of {n} images, {backbone} 48 px, {keras.backend.backend()}, "
        f"{2 * rounds} epochs per input, median:"
    )
    for name, (wall, _) in times.items():
        median = float(np.median(wall))
        print(f"  {name:34s} {median:6.2f}s {n / median:7.1f} img/s ({base / median:.2f}x of before)")
    snapshot = EpochBackup(work / "snapshot")
    snapshot.set_model(model)
    costs = []
    for _ in range(5):
        started = time.perf_counter()
        snapshot._snapshot(0, 1, {"loss": 1.0})  # the training thread's part of a backup
        costs.append(time.perf_counter() - started)
        snapshot.wait()
    snapshot.close()
    size = (work / "snapshot" / EpochBackup.FILE).stat().st_size / 2**20
    print(
        f"  one mid-epoch snapshot: {1000 * float(np.median(costs)):.0f} ms on the training thread "
        f"({size:.0f} MiB file)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
