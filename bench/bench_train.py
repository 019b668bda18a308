"""Benchmark of the two training phases, measured in one process on the same data.

(a) phase 1: one epoch through the frozen backbone vs one epoch on cached features, and the
    whole phase 1 (early stopping, up to train.epochs) including the one-time caching;
(b) phase 2: ferflow's `fine_tune` throughput vs a bare `model.fit` on in-memory arrays;
(c) phase 2 with the from-scratch profile (profiles/from-scratch.yaml: augmentation inside
    the training step, AdamW on a cosine schedule, BatchNorm learning) vs a bare `model.fit`
    of the same model on preloaded float32 arrays without augmentation;
(d) a bare phase-2 fit with TensorFlow op determinism (`runtime.deterministic: true`) vs without.

Data: a stratified subset of real FER2013 (FERFLOW_FER2013_ZIP), else synthetic faces.
The model is the study's (DenseNet169 at 48 px, the default params) with random weights.
Environment knobs: BENCH_PER_CLASS (images per class for phase 1, default 400; disgust has
436), BENCH_FT_PER_CLASS (images per class for phase 2, default 100: each phase-2 epoch
backpropagates through the DenseNet), BENCH_BACKBONE (default densenet169), BENCH_FULL=1 to
also time the whole phase 1 through the backbone (otherwise it is estimated from the
measured per-epoch time and the epochs phase 1 ran), BENCH_PARTS (the parts to run,
default abcd; e.g. BENCH_PARTS=cd), BENCH_EPOCHS (timed phase-2 epochs per run, default 4).

    FERFLOW_FER2013_ZIP=/work/shared/data/fer2013.zip .venv/bin/python bench/bench_train.py
"""

from __future__ import annotations

import io
import os
import resource
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import keras
import numpy as np

from ferflow.config import load_params
from ferflow.training.model import build_model, set_backbone_trainable
from ferflow.training.runtime import configure_runtime
from ferflow.training.train import fine_tune, fit_head

REPO = Path(__file__).resolve().parents[1]


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds per epoch (`times`), this process's CPU seconds (`cpu`) and major page
    faults (`faults`: pages read back from disk). The CPU time is not inflated when the host
    takes cycles away or code pages must be re-read, so it is the steadier comparison."""

    def on_train_begin(self, logs=None):
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.faults: list[int] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started, self.cpu_started = time.perf_counter(), time.process_time()
        self.faults_started = resource.getrusage(resource.RUSAGE_SELF).ru_majflt

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.started)
        self.cpu.append(time.process_time() - self.cpu_started)
        self.faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_majflt - self.faults_started)


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
    parts = os.environ.get("BENCH_PARTS", "abcd")
    if "a" in parts:
        phase_one(model, initial, train, val, common, work)
    if "b" in parts:
        phase_two(model, initial, train, val, common, ft_per_class, work)
    if "c" in parts:
        model.set_weights(initial)
        profile_phase_two(model, initial, train, val, backbone, ft_per_class, work)
    if "d" in parts:
        determinism(model, initial, train, val, common, ft_per_class)
    return 0


def phase_one(model, initial, train, val, common, work: Path) -> None:
    """(a): phase 1 through the frozen backbone vs on cached features."""

    # (a) per epoch: the median of epochs 2-3 through the backbone and of epochs 2-10 on cached
    # features (epoch 1 includes tracing; a cached epoch is short, so more of them even out noise)
    no_stop = [*common, "train.early_stopping_patience=10"]
    through = load_params(REPO / "params.yaml", [*no_stop, "train.epochs=3", "train.cache_features=false"])
    _, through_epoch, _ = timed_head(model, train, val, through, work / "a")
    model.set_weights(initial)
    cached = load_params(REPO / "params.yaml", [*no_stop, "train.epochs=10", "train.cache_features=true"])
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


def phase_two(model, initial, train, val, common, ft_per_class: int, work: Path) -> None:
    """(b): ferflow's fine_tune vs a bare model.fit on the same arrays and trainable layers.

    Epoch times on this shared 2-core machine drift by +-20% over minutes, so the bare fit
    runs before and after fine_tune (A-B-A) and the ratio uses the median of both halves.
    The bare fit has its own copy of the model, compiled once, so its second half does not
    trace again. A third line times the bare fit with Keras' BackupAndRestore added (what
    ferflow used before EpochBackup) to show what a synchronous per-epoch checkpoint costs.
    """
    epochs = int(os.environ.get("BENCH_EPOCHS", "4"))
    train, val = _per_class(train, ft_per_class), _per_class(val, max(1, ft_per_class // 4))
    tune = load_params(REPO / "params.yaml", [*common, f"finetune.epochs={epochs + 1}"])
    x, y = train[0].astype("float32"), keras.utils.to_categorical(train[1], 7)
    validation = (val[0].astype("float32"), keras.utils.to_categorical(val[1], 7))

    bare_model = keras.models.clone_model(model)
    bare_model.set_weights(initial)
    set_backbone_trainable(bare_model, True)  # the state fine_tune trains in: backbone open, BatchNorm frozen
    bare_model.compile(
        optimizer=keras.optimizers.SGD(tune.finetune.learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )

    def bare_run(count: int, *callbacks) -> EpochTimer:
        timer = EpochTimer()
        bare_model.fit(
            x,
            y,
            batch_size=tune.train.batch_size,
            epochs=count,
            validation_data=validation,
            callbacks=[*callbacks, timer],
            verbose=0,
        )
        return timer

    bare_run(1)  # traces the bare train step
    first = bare_run(epochs)
    model.set_weights(initial)
    ferflow = EpochTimer()
    fine_tune(model, train, val, tune, work / "e", 0, [ferflow])
    second = bare_run(epochs)
    keras_backup = bare_run(
        epochs, keras.callbacks.BackupAndRestore(str(work / "keras"), delete_checkpoint=True)
    )
    # epoch 1 of fine_tune traces the step: drop it
    runs = {
        "bare model.fit (baseline, both halves)": (
            first.times + second.times,
            first.cpu + second.cpu,
            first.faults + second.faults,
        ),
        "ferflow fine_tune": (ferflow.times[1:], ferflow.cpu[1:], ferflow.faults[1:]),
        "bare model.fit + Keras BackupAndRestore": (
            keras_backup.times,
            keras_backup.cpu,
            keras_backup.faults,
        ),
    }
    n = len(train[0])
    print(
        f"(b) phase 2 on {n} train / {len(val[0])} val images, "
        f"{epochs} timed epochs per run, bare-ferflow-bare"
    )
    medians = {}
    for name, (wall, cpu, faults) in runs.items():
        medians[name] = float(np.median(wall)), float(np.median(cpu))
        print(
            f"    {name:40s} {n / medians[name][0]:5.1f} images/s, median {medians[name][0]:.2f}s wall "
            f"/ {medians[name][1]:.2f}s CPU per epoch"
        )
        print(f"      per epoch: wall {' '.join(f'{t:.1f}' for t in wall)}; major page faults {faults}")
    bare_wall, bare_cpu = medians["bare model.fit (baseline, both halves)"]
    ferflow_wall, ferflow_cpu = medians["ferflow fine_tune"]
    keras_wall, keras_cpu = medians["bare model.fit + Keras BackupAndRestore"]
    print(f"    ratio: {bare_wall / ferflow_wall:.2f}x of bare throughput (target >= 0.95x)")
    print(f"           {bare_cpu / ferflow_cpu:.2f}x by CPU time")
    print(
        f"    bare + Keras BackupAndRestore: {bare_wall / keras_wall:.2f}x "
        f"({bare_cpu / keras_cpu:.2f}x by CPU)"
    )


def _bare_fit(model, x, y, validation, batch_size: int):
    """A timed bare `model.fit` on preloaded arrays: returns a function running `count` epochs."""

    def run(count: int) -> EpochTimer:
        timer = EpochTimer()
        model.fit(
            x,
            y,
            batch_size=batch_size,
            epochs=count,
            validation_data=validation,
            callbacks=[timer],
            verbose=0,
        )
        return timer

    return run


def _report(title: str, runs: dict[str, EpochTimer | list[EpochTimer]], n: int) -> dict[str, float]:
    print(title)
    medians = {}
    for name, timers in runs.items():
        timers = timers if isinstance(timers, list) else [timers]
        wall = [t for timer in timers for t in timer.times]
        cpu = [t for timer in timers for t in timer.cpu]
        medians[name] = float(np.median(wall))
        print(
            f"    {name:48s} {n / medians[name]:5.1f} images/s, median {medians[name]:.2f}s wall "
            f"/ {float(np.median(cpu)):.2f}s CPU per epoch; wall {' '.join(f'{t:.1f}' for t in wall)}"
        )
    return medians


def profile_phase_two(model, initial, train, val, backbone: str, ft_per_class: int, work: Path) -> None:
    """(c): fine_tune with the from-scratch profile vs a bare fit without augmentation (A-B-A)."""
    from ferflow.training.schedules import make_optimizer, schedule_for

    epochs = int(os.environ.get("BENCH_EPOCHS", "4"))
    train, val = _per_class(train, ft_per_class), _per_class(val, max(1, ft_per_class // 4))
    profile = load_params(
        REPO / "profiles" / "from-scratch.yaml",
        [f"model.backbone={backbone}", f"finetune.epochs={epochs + 1}"],
    )
    tune = profile.finetune
    bare_model = keras.models.clone_model(model)
    bare_model.set_weights(initial)
    set_backbone_trainable(bare_model, True, tune.train_batchnorm, tune.batchnorm_momentum)
    steps = int(np.ceil(len(train[0]) / profile.train.batch_size))
    bare_model.compile(
        optimizer=make_optimizer(
            tune.optimizer,
            schedule_for(tune.schedule, tune.learning_rate, 2 * epochs + 1, steps, tune.warmup_epochs),
            tune.momentum,
            tune.weight_decay,
        ),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=tune.label_smoothing),
        metrics=["accuracy"],
    )
    bare = _bare_fit(
        bare_model,
        train[0].astype("float32"),
        keras.utils.to_categorical(train[1], 7),
        (val[0].astype("float32"), keras.utils.to_categorical(val[1], 7)),
        profile.train.batch_size,
    )
    bare(1)  # traces the bare train step
    first = bare(epochs)
    ferflow = EpochTimer()
    fine_tune(model, train, val, profile, work / "profile", 0, [ferflow])
    ferflow.times, ferflow.cpu = ferflow.times[1:], ferflow.cpu[1:]  # epoch 1 traces the step
    second = bare(epochs)
    medians = _report(
        f"(c) phase 2, from-scratch profile, on {len(train[0])} train images, "
        f"{epochs} timed epochs, bare-ferflow-bare",
        {
            "bare model.fit, no augmentation (baseline)": [first, second],
            "fine_tune, profile augmentation": ferflow,
        },
        len(train[0]),
    )
    ratio = medians["bare model.fit, no augmentation (baseline)"] / medians["fine_tune, profile augmentation"]
    print(f"    ratio: {ratio:.2f}x of bare throughput (target >= 0.9x)")


def determinism(model, initial, train, val, common, ft_per_class: int) -> None:
    """(d): a bare phase-2 fit with op determinism off, then on (TensorFlow only; it cannot be
    switched off again in a process, so this part runs last)."""
    if keras.backend.backend() != "tensorflow":
        print("(d) skipped: op determinism is a TensorFlow switch")
        return
    import tensorflow as tf

    epochs = int(os.environ.get("BENCH_EPOCHS", "4"))
    train, val = _per_class(train, ft_per_class), _per_class(val, max(1, ft_per_class // 4))
    bare_model = keras.models.clone_model(model)
    bare_model.set_weights(initial)
    set_backbone_trainable(bare_model, True, True)
    bare_model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy")
    bare = _bare_fit(
        bare_model,
        train[0].astype("float32"),
        keras.utils.to_categorical(train[1], 7),
        (val[0].astype("float32"), keras.utils.to_categorical(val[1], 7)),
        64,
    )
    bare(1)
    off_first = bare(epochs)
    tf.config.experimental.enable_op_determinism()
    bare_model.make_train_function(force=True)  # retrace with the deterministic kernels
    bare(1)
    on = bare(epochs)
    # TensorFlow has no switch back (no disable_op_determinism): off runs first, on last
    medians = _report(
        f"(d) bare phase-2 fit (BatchNorm learning) on {len(train[0])} images, determinism off then on",
        {"runtime.deterministic: false (baseline)": off_first, "runtime.deterministic: true": on},
        len(train[0]),
    )
    ratio = medians["runtime.deterministic: true"] / medians["runtime.deterministic: false (baseline)"]
    print(f"    deterministic costs {ratio:.2f}x the time per epoch")


if __name__ == "__main__":
    sys.exit(main())
