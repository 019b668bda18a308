"""The two training phases of the study: `fit_head` (the `train` stage) and `fine_tune`
(the `finetune` stage). The stages themselves (files, MLflow) are ferflow.stages.training.

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

Both phases fail loudly on a NaN/infinite loss or diverging weights (`TrainingError`),
back up every epoch to the `backup_dir` they are given so a restarted run resumes where it
stopped, and are repeatable with `train.deterministic` (ferflow.callbacks, ferflow.runtime).
Keras 3 APIs only: the same code runs on JAX and PyTorch.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ferflow.augment import TrainingModel
from ferflow.callbacks import (
    LastBatchLoss,
    TimeBudget,
    TrainingError,
    check_finite,
    finish_backup,
    phase_callbacks,
    resumable_fit,
)
from ferflow.config import Params
from ferflow.data.dataset import PreparedData, load_prepared
from ferflow.model import feature_extractor, head_model, set_backbone_trainable
from ferflow.progress import bar
from ferflow.runtime import resolve_jit_compile
from ferflow.schedules import make_optimizer, schedule_for

log = logging.getLogger(__name__)


Split = tuple[np.ndarray, np.ndarray]  # images (n, S, S), integer labels (n,)


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


def _features(extractor: keras.Model, images: np.ndarray, batch_size: int, split: str) -> np.ndarray:
    """The backbone's pooled features of `images`, in chunks under a progress bar: on a CPU
    the whole train split takes minutes."""
    chunk = batch_size * 8
    parts = []
    with bar(total=len(images), desc=f"features {split}", unit="img") as progress:
        for start in range(0, len(images), chunk):
            batch = _as_float(images[start : start + chunk])
            parts.append(extractor.predict(batch, batch_size=batch_size, verbose=0))
            progress.update(len(batch))
    return np.concatenate(parts) if parts else np.zeros((0, *extractor.output_shape[1:]), "float32")


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
        x_train = _features(extractor, train[0], settings.batch_size * 4, "train")
        x_val = _features(extractor, val[0], settings.batch_size * 4, "val")
        log.info(
            "cached the backbone features of %d images in %.1fs",
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
    last_batch = LastBatchLoss()
    with resumable_fit(trained, backup_dir) as (backup, initial_epoch):
        callbacks, recorder = phase_callbacks(
            "train", backup, 0, settings.early_stopping_patience, settings.restore_best_weights
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
    check_finite("phase 1 (train)", history, last_batch, backup_dir, callbacks)
    finish_backup(backup_dir)
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
    last_batch = LastBatchLoss()
    budget = [] if settings.time_budget_s is None else [TimeBudget(settings.time_budget_s)]
    with resumable_fit(trainer, backup_dir) as (backup, initial_epoch):
        callbacks, recorder = phase_callbacks("finetune", backup, epoch_offset, None, False)
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
    check_finite("phase 2 (finetune)", history, last_batch, backup_dir, callbacks)
    finish_backup(backup_dir)
    return recorder.records


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


def load_training_data(params: Params, data_dir: Path) -> tuple[Split, Split]:
    """The (train, val) splits of the prepared dataset in `data_dir`; both must be non-empty."""
    data = load_prepared(data_dir)
    train, val = training_splits(data, params)
    _check_splits(train, val, data_dir)
    return train, val
