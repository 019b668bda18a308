"""Resumable training: a phase's backup folder, and how `fit` continues from it.

- `EpochBackup`: the weights and optimizer state after every epoch and, with `every_s`,
  every so many seconds inside an epoch (phase 2: a CPU epoch takes minutes). The training
  loop only copies the arrays; a background thread writes them. The file holds where to
  continue: the epoch, how many of its batches were done, and their running loss and
  accuracy.
- `resumable_fit`: restores the backup before `fit` and yields (backup, `ResumePoint`).
- `fit_resuming`: `fit` from a `ResumePoint`. A point inside an epoch first trains that
  epoch's remaining batches, in the order the epoch had (the rows of an epoch are a
  permutation drawn from the seed and the epoch alone: ferflow.training.train.EpochBatches), and
  reports the epoch's loss and accuracy over all its batches; then the epochs after it.
  So a run killed mid-epoch loses at most `every_s` of work and sees every row once per
  epoch, as if it had not been stopped. (The random augmentation of the redone batches
  differs: its generator is not in the backup.)
- `finish_backup`, `set_aside`, `read_epoch_records`: the folder's life.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ferflow.files import BACKUP_STATE

log = logging.getLogger(__name__)

EPOCHS_FILE = "epochs.json"  # beside state.npz in a phase's backup folder
RUNNING_METRICS = ("loss", "accuracy")  # the running means a mid-epoch backup keeps
SET_ASIDE_MARKS = (".corrupt-", ".mismatch-")  # backup files moved aside (EpochBackup, epochs.json)


@dataclass(frozen=True)
class ResumePoint:
    """Where a phase continues: `batch` batches of epoch `epoch` (0-based) are done, with
    `running` the means of RUNNING_METRICS over them. (0, 0) is a fresh start."""

    epoch: int = 0
    batch: int = 0
    running: Mapping[str, float] = field(default_factory=dict)


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


class EpochBackup(keras.callbacks.Callback):
    """Resumable training: the weights and optimizer state in `backup_dir/state.npz`, after
    every epoch and, with `every_s`, at the first batch end `every_s` seconds after the last
    snapshot; `restore` (before `fit`) returns the `ResumePoint` to continue from.

    The snapshot is copied in the training loop (milliseconds) and written by a background
    thread, so training does not wait for the disk: Keras' BackupAndRestore writes
    DenseNet169's ~1,200 variables to HDF5 inside the loop, ~2 s per epoch on this CPU.
    The file is written under a temporary name and renamed, so a process killed mid-write
    leaves the previous snapshot intact.
    """

    FILE = BACKUP_STATE

    def __init__(
        self, backup_dir: Path, every_s: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.path = backup_dir / self.FILE
        self.every_s, self.clock = every_s, clock
        # where this `fit` started inside its first epoch (a resumed epoch: fit_resuming)
        self.resumed_from = ResumePoint()
        self._epoch, self._last = 0, clock()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferflow-backup")
        self._pending: Future[None] | None = None

    def restore(self, model: keras.Model) -> ResumePoint:
        """Loads the backup into `model` (compiled) and returns where to continue; a fresh
        start when there is none."""
        if not self.path.exists():
            return ResumePoint()

        def start_afresh(kind: str, why: str) -> ResumePoint:
            """Move the state and its epoch records to `<name>.<kind>-<time>`: start afresh."""
            suffix = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
            for path in (self.path, self.path.with_name(EPOCHS_FILE)):
                if path.exists():
                    os.replace(path, path.with_name(f"{path.name}.{suffix}"))
            log.warning(
                "the backup %s %s; moved it to %s.%s and starting this phase afresh",
                self.path,
                why,
                self.FILE,
                suffix,
            )
            return ResumePoint()

        try:
            with np.load(self.path) as state:
                epoch = int(state["epoch"])
                batch = int(state["batch"]) if "batch" in state else 0  # older backups: epoch ends
                running = {
                    k: float(state[f"running_{k}"]) for k in RUNNING_METRICS if f"running_{k}" in state
                }
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
        if batch:
            log.info("resuming from %s in epoch %d, after its batch %d", self.path, epoch + 1, batch)
        else:
            log.info("resuming from %s at epoch %d", self.path, epoch + 1)
        return ResumePoint(epoch, batch, running)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # Before a step, on the training thread: a batch-end hook would make Keras run every
        # batch hook on the training thread (they are async only if all are async-safe), and
        # the loop would wait for the device at every step.
        if batch == 0 or not self.every_s or self.clock() - self._last < self.every_s:
            return
        self._sync()
        results = self.model.get_metrics_result()  # the running means of this `fit`'s batches
        running = {k: float(results[k]) for k in RUNNING_METRICS if k in results}
        done = self.resumed_from.batch + batch
        self._snapshot(self._epoch, done, merge_running(self.resumed_from, batch, running))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.resumed_from = ResumePoint()
        self._sync()
        self._snapshot(epoch + 1, 0, {})

    def _sync(self) -> None:
        sync = getattr(self._model, "jax_state_sync", None)
        if sync is not None:  # JAX keeps the state off the model inside an epoch
            sync()

    def _snapshot(self, epoch: int, batch: int, running: Mapping[str, float]) -> None:
        weights = [np.array(v, copy=True) for v in self.model.weights]
        slots = [np.array(v, copy=True) for v in self.model.optimizer.variables]
        state: dict[str, Any] = {f"w{i}": a for i, a in enumerate(weights)}
        state |= {f"o{i}": a for i, a in enumerate(slots)}
        state |= {f"running_{k}": np.float64(v) for k, v in running.items()}
        state |= {
            "epoch": np.int64(epoch),
            "batch": np.int64(batch),
            "n_weights": len(weights),
            "n_optimizer": len(slots),
        }
        self.wait()  # at most one write in flight
        self._pending = self._writer.submit(self._write, state)
        self._last = self.clock()

    def _write(self, state: dict[str, Any]) -> None:
        temporary = self.path.with_name(f".{self.FILE}.partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
def resumable_fit(
    model: keras.Model, backup_dir: Path, every_s: float | None = None
) -> Iterator[tuple[EpochBackup, ResumePoint]]:
    """(backup callback, where to start); every backup write has finished on exit, whether
    `fit` returned or raised, so a rerun resumes from the last snapshot."""
    backup_dir.mkdir(parents=True, exist_ok=True)
    epochs = backup_dir / EPOCHS_FILE
    if epochs.exists() and read_epoch_records(epochs) is None and (backup_dir / EpochBackup.FILE).exists():
        # Weights without the records of their epochs cannot be resumed truthfully.
        set_aside(backup_dir / EpochBackup.FILE, f"the {EPOCHS_FILE} of its epochs was unreadable")
    backup = EpochBackup(backup_dir, every_s)
    try:
        yield backup, backup.restore(model)
    finally:
        backup.close()


def merge_running(point: ResumePoint, done_here: int, running: Mapping[str, float]) -> dict[str, float]:
    """Running means over a whole epoch so far: `point.batch` batches before this `fit` (with
    `point.running`) and `done_here` since (with `running`). All batches are full, so each
    weighs the same."""
    before = point.batch
    merged = dict(running)
    for key, value in point.running.items():
        if key in merged and before + done_here:
            merged[key] = (before * value + done_here * merged[key]) / (before + done_here)
    return merged


class ResumedEpoch(keras.callbacks.Callback):
    """First in the callback list of a resumed epoch's `fit`: the running loss and accuracy
    in the logs become those of the whole epoch so far (`merge_running`)."""

    async_safe = True  # only rewrites numbers in the logs

    def __init__(self, point: ResumePoint) -> None:
        super().__init__()
        self.point = point

    def _merge(self, done_here: int, logs: dict[str, Any] | None) -> None:
        if logs is None:
            return
        values = {k: float(logs[k]) for k in self.point.running if k in logs}
        logs.update(merge_running(self.point, done_here, values))

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._merge(batch + 1, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._merge(int(self.params.get("steps") or 0), logs)


def fit_resuming(
    model: keras.Model,
    point: ResumePoint,
    inputs: Callable[[int, int], dict[str, Any]],
    epochs: int,
    callbacks: Sequence[keras.callbacks.Callback],
) -> dict[str, list[Any]]:
    """`model.fit` from `point` to `epochs`; returns the history of the epochs it ran.

    `inputs(epoch, skip)` gives `fit`'s data arguments for the epochs from `epoch` on, the
    first `skip` batches of `epoch` left out (then for that one epoch). A point inside an
    epoch is two `fit` calls: that epoch's remaining batches, then the epochs after it
    (unless a callback stopped training in the first). Callbacks with a `resumed_from`
    attribute are told where the first call starts inside its epoch.
    """
    history: dict[str, list[Any]] = {}

    def run(start: int, begin: ResumePoint, end: int, extra: Sequence[keras.callbacks.Callback]) -> None:
        for callback in callbacks:
            if hasattr(callback, "resumed_from"):
                callback.resumed_from = begin
        skip = begin.batch
        ran = model.fit(
            **inputs(start, skip), epochs=end, initial_epoch=start, callbacks=[*extra, *callbacks], verbose=0
        )
        for key, values in ran.history.items():
            history.setdefault(key, []).extend(values)

    start = point.epoch
    if point.batch and start < epochs:
        run(start, point, start + 1, [ResumedEpoch(point)])
        if model.stop_training:
            return history
        start += 1
    if start < epochs:
        run(start, ResumePoint(start), epochs, [])
    return history


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
