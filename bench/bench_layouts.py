"""Which small-image DenseNet layout trains fastest on this CPU: training images/s of
several `SmallDenseNet` layouts (stride-2 stem) against the 6/12/16, k=16 layout, in one
process (how `densenet-bc-cpu` was chosen; docs/training.md, the backbone table).

Each: backbone + GlobalAveragePooling + Dense 256 + Dense 7, AdamW, random 48 px images,
batch 64, one warm-up fit, then one timed epoch. Printed: images/s, the ratio to the
first layout, and process CPU / wall (about 1: one core busy; about 2: both).

    .venv/bin/python bench/bench_layouts.py
    BENCH_IMAGES=640 BENCH_JIT=1 .venv/bin/python bench/bench_layouts.py
"""

from __future__ import annotations

import os
import time

import keras
import numpy as np

from ferflow.training.backbones import SmallDenseNet

# (blocks, growth): the baseline first
LAYOUTS = [
    ((6, 12, 16), 16),
    ((4, 8, 8), 24),
    ((4, 6, 8), 24),
    ((4, 6, 8), 32),
    ((3, 6, 12), 32),
    ((6, 8, 8), 16),
]
LAYOUTS.append(((4, 6, 8), 16))  # densenet-bc-cpu


def images_per_second(
    spec: SmallDenseNet, x: np.ndarray, y: np.ndarray, jit: bool
) -> tuple[float, float, int]:
    inputs = keras.Input((48, 48, 1))
    h = spec.build(48)(keras.layers.Rescaling(1 / 127.5, -1)(inputs))
    h = keras.layers.Dense(256, activation="relu")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(h))
    model.compile(keras.optimizers.AdamW(1e-3), "categorical_crossentropy", jit_compile=jit)
    model.fit(x[:128], y[:128], batch_size=64, epochs=1, verbose=0)  # compile and warm up
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    wall = time.perf_counter() - wall
    return len(x) / wall, (time.process_time() - cpu) / wall, model.count_params()


def main() -> int:
    n = int(os.environ.get("BENCH_IMAGES", "640"))
    jit = os.environ.get("BENCH_JIT", "0") == "1"
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 48, 48, 1)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 7, n), 7)
    print(
        f"training images/s, {n} random 48 px images, batch 64, jit_compile={jit}, {keras.backend.backend()}"
    )
    base = None
    for blocks, growth in LAYOUTS:
        rate, cores, params = images_per_second(SmallDenseNet("conv3x3-stride2", blocks, growth), x, y, jit)
        base = base or rate
        layout = "/".join(map(str, blocks))
        ratio = f"{rate:7.1f} img/s ({rate / base:.2f}x) cpu/wall {cores:.2f}"
        print(f"  {layout:<8} k={growth:<3} {params:>10,} params {ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
