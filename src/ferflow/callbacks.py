"""The Keras callbacks both training phases share, and their failure rules.

- `EpochRecorder`: per-epoch metrics at the global epoch, kept beside the backup so a
  resumed phase still reports every epoch.
- `EpochBackup`: weights and optimizer state after every epoch, written by a background
  thread; `resumable_fit` restores it before `fit`.
- `DivergenceGuard`, `check_finite`: a phase whose loss or weights stop being finite, or
  whose loss explodes, fails with `TrainingError` and drops its backup.
- `phase_callbacks`: a phase's list, in the order they run at an epoch end, with the
  monitors of ferflow.monitors (validation first, the NaN guard, progress, the rate).

The wall-clock budget of a phase is ferflow.budget.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ferflow.errors import FerflowError
from ferflow.files import BACKUP_STATE
from ferflow.monitors import EpochProgress, LearningRateLog, NanGuard, Validation

log = logging.getLogger(__name__)

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
# Recorded when a phase has them: the rate at the epoch's end and a budget's plan (ferflow.budget).
EPOCH_EXTRAS = ("learning_rate", "epochs_planned")
EPOCHS_FILE = "epochs.json"  # beside state.npz in a phase's backup folder


class TrainingError(FerflowError, RuntimeError):
    """Training diverged (NaN/inf loss) or its inputs are unusable."""


def read_epoch_records(path: Path) -> list[dict[str, Any]] | None:
    """The epoch records of a backup's epochs.json; None when there is none or it is
    unreadable (truncated, garbage, not a list of records): then it is moved aside to
    `epochs.json.corrupt-<time>` with a warning, like an unreadable state.npz."""
    if not path.exists():
        return None
    try:
        records = json.loads(path.read_bytes())
        if not isinstance(records, list) or not all(
            isinstance(r, dict) and isinstance(r.get("epoch"), int) for r in records
        ):
            raise ValueError("not a list of epoch records")
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        set_aside(path, f"{type(err).__name__}: {err}")
        return None
    return records


def set_aside(path: Path, why: str) -> Path:
    """Move a damaged backup file to `<name>.corrupt-<time>` (kept for inspection), with a warning."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    log.warning(
        "the backup file %s cannot be used (%s); moved it to %s and starting this phase afresh",
        path,
        why,
        aside.name,
    )
    return aside


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


class EpochBackup(keras.callbacks.Callback):
    """Resumable training: the weights and optimizer state after every epoch, in
    `backup_dir/state.npz`; `restore` (before `fit`) returns the epoch to continue from.

    The snapshot is copied in the training loop (milliseconds) and written by a background
    thread, so training does not wait for the disk: Keras' BackupAndRestore writes
    DenseNet169's ~1,200 variables to HDF5 inside the loop, ~2 s per epoch on this CPU.
    The file is written under a temporary name and renamed, so a process killed mid-write
    leaves the previous epoch's backup intact (at most the last epoch is redone).
    """

    FILE = BACKUP_STATE

    def __init__(self, backup_dir: Path) -> None:
        super().__init__()
        self.path = backup_dir / self.FILE
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferflow-backup")
        self._pending: Future[None] | None = None

    def restore(self, model: keras.Model) -> int:
        """Loads the backup into `model` (compiled) and returns its epoch; 0 if there is none."""
        if not self.path.exists():
            return 0

        def start_afresh(kind: str, why: str) -> int:
            """Move the state and its epoch records to `<name>.<kind>-<time>`: start afresh."""
            suffix = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
            for path in (self.path, self.path.with_name("epochs.json")):
                if path.exists():
                    os.replace(path, path.with_name(f"{path.name}.{suffix}"))
            log.warning(
                "the backup %s %s; moved it to %s.%s and starting this phase afresh",
                self.path,
                why,
                self.FILE,
                suffix,
            )
            return 0

        try:
            with np.load(self.path) as state:
                epoch = int(state["epoch"])
                weights = [state[f"w{i}"] for i in range(int(state["n_weights"]))]
                slots = [state[f"o{i}"] for i in range(int(state["n_optimizer"]))]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            # A damaged backup (disk full, a copy cut short) must not block every rerun:
            # keep it aside for inspection and start the phase afresh.
            return start_afresh("corrupt", f"is unreadable ({type(err).__name__}: {err})")
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        for kind, variables, values in (
            ("weights", model.weights, weights),
            ("optimizer state", model.optimizer.variables, slots),
        ):
            if [tuple(v.shape) for v in variables] != [a.shape for a in values]:
                # another model or optimizer's backup (the stage checks params and data first)
                return start_afresh(
                    "mismatch",
                    f"holds {kind} of another model ({len(values)} arrays, {len(variables)} expected)",
                )
        for variable, value in zip(
            [*model.weights, *model.optimizer.variables], [*weights, *slots], strict=True
        ):
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
        try:
            with temporary.open("wb") as handle:
                np.savez(handle, **state)
        except BaseException:  # a full disk: no half-written snapshot stays behind
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
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
def resumable_fit(model: keras.Model, backup_dir: Path) -> Iterator[tuple[EpochBackup, int]]:
    """(backup callback, epoch to start at); every backup write has finished on exit,
    whether `fit` returned or raised, so a rerun resumes from the last completed epoch."""
    backup_dir.mkdir(parents=True, exist_ok=True)
    epochs = backup_dir / EPOCHS_FILE
    if epochs.exists() and read_epoch_records(epochs) is None and (backup_dir / EpochBackup.FILE).exists():
        # Weights without the records of their epochs cannot be resumed truthfully.
        set_aside(backup_dir / EpochBackup.FILE, f"the {EPOCHS_FILE} of its epochs was unreadable")
    backup = EpochBackup(backup_dir)
    try:
        yield backup, backup.restore(model)
    finally:
        backup.close()


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
    history: keras.callbacks.History,
    nan_guard: NanGuard,
    backup_dir: Path,
    callbacks: Sequence[keras.callbacks.Callback],
) -> None:
    """NanGuard and DivergenceGuard stop training but `fit` returns normally: turn
    either into an error.

    The backup holds the diverged weights; it is removed so a rerun starts afresh.
    """
    losses = history.history.get("loss", [])
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


SET_ASIDE_MARKS = (".corrupt-", ".mismatch-")  # backup files moved aside (EpochBackup, epochs.json)


def finish_backup(backup_dir: Path) -> None:
    """A completed phase needs no backup: remove it so a rerun starts fresh. Files that were
    set aside (unreadable, or of another model) stay for inspection, as the log said."""
    if not backup_dir.is_dir():
        return
    kept = [p for p in backup_dir.iterdir() if any(mark in p.name for mark in SET_ASIDE_MARKS)]
    if not kept:
        shutil.rmtree(backup_dir, ignore_errors=True)
        return
    for path in backup_dir.iterdir():
        if path in kept:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
