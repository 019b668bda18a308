"""The Keras callbacks both training phases share, and their failure rules.

- `EpochRecorder`: per-epoch metrics at the global epoch, kept beside the backup so a
  resumed phase still reports every epoch.
- The backup (`EpochBackup`) and resuming from it are ferflow.training.backup.
- `DivergenceGuard`, `check_finite`: a phase whose loss or weights stop being finite, or
  whose loss explodes, fails with `TrainingError` and drops its backup.
- `phase_callbacks`: a phase's list, in the order they run at an epoch end, with the
  monitors of ferflow.training.monitors (validation first, the NaN guard, progress, the rate).

The wall-clock budget of a phase is ferflow.training.budget.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ferflow.errors import FerflowError
from ferflow.training.backup import EPOCHS_FILE, EpochBackup, finish_backup, read_epoch_records
from ferflow.training.monitors import EpochProgress, LearningRateLog, NanGuard, Validation

log = logging.getLogger(__name__)

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
# Recorded when a phase has them: the rate at the epoch's end and a budget's plan (ferflow.training.budget).
EPOCH_EXTRAS = ("learning_rate", "epochs_planned")


class TrainingError(FerflowError, RuntimeError):
    """Training diverged (NaN/inf loss) or its inputs are unusable."""


class EpochRecorder(keras.callbacks.Callback):
    """Collects per-epoch metrics (global epoch, phase) and keeps them in the backup folder.

    Keras' History only sees the epochs of the current `fit`; after a resume the earlier
    epochs come back from `epochs.json` next to the `EpochBackup` snapshot.
    """

    def __init__(self, phase: str, epoch_offset: int, backup_dir: Path) -> None:
        super().__init__()
        self.phase = phase
        self.epoch_offset = epoch_offset
        self.path = backup_dir / EPOCHS_FILE
        self.records = read_epoch_records(self.path) or []
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        record: dict[str, Any] = {"epoch": self.epoch_offset + epoch, "phase": self.phase}
        record.update({k: float(logs[k]) for k in (*EPOCH_METRICS, *EPOCH_EXTRAS) if k in logs})
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


def phase_callbacks(
    phase: str,
    backup: EpochBackup,
    epoch_offset: int,
    patience: int | None,
    restore_best: bool,
    validation: Validation,
    budget: keras.callbacks.Callback | None = None,
) -> tuple[list[keras.callbacks.Callback], EpochRecorder, NanGuard]:
    """The callbacks of a phase, in the order they must run at an epoch end: validation
    first (the others read its metrics), the time budget (its plan goes into the logs), then
    the guards, the backup and the records."""
    recorder = EpochRecorder(phase, epoch_offset, backup.path.parent)
    nan_guard = NanGuard()
    callbacks: list[keras.callbacks.Callback] = [
        validation,
        *([budget] if budget is not None else []),
        LearningRateLog(),
        nan_guard,
        DivergenceGuard(),
        backup,
        recorder,
        EpochProgress(phase, epoch_offset, budget, validation.batch_size),
    ]
    if patience is not None:
        callbacks.insert(
            callbacks.index(nan_guard),
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=patience, restore_best_weights=restore_best
            ),
        )
    return callbacks, recorder, nan_guard


class DivergenceGuard(keras.callbacks.Callback):
    """Stops a phase at an epoch end whose weights are not all finite, or whose loss
    exploded (over `factor` x the first epoch's loss), and records why in `problem`; the
    phase then fails after `fit` (`_check_finite`). A huge learning rate can leave the loss
    finite while weights overflow to NaN: NanGuard does not see that."""

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


def check_finite(
    phase: str,
    history: Mapping[str, Sequence[Any]],
    nan_guard: NanGuard,
    backup_dir: Path,
    callbacks: Sequence[keras.callbacks.Callback],
) -> None:
    """NanGuard and DivergenceGuard stop training but `fit` returns normally: turn
    either into an error.

    The backup holds the diverged weights; it is removed so a rerun starts afresh.
    """
    losses = history.get("loss", [])
    bad = [i for i, value in enumerate(losses) if not math.isfinite(float(value))]
    if bad or not math.isfinite(nan_guard.loss):
        finish_backup(backup_dir)
        raise TrainingError(
            f"{phase}: the loss became NaN or infinite (epoch {bad[0] + 1 if bad else len(losses) + 1}); "
            "lower the learning rate, check the data for NaN pixels, or turn off mixed precision. "
            "Nothing was saved or registered"
        )
    problems = [c.problem for c in callbacks if isinstance(c, DivergenceGuard) and c.problem]
    if problems:
        finish_backup(backup_dir)
        raise TrainingError(
            f"{phase}: training diverged at {problems[0]}; lower the learning rate or turn off "
            "mixed precision. Nothing was saved or registered"
        )
