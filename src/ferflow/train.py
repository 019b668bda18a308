"""The two training phases of the study, and the `train` / `finetune` stages.

Phase 1, `fit_head`: the backbone is frozen, so its output for an image never changes. With
`train.cache_features` the pooled features are computed once and only the small dense head
is trained on them (many times faster per epoch, same result: the head model shares its
layer objects with the full model). Adam, categorical cross-entropy, early stopping on
val_loss restoring the best weights.

Phase 2, `fine_tune`: the backbone is unfrozen and the whole network trained with SGD,
continuing from phase 1's weights. BatchNorm stays in inference mode (frozen), unless
`finetune.train_batchnorm` lets it learn (for a backbone that starts from random
weights). Optional augmentation, label smoothing and class weights (all off by default,
as in the study).

Both phases fail loudly on a NaN/infinite loss (`TrainingError`), back up every epoch to
`models/backup/<phase>` so a restarted run resumes where it stopped, and are repeatable
with `train.deterministic`. Keras 3 APIs only: the same code runs on JAX and PyTorch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ferflow.augment import TrainingModel
from ferflow.config import Params
from ferflow.data.dataset import PreparedData, load_prepared
from ferflow.errors import FerflowError
from ferflow.model import (
    build_model,
    feature_extractor,
    head_model,
    load_model,
    set_backbone_trainable,
)
from ferflow.schedules import make_optimizer, schedule_for

log = logging.getLogger(__name__)

HEAD_FILE = "head.keras"
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.json"
BACKUP_DIR = "backup"
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")

Split = tuple[np.ndarray, np.ndarray]  # images (n, S, S), integer labels (n,)


class TrainingError(FerflowError, RuntimeError):
    """Training diverged (NaN/inf loss) or its inputs are unusable."""


# --- runtime ---------------------------------------------------------------------------


def configure_runtime(params: Params) -> None:
    """Seeds, op determinism and the precision policy, before any model is built.

    Determinism costs speed: TensorFlow then picks deterministic (often slower) kernels.
    """
    train = params.train
    if train.deterministic:
        keras.utils.set_random_seed(params.base.seed)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf  # only on this backend, only here

            tf.config.experimental.enable_op_determinism()
    configure_compilation_cache(train.compilation_cache)
    if train.mixed_precision:
        policy = "mixed_bfloat16" if keras.backend.backend() == "jax" else "mixed_float16"
        keras.mixed_precision.set_global_policy(policy)
    else:
        keras.mixed_precision.set_global_policy("float32")


def resolve_jit_compile(setting: bool | str) -> bool:
    """`train.jit_compile` for `compile`: `auto` is XLA on JAX only.

    On JAX, `jit_compile=False` makes Keras run the train step eagerly, every op its own
    small jitted call (measured on the CPU: hundreds of op compilations and no cacheable
    step). TensorFlow's CPU ran the DenseNet slower under XLA (16 vs 44 images/s), and
    PyTorch's eager mode is its normal one.
    """
    if setting == "auto":
        return keras.backend.backend() == "jax"
    return bool(setting)


COMPILATION_CACHE_ENV = "FERFLOW_COMPILATION_CACHE"


def configure_compilation_cache(folder: str | None) -> Path | None:
    """On JAX, keep compiled XLA programs in `folder` (or $FERFLOW_COMPILATION_CACHE) across
    processes: a GPU worker with the folder on a volume compiles the DenseNet train step
    once, not at every scheduled run. A no-op on the other backends (TensorFlow and
    PyTorch have no persistent cache of their compiled steps here)."""
    folder = os.environ.get(COMPILATION_CACHE_ENV) or folder
    if not folder or keras.backend.backend() != "jax":
        return None
    import jax

    path = Path(folder).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)  # the big steps only
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    log.info("JAX compilation cache: %s", path)
    return path


def distribution_scope() -> contextlib.AbstractContextManager[Any]:
    """Data parallelism over all visible GPUs, chosen by the Keras backend; a no-op on one."""
    backend = keras.backend.backend()
    if backend == "jax":
        gpus = keras.distribution.list_devices("gpu")
        if len(gpus) > 1:
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=gpus))
    elif backend == "tensorflow":
        import tensorflow as tf

        if len(tf.config.list_logical_devices("GPU")) > 1:
            return tf.distribute.MirroredStrategy().scope()
    return contextlib.nullcontext()


# --- callbacks -------------------------------------------------------------------------


class EpochRecorder(keras.callbacks.Callback):
    """Collects per-epoch metrics (global epoch, phase) and keeps them in the backup folder.

    Keras' History only sees the epochs of the current `fit`; after a resume the earlier
    epochs come back from `epochs.json` next to the `EpochBackup` snapshot.
    """

    def __init__(self, phase: str, epoch_offset: int, backup_dir: Path) -> None:
        super().__init__()
        self.phase = phase
        self.epoch_offset = epoch_offset
        self.path = backup_dir / "epochs.json"
        self.records: list[dict[str, Any]] = json.loads(self.path.read_text()) if self.path.exists() else []
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        record: dict[str, Any] = {"epoch": self.epoch_offset + epoch, "phase": self.phase}
        record.update({k: float(logs[k]) for k in EPOCH_METRICS if k in logs})
        self.records = [r for r in self.records if r["epoch"] != record["epoch"]] + [record]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.records))
        log.info(
            "%s epoch %d: %s (%.1fs)",
            self.phase,
            record["epoch"] + 1,
            " ".join(f"{k}={record[k]:.4f}" for k in EPOCH_METRICS if k in record),
            time.perf_counter() - self.started,
        )


class EpochBackup(keras.callbacks.Callback):
    """Resumable training: the weights and optimizer state after every epoch, in
    `backup_dir/state.npz`; `restore` (before `fit`) returns the epoch to continue from.

    The snapshot is copied in the training loop (milliseconds) and written by a background
    thread, so training does not wait for the disk: Keras' BackupAndRestore writes
    DenseNet169's ~1,200 variables to HDF5 inside the loop, ~2 s per epoch on this CPU.
    The file is written under a temporary name and renamed, so a process killed mid-write
    leaves the previous epoch's backup intact (at most the last epoch is redone).
    """

    FILE = "state.npz"

    def __init__(self, backup_dir: Path) -> None:
        super().__init__()
        self.path = backup_dir / self.FILE
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferflow-backup")
        self._pending: Future[None] | None = None

    def restore(self, model: keras.Model) -> int:
        """Loads the backup into `model` (compiled) and returns its epoch; 0 if there is none."""
        if not self.path.exists():
            return 0
        with np.load(self.path) as state:
            epoch = int(state["epoch"])
            weights = [state[f"w{i}"] for i in range(int(state["n_weights"]))]
            slots = [state[f"o{i}"] for i in range(int(state["n_optimizer"]))]
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        for kind, variables, values in (
            ("weights", model.weights, weights),
            ("optimizer state", model.optimizer.variables, slots),
        ):
            shapes = [tuple(v.shape) for v in variables]
            if shapes != [a.shape for a in values]:
                raise TrainingError(
                    f"{self.path}: the backup's {kind} do not match this model and optimizer "
                    f"({len(values)} arrays, {len(variables)} expected); it belongs to another "
                    f"configuration. Delete {self.path.parent} to start this phase afresh"
                )
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)
        log.info("resuming from %s at epoch %d", self.path, epoch + 1)
        return epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        weights = [np.array(v, copy=True) for v in self.model.weights]
        slots = [np.array(v, copy=True) for v in self.model.optimizer.variables]
        state: dict[str, Any] = {f"w{i}": a for i, a in enumerate(weights)}
        state |= {f"o{i}": a for i, a in enumerate(slots)}
        state |= {"epoch": np.int64(epoch + 1), "n_weights": len(weights), "n_optimizer": len(slots)}
        self.wait()  # at most one write in flight
        self._pending = self._writer.submit(self._write, state)

    def _write(self, state: dict[str, Any]) -> None:
        temporary = self.path.with_name(f".{self.FILE}.partial")
        with temporary.open("wb") as handle:
            np.savez(handle, **state)
        os.replace(temporary, self.path)

    def wait(self) -> None:
        """Blocks until the last snapshot is on disk (re-raising a failed write)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        self.wait()
        self._writer.shutdown()


@contextlib.contextmanager
def _resumable_fit(model: keras.Model, backup_dir: Path) -> Iterator[tuple[EpochBackup, int]]:
    """(backup callback, epoch to start at); every backup write has finished on exit,
    whether `fit` returned or raised, so a rerun resumes from the last completed epoch."""
    backup_dir.mkdir(parents=True, exist_ok=True)
    backup = EpochBackup(backup_dir)
    try:
        yield backup, backup.restore(model)
    finally:
        backup.close()


def _callbacks(
    phase: str, backup: EpochBackup, epoch_offset: int, patience: int | None, restore_best: bool
) -> tuple[list[keras.callbacks.Callback], EpochRecorder]:
    recorder = EpochRecorder(phase, epoch_offset, backup.path.parent)
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.TerminateOnNaN(),
        DivergenceGuard(),
        backup,
        recorder,
    ]
    if patience is not None:
        callbacks.insert(
            1,
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=patience, restore_best_weights=restore_best
            ),
        )
    return callbacks, recorder


class DivergenceGuard(keras.callbacks.Callback):
    """Stops a phase at an epoch end whose weights are not all finite, or whose loss
    exploded (over `factor` x the first epoch's loss), and records why in `problem`; the
    phase then fails after `fit` (`_check_finite`). A huge learning rate can leave the loss
    finite while weights overflow to NaN: TerminateOnNaN does not see that."""

    def __init__(self, factor: float = 50.0) -> None:
        super().__init__()
        self.factor = factor
        self.first_loss: float | None = None
        self.problem: str | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        bad = [
            v.path
            for v in self.model.trainable_weights
            if not np.all(np.isfinite(keras.ops.convert_to_numpy(v)))
        ]
        if self.first_loss is None and math.isfinite(loss):
            self.first_loss = loss
        if bad:
            self.problem = f"{len(bad)} weight tensors hold NaN or infinite values (e.g. {bad[0]})"
        elif self.first_loss is not None and loss > self.factor * max(self.first_loss, 1e-3):
            self.problem = f"the loss exploded to {loss:.3g} (first epoch {self.first_loss:.3g})"
        if self.problem:
            self.problem = f"epoch {epoch + 1}: {self.problem}"
            self.model.stop_training = True


class _LastBatchLoss(keras.callbacks.Callback):
    """Remembers the last batch loss: TerminateOnNaN stops mid-epoch, before History sees it."""

    loss = 0.0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])


def _check_finite(
    phase: str,
    history: keras.callbacks.History,
    last_batch: _LastBatchLoss,
    backup_dir: Path,
    callbacks: Sequence[keras.callbacks.Callback],
) -> None:
    """TerminateOnNaN and DivergenceGuard stop training but `fit` returns normally: turn
    either into an error.

    The backup holds the diverged weights; it is removed so a rerun starts afresh.
    """
    losses = history.history.get("loss", [])
    bad = [i for i, value in enumerate(losses) if not math.isfinite(float(value))]
    if bad or not math.isfinite(last_batch.loss):
        _finish_backup(backup_dir)
        raise TrainingError(
            f"{phase}: the loss became NaN or infinite (epoch {bad[0] + 1 if bad else len(losses) + 1}); "
            "lower the learning rate, check the data for NaN pixels, or turn off mixed precision. "
            "Nothing was saved or registered"
        )
    problems = [c.problem for c in callbacks if isinstance(c, DivergenceGuard) and c.problem]
    if problems:
        _finish_backup(backup_dir)
        raise TrainingError(
            f"{phase}: training diverged at {problems[0]}; lower the learning rate or turn off "
            "mixed precision. Nothing was saved or registered"
        )


def _finish_backup(backup_dir: Path) -> None:
    """A completed phase needs no backup: remove the folder so a rerun starts fresh."""
    shutil.rmtree(backup_dir, ignore_errors=True)


# --- phase 1 ---------------------------------------------------------------------------


def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return keras.utils.to_categorical(labels, num_classes).astype("float32")


def _as_float(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype="float32")


_EXTRACTORS: weakref.WeakKeyDictionary[keras.Model, keras.Model] = weakref.WeakKeyDictionary()


def _feature_extractor_of(model: keras.Model) -> keras.Model:
    """One extractor per model: its compiled predict function is traced only once."""
    if model not in _EXTRACTORS:
        _EXTRACTORS[model] = feature_extractor(model)
    return _EXTRACTORS[model]


def _steps_per_execution(cached: bool, rows: int, batch_size: int) -> int:
    """Batches per compiled call. A head step on cached features takes well under a
    millisecond of arithmetic, so per-call overhead dominates: run up to 32 steps per call
    (the same updates in the same order; per-batch callbacks then see every 32nd batch).
    Through the backbone a step is long enough that one per call costs nothing."""
    return min(32, max(1, math.ceil(rows / batch_size))) if cached else 1


def fit_head(
    model: keras.Model,
    train: Split,
    val: Split,
    params: Params,
    backup_dir: Path,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> list[dict[str, Any]]:
    """Phase 1: train the dense head with the backbone frozen; returns the epoch records."""
    settings = params.train
    num_classes = len(params.base.classes)
    set_backbone_trainable(model, False)
    if settings.epochs == 0:
        log.info("phase 1 skipped (train.epochs=0): the whole network trains in phase 2")
        return []
    y_train, y_val = _one_hot(train[1], num_classes), _one_hot(val[1], num_classes)
    if settings.cache_features:
        trained = head_model(model)
        extractor = _feature_extractor_of(model)
        started = time.perf_counter()
        x_train = extractor.predict(_as_float(train[0]), batch_size=settings.batch_size * 4, verbose=0)
        x_val = extractor.predict(_as_float(val[0]), batch_size=settings.batch_size * 4, verbose=0)
        log.info(
            "cached backbone features of %d images in %.1fs",
            len(x_train) + len(x_val),
            time.perf_counter() - started,
        )
    else:
        trained = model
        x_train, x_val = _as_float(train[0]), _as_float(val[0])
    trained.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=resolve_jit_compile(settings.jit_compile),
        steps_per_execution=_steps_per_execution(settings.cache_features, len(x_train), settings.batch_size),
    )
    last_batch = _LastBatchLoss()
    with _resumable_fit(trained, backup_dir) as (backup, initial_epoch):
        callbacks, recorder = _callbacks(
            "head", backup, 0, settings.early_stopping_patience, settings.restore_best_weights
        )
        if settings.deterministic:
            keras.utils.set_random_seed(params.base.seed)  # same shuffling in both feature modes
        history = trained.fit(
            x_train,
            y_train,
            batch_size=settings.batch_size,
            epochs=settings.epochs,
            initial_epoch=initial_epoch,
            validation_data=(x_val, y_val),
            callbacks=[*callbacks, last_batch, *extra_callbacks],
            verbose=0,
        )
    _check_finite("phase 1 (head)", history, last_batch, backup_dir, callbacks)
    _finish_backup(backup_dir)
    return recorder.records


# --- phase 2 ---------------------------------------------------------------------------


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """n / (k * count_c): rare classes (disgust, ~1.5% of FER2013) weigh more."""
    counts = np.bincount(labels, minlength=num_classes).astype("float64")
    counts[counts == 0] = 1.0
    return {c: float(len(labels) / (num_classes * counts[c])) for c in range(num_classes)}


def fine_tune(
    model: keras.Model,
    train: Split,
    val: Split,
    params: Params,
    backup_dir: Path,
    epoch_offset: int = 0,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> list[dict[str, Any]]:
    """Phase 2: unfreeze the backbone and train everything; returns the epoch records.

    `model` is trained through a `TrainingModel` wrapper that feeds it the uint8 arrays and
    augments batches inside the compiled step; `model` itself stays the plain classifier.
    The optimizer (`finetune.optimizer`) follows `finetune.schedule` per step.
    """
    settings, num_classes = params.finetune, len(params.base.classes)
    if settings.epochs == 0:
        return []
    set_backbone_trainable(model, True, settings.train_batchnorm, settings.batchnorm_momentum)
    batch_size = params.train.batch_size
    steps_per_epoch = math.ceil(len(train[0]) / batch_size)
    learning_rate = schedule_for(
        settings.schedule,
        settings.learning_rate,
        settings.epochs,
        steps_per_epoch,
        settings.warmup_epochs,
        settings.final_lr_fraction,
    )
    trainer = TrainingModel(model, settings.augment, seed=params.base.seed)
    trainer.compile(
        optimizer=make_optimizer(settings.optimizer, learning_rate, settings.momentum, settings.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing),
        metrics=["accuracy"],
        jit_compile=resolve_jit_compile(params.train.jit_compile),
    )
    weights = balanced_class_weights(train[1], num_classes) if settings.class_weights else None
    last_batch = _LastBatchLoss()
    budget = [] if settings.time_budget_s is None else [TimeBudget(settings.time_budget_s)]
    with _resumable_fit(trainer, backup_dir) as (backup, initial_epoch):
        callbacks, recorder = _callbacks("finetune", backup, epoch_offset, None, False)
        if params.train.deterministic:
            keras.utils.set_random_seed(params.base.seed)
        history = trainer.fit(
            _as_pixels(train[0]),
            _one_hot(train[1], num_classes),
            batch_size=batch_size,
            class_weight=weights,
            epochs=settings.epochs,
            initial_epoch=initial_epoch,
            validation_data=(_as_pixels(val[0]), _one_hot(val[1], num_classes)),
            callbacks=[*callbacks, *budget, last_batch, *extra_callbacks],
            verbose=0,
        )
    _check_finite("phase 2 (finetune)", history, last_batch, backup_dir, callbacks)
    _finish_backup(backup_dir)
    return recorder.records


class TimeBudget(keras.callbacks.Callback):
    """Stops `fit` before an epoch that would end more than `seconds` after fit started
    (judged by the slowest epoch so far). The schedule still spans `finetune.epochs`, so
    pick epochs that fit the budget; this is the guard for a wall-clock-boxed run."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.started = self.epoch_started = time.perf_counter()
        self.slowest = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        self.slowest = max(self.slowest, now - self.epoch_started)
        if now - self.started + self.slowest > self.seconds:
            log.warning(
                "finetune: stopping after epoch %d: the next would end past the %.0f s budget",
                epoch + 1,
                self.seconds,
            )
            self.model.stop_training = True


def _as_pixels(images: np.ndarray) -> np.ndarray:
    """Images as the model reads them: uint8 stays uint8 (4x less to copy per batch; the
    training wrapper casts inside the step), anything else becomes float32."""
    images = np.asarray(images)
    return images if images.dtype == np.uint8 else images.astype("float32")


# --- data and files --------------------------------------------------------------------


def training_splits(data: PreparedData, params: Params) -> tuple[Split, Split]:
    """(train, val) splits; train rows filtered by ferflow.validation.training_mask if present."""
    x_train, y_train = data.split("train")
    val = data.split("val")
    try:
        from ferflow.validation import training_mask
    except ImportError:
        return (x_train, y_train), val
    mask = np.asarray(training_mask(data, params), dtype=bool)
    if len(mask) == len(data.images):  # a mask over all rows: keep its train part
        mask = mask[(data.manifest["split"] == "train").to_numpy()]
    if mask.sum() < len(mask):
        log.info("training on %d of %d train rows (validation policy)", mask.sum(), len(mask))
    return (x_train[mask], y_train[mask]), val


def _check_splits(train: Split, val: Split, data_dir: Path) -> None:
    if len(train[0]) == 0 or len(val[0]) == 0:
        raise TrainingError(
            f"{data_dir}: the train or val split is empty ({len(train[0])} / {len(val[0])} rows); "
            "re-run `ferflow ingest` with a dataset that has both"
        )


def read_history(model_dir: Path) -> list[dict[str, Any]]:
    path = model_dir / HISTORY_FILE
    return json.loads(path.read_text())["epochs"] if path.exists() else []


def write_history(model_dir: Path, records: list[dict[str, Any]]) -> Path:
    path = model_dir / HISTORY_FILE
    path.write_text(json.dumps({"epochs": records}, indent=2) + "\n")
    return path


def _load_data(params: Params, data_dir: Path) -> tuple[Split, Split]:
    data = load_prepared(data_dir)
    train, val = training_splits(data, params)
    _check_splits(train, val, data_dir)
    return train, val


# --- stages ----------------------------------------------------------------------------


def train_stage(params: Params, data_dir: Path, model_dir: Path) -> Path:
    """Phase 1 as a pipeline stage: writes head.keras, history.json and run.json."""
    from ferflow import tracking

    data_dir, model_dir = Path(data_dir), Path(model_dir)
    configure_runtime(params)
    train, val = _load_data(params, data_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    with tracking.pipeline_run(params, data_dir, model_dir, resume=False) as run:
        with tracking.phase_run(run, "head", 0, params) as epoch_logger, distribution_scope():
            model = build_model(params.model, params.base.image_size, len(params.base.classes))
            records = fit_head(model, train, val, params, model_dir / BACKUP_DIR / "head", [epoch_logger])
            tracking.log_summary("head", records)
        tracking.log_summary("head", records)
        model.save(model_dir / HEAD_FILE)
        write_history(model_dir, records)
    log.info("phase 1 done: %s (%d epochs)", model_dir / HEAD_FILE, len(records))
    return model_dir / HEAD_FILE


def finetune_stage(params: Params, data_dir: Path, model_dir: Path) -> Path:
    """Phase 2 as a pipeline stage: reads head.keras, writes model.keras and history.json,
    logs the model to the parent run and records its URI in run.json."""
    from ferflow import tracking

    data_dir, model_dir = Path(data_dir), Path(model_dir)
    configure_runtime(params)
    train, val = _load_data(params, data_dir)
    head_records = [r for r in read_history(model_dir) if r["phase"] == "head"]
    with tracking.pipeline_run(params, data_dir, model_dir, resume=True) as run:
        with (
            tracking.phase_run(run, "finetune", len(head_records), params) as epoch_logger,
            distribution_scope(),
        ):
            model = load_model(model_dir / HEAD_FILE)
            records = fine_tune(
                model,
                train,
                val,
                params,
                model_dir / BACKUP_DIR / "finetune",
                len(head_records),
                [epoch_logger],
            )
            tracking.log_summary("finetune", records)
        tracking.log_summary("finetune", records)
        model.save(model_dir / MODEL_FILE)
        write_history(model_dir, head_records + records)
        example = val[0][: min(4, len(val[0]))]
        model_uri = tracking.log_model(model, params.base.image_size, len(params.base.classes), example)
        tracking.write_run_info(
            model_dir, tracking.RunInfo(run.run_id, run.experiment_id, run.tracking_uri, model_uri)
        )
    log.info("phase 2 done: %s (%d epochs), MLflow model %s", model_dir / MODEL_FILE, len(records), model_uri)
    return model_dir / MODEL_FILE
