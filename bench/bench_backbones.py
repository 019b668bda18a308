"""The backbone table at 48 px: parameters and compute of every entry, then phase-2 training
images/s of a small-image DenseNet against DenseNet121, same process.

Part 1 (no training): each backbone of `ferflow.training.backbones.BACKBONES` built without top at
48 px: its parameters, those of the whole from-scratch model (one Dense 256 head), the
multiply-adds of one forward pass (convolutions and dense layers; BatchNorm, ReLU, pooling
and concatenation are left out, as papers count them; 1 GMAC is about 2 GFLOP) and the
feature map the last block ends at.

Part 2: the from-scratch profile (`profiles/from-scratch.yaml`: BatchNorm learning, AdamW,
the profile's in-graph augmentation) with `model.backbone` set to the baseline and to each
candidate, on the same random 48 px images: each model is compiled once and warmed up with
one epoch, then `fit` runs 2 epochs per model, models round-robin twice (drift on a shared
machine spreads over all). Printed: median epoch seconds (wall and process CPU), images/s and
the ratio to the baseline.

    .venv/bin/python bench/bench_backbones.py
    BENCH_PARTS=1 .venv/bin/python bench/bench_backbones.py          # the table only
    BENCH_IMAGES=640 BENCH_CANDIDATES=densenet-bc-cpu,densenet-bc-gpu \
        .venv/bin/python bench/bench_backbones.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import keras
import numpy as np
from epoch_timer import EpochTimer

from ferflow.config import load_params
from ferflow.training.augment import TrainingModel
from ferflow.training.backbones import BACKBONES, KerasDenseNet, SmallDenseNet
from ferflow.training.model import build_model, set_backbone_trainable
from ferflow.training.runtime import configure_runtime, resolve_jit_compile
from ferflow.training.schedules import make_optimizer

REPO = Path(__file__).resolve().parents[1]
SIZE = 48


def multiply_adds(model: keras.Model) -> int:
    """Multiply-adds of one forward pass of one image: Conv2D and Dense layers, nested models too."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += multiply_adds(layer)
        elif isinstance(layer, keras.layers.Conv2D):
            height, width, filters = layer.output.shape[1:]
            kernel_h, kernel_w = layer.kernel_size
            total += height * width * filters * kernel_h * kernel_w * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += layer.units * layer.input.shape[-1]
    return total


def describe(spec: KerasDenseNet | SmallDenseNet) -> str:
    if isinstance(spec, KerasDenseNet):
        return f"keras.applications.{spec.application}: 7x7/2 conv + 3x3/2 max-pool, k=32, compression 0.5"
    blocks = "/".join(str(b) for b in spec.blocks)
    stem = f"{spec.stem} ({spec.stem_filters})"
    return f"{stem}, blocks {blocks}, k={spec.growth}, compression {spec.compression}"


def table() -> None:
    params = load_params(REPO / "profiles" / "from-scratch.yaml")
    print(f"backbones at {SIZE} px (whole model: the from-scratch profile's Dense 256 head):")
    print(f"  {'name':<16} {'backbone':>11} {'whole':>11} {'GMAC':>6} {'last map':>9}  {'norm':<22} layout")
    for name, spec in BACKBONES.items():
        backbone = spec.build(SIZE, None)
        whole = build_model(params.model.model_copy(update={"backbone": name}), SIZE, 7)
        norm = f"{spec.normalisation.name} ({spec.normalisation.channels}ch)"
        side = backbone.output.shape[1]
        print(
            f"  {name:<16} {backbone.count_params():>11,} {whole.count_params():>11,} "
            f"{multiply_adds(backbone) / 1e9:>6.3f} {f'{side}x{side}':>9}  {norm:<22} {describe(spec)}",
            flush=True,
        )


def throughput() -> None:
    n = int(os.environ.get("BENCH_IMAGES", "320"))
    baseline = os.environ.get("BENCH_BASELINE", "densenet121")
    candidates = os.environ.get("BENCH_CANDIDATES", "densenet-bc-cpu").split(",")
    names = [baseline, *candidates]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, SIZE, SIZE)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 7, n), 7)
    trainers = {}
    for name in names:
        params = load_params(REPO / "profiles" / "from-scratch.yaml", [f"model.backbone={name}"])
        configure_runtime(params)
        model = build_model(params.model, SIZE, 7, seed=params.base.seed)
        set_backbone_trainable(model, True, True, params.finetune.batchnorm_momentum)
        trainer = TrainingModel(model, params.finetune.augment, seed=0)
        trainer.compile(
            optimizer=make_optimizer("adamw", 1e-3, 0.0, 1e-4),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
            jit_compile=resolve_jit_compile(params.runtime.jit_compile),
        )
        started = time.perf_counter()
        trainer.fit(x, y, batch_size=params.train.batch_size, epochs=1, verbose=0)  # compiles the step
        print(f"  {name}: compiled and warmed up in {time.perf_counter() - started:.0f}s", flush=True)
        trainers[name] = (trainer, params.train.batch_size)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(2):
        for name, (trainer, batch_size) in trainers.items():
            timer = EpochTimer(wall[name], cpu[name])
            trainer.fit(x, y, batch_size=batch_size, epochs=2, verbose=0, callbacks=[timer])
    base_wall, base_cpu = float(np.median(wall[baseline])), float(np.median(cpu[baseline]))
    print(f"phase-2 training, {n} images of {SIZE} px per epoch, 4 epochs each, median per epoch:")
    for name in names:
        median_wall, median_cpu = float(np.median(wall[name])), float(np.median(cpu[name]))
        rate = n / median_wall
        print(
            f"  {name:<16} wall {median_wall:6.2f}s {rate:6.1f} img/s ({base_wall / median_wall:.2f}x)"
            f"   CPU {median_cpu:6.2f}s ({base_cpu / median_cpu:.2f}x)"
            f"   epochs (wall): {' '.join(f'{s:.1f}' for s in wall[name])}"
        )


def main() -> int:
    parts = os.environ.get("BENCH_PARTS", "12")
    if "1" in parts:
        table()
    if "2" in parts:
        throughput()
    return 0


if __name__ == "__main__":
    sys.exit(main())
