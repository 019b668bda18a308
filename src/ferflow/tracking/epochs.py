"""The Keras callback that logs each epoch to MLflow (imported only where training runs:
it needs Keras, which the rest of ferflow.tracking does not)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import keras

from ferflow.tracking.store import HEARTBEAT_TAG, now_stamp
from ferflow.training.callbacks import EPOCH_EXTRAS, EPOCH_METRICS


class EpochLogger(keras.callbacks.Callback):
    """Logs the epoch metrics to the phase run and the parent, at the global epoch."""

    def __init__(self, run_ids: list[str], epoch_offset: int, uri: str) -> None:
        super().__init__()
        from mlflow import MlflowClient

        self.run_ids = run_ids
        self.epoch_offset = epoch_offset
        self.client = MlflowClient(tracking_uri=uri)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        step = self.epoch_offset + epoch
        metrics = [
            Metric(name, float(value), now, step)
            for name, value in (logs or {}).items()
            if name in (*EPOCH_METRICS, *EPOCH_EXTRAS) and math.isfinite(float(value))
        ]
        heartbeat = [RunTag(HEARTBEAT_TAG, now_stamp())]
        for run_id in self.run_ids:
            self.client.log_batch(run_id, metrics=metrics, tags=heartbeat)
