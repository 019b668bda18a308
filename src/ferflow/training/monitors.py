"""What a training phase watches while it runs, without waiting for the device after each
step: the validation pass at each epoch end (fixed-shape batches), the NaN guard, the
progress bar and the learning rate. The per-batch ones are `async_safe`, so on JAX Keras
calls them from a worker thread and the training loop keeps dispatching steps.
ferflow.training.callbacks puts them in a phase's callback list.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from ferflow.progress import bar
from ferflow.training.batching import predict_padded

log = logging.getLogger(__name__)

# Without a terminal (a log file, a Prefect or CI run) the bar is off: a progress line at
# least this often instead, so a long epoch never looks like a hang.
PROGRESS_LINE_S = 30.0


class Validation(keras.callbacks.Callback):
    """`val_loss` and `val_accuracy` at every epoch end, written into the epoch's logs.

    Keras' own validation feeds the split in `batch_size` slices, and a last slice of another
    size compiles the test step a second time. Here the model predicts fixed-size batches
    (the last one padded, its rows dropped) and the loss and accuracy are computed over the
    real rows only: exactly the numbers of an unpadded pass (the same loss function;
    regularisation terms included, as Keras adds them).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, loss: Any) -> None:
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.loss = keras.losses.get(loss)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None or len(self.x) == 0:
            return
        probs = predict_padded(self.model.predict_on_batch, self.x, self.batch_size).astype("float32")
        # the mean over the rows (a Loss object returns it already, a loss function per row)
        loss = float(np.mean(keras.ops.convert_to_numpy(self.loss(self.y, probs))))
        loss += sum(float(keras.ops.convert_to_numpy(extra)) for extra in self.model.losses)
        logs["val_loss"] = loss
        logs["val_accuracy"] = float(np.mean(probs.argmax(axis=1) == self.y.argmax(axis=1)))


class NanGuard(keras.callbacks.Callback):
    """Stops a phase as soon as a batch loss is NaN or infinite (Keras' TerminateOnNaN does
    the same, but on the main thread: a device sync after every step) and remembers it, since
    `fit` then returns before History sees the epoch."""

    async_safe = True  # reads the loss Keras already converted, in Keras' worker thread

    def __init__(self) -> None:
        super().__init__()
        self.loss = 0.0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._check((logs or {}).get("loss"))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._check((logs or {}).get("loss"))

    def _check(self, loss: Any) -> None:
        if loss is None:
            return
        self.loss = float(loss)
        if not math.isfinite(self.loss):
            self.model.stop_training = True


class EpochProgress(keras.callbacks.Callback):
    """A progress bar per epoch over its batches, with the running loss (ferflow.progress:
    shown only on a terminal). Without one, a log line every PROGRESS_LINE_S seconds: batches
    done, images/s and the epoch's ETA (EpochRecorder logs the line of each finished epoch).
    Under a planning time budget the total is the budget's current plan."""

    async_safe = True  # draws a bar or logs a line: Keras may call it from a worker thread

    def __init__(
        self,
        phase: str,
        epoch_offset: int,
        budget: Any = None,
        batch_size: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.phase = phase
        self.epoch_offset = epoch_offset
        self.budget = budget
        self.batch_size = batch_size
        self.clock = clock
        # batches of the epoch done before this `fit` (a resumed epoch: ferflow.training.backup.fit_resuming)
        self.resumed_from: Any = None
        self.batch_offset = 0
        self._bar: Any = None
        self._steps: int | None = None
        self._desc = phase
        self._started = self._last_line = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        planning = self.budget is not None and self.budget.planning
        if planning:
            total = f"{self.budget.planned}" if self.budget.planned else "?"
        else:
            total = str(self.epoch_offset + int(self.params.get("epochs") or 0))
        self._desc = f"{self.phase} epoch {self.epoch_offset + epoch + 1}/{total}"
        self.batch_offset = self.resumed_from.batch if self.resumed_from is not None else 0
        steps = self.params.get("steps")
        self._steps = self.batch_offset + steps if steps else None
        self._bar = bar(total=self._steps, initial=self.batch_offset, desc=self._desc, unit="batch")
        self._started = self._last_line = self.clock()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._bar is None:
            return
        if self._bar.disable:  # no terminal: a line now and then
            now = self.clock()
            if now - self._last_line >= PROGRESS_LINE_S:
                self._last_line = now
                log.info("%s", self._progress_line(batch + 1, now - self._started, logs))
            return
        self._bar.update(
            self.batch_offset + batch + 1 - self._bar.n
        )  # per-batch calls may skip (steps_per_execution)
        if logs and "loss" in logs:
            self._bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

    def _progress_line(self, done: int, elapsed: float, logs: dict[str, Any] | None) -> str:
        """`finetune epoch 3/37: batch 120/359, 181 images/s, loss 1.4321, epoch ETA 1m 32s`
        (`done` batches in `elapsed` seconds of this `fit`)"""
        steps = self._steps
        at = self.batch_offset + done
        parts = [f"batch {at}/{steps}" if steps else f"batch {at}"]
        rate = done / elapsed if elapsed > 0 else 0.0
        if rate and self.batch_size:
            parts.append(f"{rate * self.batch_size:.0f} images/s")
        if logs and "loss" in logs:
            parts.append(f"loss {float(logs['loss']):.4f}")
        if rate and steps:
            left = max(steps - at, 0) / rate
            parts.append(f"epoch ETA {int(left // 60)}m {int(left % 60):02d}s")
        return f"{self._desc}: {', '.join(parts)}"

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class LearningRateLog(keras.callbacks.Callback):
    """The optimizer's learning rate at each epoch end, into the epoch's logs (the schedule
    as a curve in MLflow and history.json)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None and getattr(self.model, "optimizer", None) is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
