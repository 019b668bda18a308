"""The epoch timer the benchmarks share (they run as scripts, so bench/ is on sys.path)."""

from __future__ import annotations

import time

import keras


class EpochTimer(keras.callbacks.Callback):
    """Appends each epoch's wall seconds to `wall` and, when given, this process's CPU
    seconds to `cpu`: lists the caller keeps across several fits."""

    def __init__(self, wall: list[float], cpu: list[float] | None = None) -> None:
        super().__init__()
        self.wall, self.cpu = wall, cpu

    def on_epoch_begin(self, epoch, logs=None):
        self.started, self.cpu_started = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.wall.append(time.perf_counter() - self.started)
        if self.cpu is not None:
            self.cpu.append(time.process_time() - self.cpu_started)
