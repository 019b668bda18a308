"""Benchmark of the two training phases, measured in one process on the same data.

(a) phase 1: one epoch through the frozen backbone vs one epoch on cached features, and the
    whole phase 1 (early stopping, up to train.epochs) including the one-time caching;
(b) phase 2: ferflow's `fine_tune` throughput vs a bare `model.fit` on in-memory arrays.

Data: a stratified subset of real FER2013 (FERFLOW_FER2013_ZIP), else synthetic faces.
The model is the study's (DenseNet169 at 48 px, the default params) with random weights.
Environment knobs: BENCH_PER_CLASS (images per class for phase 1, default 400; disgust has
436), BENCH_FT_PER_CLASS (images per class for phase 2, default 100: each phase-2 epoch
backpropagates through the DenseNet), BENCH_BACKBONE (default densenet169), BENCH_FULL=1 to
also time the whole phase 1 through the backbone (otherwise it is estimated from the
measured per-epoch time and the epochs phase 1 ran), BENCH_PARTS=b for part (b) only,
BENCH_BARE_FIRST=1 to run the bare fit before ferflow's (an order check).

    FERFLOW_FER2013_ZIP=/work/shared/data/fer2013.zip .venv/bin/python bench/bench_train.py
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import keras
import numpy as np

from ferflow.config import load_params
from ferflow.model import build_model, set_backbone_trainable
from ferflow.train import configure_runtime, fine_tune, fit_head

REPO = Path(__file__).resolve().parents[1]


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.started)


def fer_subset(zip_path: Path, classes: tuple[str, ...], per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `per_class` train images of each class (sorted names), decoded with PIL."""
    from PIL import Image

    images, labels = [], []
    with zipfile.ZipFile(zip_path) as archive:
        names = sorted(archive.namelist())
        for label, name in enumerate(classes):
            members = [n for n in names if f"/train/{name}/" in n and n.endswith(".jpg")][:per_class]
            for member in members:
                images.append(np.asarray(Image.open(io.BytesIO(archive.read(member))).convert("L")))
                labels.append(label)
    return np.stack(images), np.asarray(labels)


def load_data(params, per_class: int) -> tuple[str, tuple, tuple]:
    zip_path = os.environ.get("FERFLOW_FER2013_ZIP")
    if zip_path and Path(zip_path).is_file():
        x, y = fer_subset(Path(zip_path), params.base.classes, per_class)
        source = f"real FER2013 subset ({per_class}/class from train/)"
    else:
        from ferflow.data.synth import draw_faces

        x, y = draw_faces(per_class, params.base.classes, seed=params.base.seed)
        source = f"synthetic faces ({per_class}/class)"
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    cut = int(len(x) * 0.8)
    return source, (x[:cut], y[:cut]), (x[cut:], y[cut:])


def _per_class(split: tuple, per_class: int) -> tuple:
    """The first `per_class` rows of each class, in the split's (shuffled) order."""
    x, y = split
    keep = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)])
    keep.sort()
    return x[keep], y[keep]


def timed_head(model, train, val, params, backup: Path) -> tuple[float, float, int]:
    """(whole phase-1 seconds, steady per-epoch seconds, epochs run)."""
    timer = EpochTimer()
    started = time.perf_counter()
    records = fit_head(model, train, val, params, backup, [timer])
    return time.perf_counter() - started, float(np.median(timer.times[1:] or timer.times)), len(records)


def main() -> int:
    per_class = int(os.environ.get("BENCH_PER_CLASS", "400"))
    ft_per_class = int(os.environ.get("BENCH_FT_PER_CLASS", "100"))
    backbone = os.environ.get("BENCH_BACKBONE", "densenet169")
    common = [f"model.backbone={backbone}", "model.weights=none"]
    params = load_params(REPO / "params.yaml", common)
    configure_runtime(params)
    source, train, val = load_data(params, per_class)
    print(
        f"data: {source}; {len(train[0])} train / {len(val[0])} val; {backbone} at "
        f"{params.model.input_size} px, batch {params.train.batch_size}, keras {keras.__version__} "
        f"({keras.backend.backend()})"
    )
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    model = build_model(params.model, params.base.image_size, 7, seed=params.base.seed)
    initial = model.get_weights()
    if os.environ.get("BENCH_PARTS", "ab") == "b":
        return phase_two(model, initial, train, val, common, ft_per_class, work)

    # (a) per epoch: 3 epochs each, the median of epochs 2-3 (epoch 1 includes tracing)
    three = [*common, "train.epochs=3", "train.early_stopping_patience=10"]
    through = load_params(REPO / "params.yaml", [*three, "train.cache_features=false"])
    _, through_epoch, _ = timed_head(model, train, val, through, work / "a")
    model.set_weights(initial)
    cached = load_params(REPO / "params.yaml", [*three, "train.cache_features=true"])
    _, cached_epoch, _ = timed_head(model, train, val, cached, work / "b")
    print(f"(a) phase-1 epoch through the frozen backbone (baseline): {through_epoch:.2f}s")
    print(f"    phase-1 epoch on cached features:                     {cached_epoch:.3f}s")
    print(f"    ratio: {through_epoch / cached_epoch:.1f}x faster per epoch (target >= 20x)")

    # whole phase 1 at the study's settings (early stopping patience 3, up to 30 epochs)
    model.set_weights(initial)
    study = load_params(REPO / "params.yaml", [*common, "train.cache_features=true"])
    cached_total, _, epochs = timed_head(model, train, val, study, work / "c")
    if os.environ.get("BENCH_FULL") == "1":
        model.set_weights(initial)
        slow = load_params(REPO / "params.yaml", [*common, "train.cache_features=false"])
        through_total, _, through_epochs = timed_head(model, train, val, slow, work / "d")
        how = f"measured, {through_epochs} epochs"
    else:
        through_total = through_epoch * epochs
        how = f"estimated: {epochs} epochs x the measured per-epoch time, tracing excluded"
    print(f"    whole phase 1 through the backbone ({how}): {through_total:.1f}s")
    print(f"    whole phase 1 on cached features incl. caching ({epochs} epochs): {cached_total:.1f}s")
    print(f"    ratio: {through_total / cached_total:.1f}x (target >= 5x)")

    return phase_two(model, initial, train, val, common, ft_per_class, work)


def phase_two(model, initial, train, val, common, ft_per_class: int, work: Path) -> int:
    """(b): ferflow's fine_tune vs a bare model.fit on the same arrays, 3 epochs each."""
    train, val = _per_class(train, ft_per_class), _per_class(val, max(1, ft_per_class // 4))
    tune = load_params(REPO / "params.yaml", [*common, "finetune.epochs=3"])

    def ferflow_run() -> float:
        model.set_weights(initial)
        timer = EpochTimer()
        fine_tune(model, train, val, tune, work / "e", 0, [timer])
        return float(np.median(timer.times[1:]))

    def bare_run() -> float:
        model.set_weights(initial)
        set_backbone_trainable(model, True)  # the state fine_tune trains in: backbone open, BatchNorm frozen
        model.compile(
            optimizer=keras.optimizers.SGD(tune.finetune.learning_rate),
            loss="categorical_crossentropy",
            metrics=["accuracy"],
        )
        bare = EpochTimer()
        model.fit(
            train[0].astype("float32"),
            keras.utils.to_categorical(train[1], 7),
            batch_size=tune.train.batch_size,
            epochs=3,
            validation_data=(val[0].astype("float32"), keras.utils.to_categorical(val[1], 7)),
            callbacks=[bare],
            verbose=0,
        )
        return float(np.median(bare.times[1:]))

    bare_first = os.environ.get("BENCH_BARE_FIRST") == "1"  # order check: the first fit may differ
    if bare_first:
        bare_epoch = bare_run()
        ferflow_epoch = ferflow_run()
    else:
        ferflow_epoch = ferflow_run()
        bare_epoch = bare_run()
    n = len(train[0])
    order = "bare first" if bare_first else "ferflow first"
    print(f"(b) phase 2 on {n} train / {len(val[0])} val images, median of epochs 2-3, {order}")
    print(f"    phase-2 bare model.fit (baseline): {n / bare_epoch:.1f} images/s ({bare_epoch:.2f}s/ep)")
    print(
        f"    phase-2 ferflow fine_tune:         {n / ferflow_epoch:.1f} images/s ({ferflow_epoch:.2f}s/ep)"
    )
    print(f"    ratio: {bare_epoch / ferflow_epoch:.2f}x of bare throughput (target >= 0.95x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
