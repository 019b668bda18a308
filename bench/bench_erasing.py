"""What ferflow's `RandomCutout` costs beside Keras 3's `RandomErasing`, in a compiled
train step.

Why both exist: they are two different augmentations (docs/training.md, "Erasing"). This
measures the other half of the decision: the price. A small model (the augmentation layer,
then a 3x3 convolution and a dense head on 48x48 grayscale images, as `augment.erase`
sees them before the backbone) is trained with `fit` on random images, once per layer:

- none: no erasing (the baseline);
- cutout: `RandomCutout(rate=0.5, size=0.4)` (ferflow's, mid-grey squares);
- erasing-grey: `keras.layers.RandomErasing(factor=(0.5, 0.5), fill_value=127.5)`;
- erasing-noise: `keras.layers.RandomErasing(factor=(0.5, 0.5))`, Keras' default noise fill.

Each runs BENCH_ROUNDS (default 3) rounds of 2 epochs, round-robin, the first epoch of
each layer's first round not counted (it compiles). Printed: median seconds per epoch,
images/s and the ratio to `none`.

    .venv/bin/python bench/bench_erasing.py
    KERAS_BACKEND=jax .venv/bin/python bench/bench_erasing.py
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import keras
import numpy as np

from ferflow.training.augment import RandomCutout

IMAGES, SIZE, BATCH = 2048, 48, 128
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def layers() -> dict[str, keras.layers.Layer | None]:
    return {
        "none": None,
        "cutout": RandomCutout(0.5, 0.4, seed=1),
        "erasing-grey": keras.layers.RandomErasing(factor=(0.5, 0.5), fill_value=127.5, seed=1),
        "erasing-noise": keras.layers.RandomErasing(factor=(0.5, 0.5), seed=1),
    }


def model_with(layer: keras.layers.Layer | None) -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 1))
    x = inputs if layer is None else layer(inputs)
    x = keras.layers.Rescaling(1 / 255)(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(7, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", jit_compile="auto")
    return model


class EpochSeconds(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.seconds.append(time.perf_counter() - self.started)


def main() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (IMAGES, SIZE, SIZE, 1)).astype("float32")
    labels = rng.integers(0, 7, IMAGES)
    models = {name: model_with(layer) for name, layer in layers().items()}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(ROUNDS):
        for name, model in models.items():
            timer = EpochSeconds()
            model.fit(images, labels, batch_size=BATCH, epochs=2, verbose=0, callbacks=[timer])
            seconds[name] += timer.seconds[1:] if round_ == 0 else timer.seconds
    base = statistics.median(seconds["none"])
    print(f"backend {keras.backend.backend()}, {IMAGES} images of {SIZE}x{SIZE}, batch {BATCH}")
    print(f"{'layer':<15}{'s/epoch':>9}{'images/s':>10}{'vs none':>9}")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:<15}{median:>9.3f}{IMAGES / median:>10.0f}{base / median:>8.2f}x")


if __name__ == "__main__":
    main()
