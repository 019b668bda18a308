"""The two training phases of the study: `fit_head` (the `train` stage) and `fine_tune`
(the `finetune` stage). The stages themselves (files, MLflow) are
ferflow.stages.head_training and ferflow.stages.fine_tuning.

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
back up to the `backup_dir` they are given so a restarted run resumes where it stopped
(ferflow.training.backup), and are repeatable with `runtime.deterministic`
(ferflow.training.runtime).
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

from ferflow.config import Params
from ferflow.data.dataset import PreparedData, load_prepared, read_training_rows
from ferflow.files import TRAINING_ROWS_FILE
from ferflow.training.augment import TrainingModel
from ferflow.training.backup import finish_backup, fit_resuming, resumable_fit
from ferflow.training.batching import predict_padded, wrap_to_batches
from ferflow.training.budget import AUTO_EPOCHS_CAP, TimeBudget
from ferflow.training.callbacks import TrainingError, Validation, check_finite, phase_callbacks
from ferflow.training.model import feature_extractor, head_model, set_backbone_trainable
from ferflow.training.runtime import check_data_parallel_batch, resolve_jit_compile
from ferflow.training.schedules import WarmupSchedule, make_optimizer, schedule_for

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
    """The backbone's pooled features of `images`, in fixed-size batches (one compiled
    predict step) under a progress bar: on a CPU the whole train split takes minutes."""
    if len(images) == 0:
        return np.zeros((0, *extractor.output_shape[1:]), "float32")
    return predict_padded(
        lambda batch: extractor.predict_on_batch(_as_float(batch)), images, batch_size, f"features {split}"
    )


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
    loss = keras.losses.CategoricalCrossentropy()
    trained.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate),
        loss=loss,
        metrics=["accuracy"],
        jit_compile=resolve_jit_compile(params.runtime.jit_compile),
        steps_per_execution=_steps_per_execution(settings.cache_features, len(x_train), settings.batch_size),
    )
    check_data_parallel_batch(settings.batch_size)
    x_train, y_train = wrap_to_batches((x_train, y_train), settings.batch_size, params.base.seed)
    with resumable_fit(trained, backup_dir) as (backup, start):
        validation = Validation(x_val, y_val, settings.batch_size, loss)
        callbacks, recorder, nan_guard = phase_callbacks(
            "train", backup, 0, settings.early_stopping_patience, settings.restore_best_weights, validation
        )
        if params.runtime.deterministic:
            keras.utils.set_random_seed(params.base.seed)  # same shuffling in both feature modes
        history = trained.fit(
            x_train,
            y_train,
            batch_size=settings.batch_size,
            epochs=settings.epochs,
            initial_epoch=start.epoch,  # phase 1 backs up at epoch ends only
            callbacks=[*callbacks, *extra_callbacks],
            verbose=0,
        )
    check_finite("phase 1 (train)", history.history, nan_guard, backup_dir, callbacks)
    finish_backup(backup_dir)
    return recorder.records


# --- phase 2 ---------------------------------------------------------------------------


def balanced_class_weights(labels: np.ndarray, num_classes: int, power: float = 1.0) -> dict[int, float]:
    """(n / (k * count_c)) ** power: rare classes (disgust, ~1.5% of FER2013) weigh more.

    power 1 balances the classes fully; 0.5 (`class_weights: sqrt`) is the milder weighting
    that trades less accuracy on the common classes for the rare ones' recall.
    """
    counts = np.bincount(labels, minlength=num_classes).astype("float64")
    counts[counts == 0] = 1.0
    return {c: float((len(labels) / (num_classes * counts[c])) ** power) for c in range(num_classes)}


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
    The optimizer (`finetune.optimizer`) follows `finetune.schedule` per step. Batches are
    all full (ferflow.training.batching); under `finetune.time_budget_s` the phase ends in time, and
    with `finetune.epochs: auto` the budget plans the epochs and the schedule's end
    (ferflow.training.budget).
    """
    settings, num_classes = params.finetune, len(params.base.classes)
    if settings.epochs == 0:
        return []
    set_backbone_trainable(model, True, settings.train_batchnorm, settings.batchnorm_momentum)
    batch_size = params.train.batch_size
    check_data_parallel_batch(batch_size)
    x_train, y_train = wrap_to_batches(train, batch_size, params.base.seed)
    steps_per_epoch = len(x_train) // batch_size
    epochs = AUTO_EPOCHS_CAP if settings.epochs == "auto" else settings.epochs
    learning_rate = schedule_for(
        settings.schedule,
        settings.learning_rate,
        epochs,
        steps_per_epoch,
        settings.warmup_epochs,
        settings.final_lr_fraction,
    )
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing)
    trainer = TrainingModel(model, settings.augment, seed=params.base.seed)
    optimizer = make_optimizer(
        settings.optimizer,
        learning_rate,
        settings.momentum,
        settings.weight_decay,
        settings.ema_momentum,
        settings.nesterov,
    )
    trainer.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=["accuracy"],
        jit_compile=resolve_jit_compile(params.runtime.jit_compile),
        steps_per_execution=settings.steps_per_execution,
    )
    budget = _budget(
        settings.time_budget_s,
        settings.epochs == "auto",
        learning_rate,
        optimizer,
        trainer.trainable_variables,
        steps_per_epoch,
    )
    power = 0.5 if settings.class_weights == "sqrt" else 1.0
    class_weights = balanced_class_weights(train[1], num_classes, power) if settings.class_weights else None
    row_weights = None if class_weights is None else np.array([*class_weights.values()], "float32")[y_train]
    arrays = (_as_pixels(x_train), _one_hot(y_train, num_classes))
    arrays += () if row_weights is None else (row_weights,)
    with resumable_fit(trainer, backup_dir, settings.backup_every_s) as (backup, start):
        validation = Validation(_as_pixels(val[0]), _one_hot(val[1], num_classes), batch_size, loss)
        callbacks, recorder, nan_guard = phase_callbacks(
            "finetune", backup, epoch_offset, None, False, validation, budget
        )
        if params.runtime.deterministic:
            keras.utils.set_random_seed(params.base.seed)
        history = fit_resuming(
            trainer,
            start,
            lambda epoch, skip: training_input(arrays, batch_size, params.base.seed, epoch, skip),
            epochs,
            [*callbacks, *extra_callbacks],
        )
    check_finite("phase 2 (finetune)", history, nan_guard, backup_dir, callbacks)
    finish_backup(backup_dir)
    return recorder.records


def _budget(
    seconds: float | None,
    auto: bool,
    learning_rate: Any,
    optimizer: keras.optimizers.Optimizer,
    trainable_variables: list[Any],
    steps_per_epoch: int,
) -> TimeBudget | None:
    """The phase's time budget; under `epochs: auto` it also moves the schedule's end (a
    schedule's total steps become an optimizer variable it sets, ferflow.training.budget)."""
    if seconds is None:
        return None
    if not auto:
        return TimeBudget(seconds)
    total = None
    if isinstance(learning_rate, WarmupSchedule):
        # built now, so the new variable comes after the slots, in the same order in every
        # run (a backup restores into them by position)
        optimizer.build(trainable_variables)
        total = learning_rate.track_total(optimizer)
    return TimeBudget(seconds, plan=True, total_steps=total, steps_per_epoch=steps_per_epoch)


class EpochBatches(keras.utils.PyDataset):
    """Phase 2's training batches: each epoch's rows are a permutation drawn from the seed
    and the epoch's number alone, so a resumed run knows which rows an epoch's first
    batches held and can leave them out (ferflow.training.backup.fit_resuming).

    The rows must be whole batches already (ferflow.training.batching). Epochs start at
    `first_epoch`; `skip` leaves out that epoch's first batches (a dataset of one epoch: its
    length is the batches left). `fit` must not reshuffle the batches (`shuffle=False`).

    `on_device` (JAX, one device): Keras' array input copies every batch from host memory
    to the device; here the images, as uint8 (FER2013's train split is ~53 MB), the one-hot
    labels and the per-row weights go to the device once, each epoch sends its order (a few
    KB) and each batch is a gather on the device, dispatched without waiting.
    """

    def __init__(
        self,
        arrays: tuple[np.ndarray, ...],
        batch_size: int,
        seed: int | None = None,
        first_epoch: int = 0,
        skip: int = 0,
        on_device: bool = False,
    ) -> None:
        super().__init__()  # read in the training loop's thread: no workers, no copies
        rows = len(arrays[0])
        if rows % batch_size:
            raise ValueError(f"{rows} rows are not whole batches of {batch_size}: wrap_to_batches first")
        if not 0 <= skip < rows // batch_size:
            raise ValueError(f"cannot skip {skip} of the {rows // batch_size} batches of an epoch")
        self.on_device = on_device
        self.arrays = tuple(keras.ops.convert_to_tensor(a) for a in arrays) if on_device else arrays
        self.rows, self.batch_size, self.seed = rows, batch_size, seed or 0
        self.epoch, self.skip = first_epoch, skip
        self.order = self._order()

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The rows of `epoch`, in the order its batches take them."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.rows).astype("int32")

    def _order(self) -> Any:
        order = self.epoch_order(self.epoch)[self.skip * self.batch_size :]
        return keras.ops.convert_to_tensor(order) if self.on_device else order

    def __len__(self) -> int:
        return self.rows // self.batch_size - self.skip

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        if self.on_device:
            return tuple(keras.ops.take(a, rows, axis=0) for a in self.arrays)
        return tuple(a[rows] for a in self.arrays)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()


def training_input(
    arrays: tuple[np.ndarray, ...], batch_size: int, seed: int | None, epoch: int = 0, skip: int = 0
) -> dict[str, Any]:
    """`fit`'s data arguments for whole-batch training rows (x, y and optionally per-row
    weights), from `epoch` on with its first `skip` batches left out: `EpochBatches`, on the
    device on JAX with one device."""
    on_device = keras.backend.backend() == "jax" and keras.distribution.distribution() is None
    return {"x": EpochBatches(arrays, batch_size, seed, epoch, skip, on_device), "shuffle": False}


def _as_pixels(images: np.ndarray) -> np.ndarray:
    """Images as the model reads them: uint8 stays uint8 (4x less to copy per batch; the
    training wrapper casts inside the step), anything else becomes float32."""
    images = np.asarray(images)
    return images if images.dtype == np.uint8 else images.astype("float32")


# --- data and files --------------------------------------------------------------------


def training_splits(data: PreparedData, keep: np.ndarray | None = None) -> tuple[Split, Split]:
    """(train, val) splits; with `keep` (a bool mask over the train split, as
    `TrainingRows.mask` gives it) only the train rows it keeps."""
    x_train, y_train = data.split("train")
    val = data.split("val")
    if keep is None:
        return (x_train, y_train), val
    keep = np.asarray(keep, dtype=bool)
    if len(keep) != len(x_train):
        raise TrainingError(f"the training rows mask has {len(keep)} rows, the train split {len(x_train)}")
    if keep.sum() < len(keep):
        log.info("training on %d of %d train rows (validate's policies)", keep.sum(), len(keep))
    return (x_train[keep], y_train[keep]), val


def _check_splits(train: Split, val: Split, data_dir: Path) -> None:
    if len(train[0]) == 0 or len(val[0]) == 0:
        raise TrainingError(
            f"{data_dir}: the train or val split is empty ({len(train[0])} / {len(val[0])} rows); "
            "re-run `ferflow ingest` with a dataset that has both"
        )


def load_training_data(data_dir: Path, rows_file: Path | None = None) -> tuple[Split, Split]:
    """The (train, val) splits of the prepared dataset in `data_dir`, the train rows those
    `rows_file` (reports/training_rows.json, from `ferflow validate`) keeps; both non-empty."""
    data = load_prepared(data_dir)
    rows = read_training_rows(rows_file, data_dir) if rows_file is not None else None
    if rows is None:
        log.warning(
            "no %s (`ferflow validate` writes it): training on every train row, none left out by "
            "validate's policies",
            rows_file or TRAINING_ROWS_FILE,
        )
    train, val = training_splits(data, None if rows is None else rows.mask())
    _check_splits(train, val, data_dir)
    return train, val
