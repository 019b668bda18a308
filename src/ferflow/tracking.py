"""MLflow tracking of training: one parent run per pipeline run, a nested run per phase.

Only this module and registry.py import mlflow. The naming follows docs/architecture.md:

- parent run `YYYYmmdd-HHMM-data<8>-p<6>`, nested runs `head` and `finetune`;
- every resolved param (`Params.flat()`) logged once on the parent, secrets redacted, and
  on each phase run the params it ran with (a stage re-run alone may differ);
- per-epoch `loss`, `accuracy`, `val_loss`, `val_accuracy` on the phase run and the parent,
  `step` = the global epoch (phase 2 continues where phase 1 stopped);
- tags `ferflow.git_commit`, `ferflow.data_version`, `ferflow.manifest_digest`,
  `ferflow.params_digest`, and the manifest as an MLflow dataset input.

`models/run.json` records the parent run so the next stage (a separate process under DVC)
logs into the same run. A stage that raises marks its runs FAILED; Ctrl-C marks them KILLED:
no run is ever left RUNNING.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ferflow.config import Params
from ferflow.errors import FerflowError

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")

# Values under keys like these never reach MLflow; URLs lose their user:password@ part.
_SECRET_KEY = re.compile(r"(secret|password|passwd|token|access_key|api_key|credential)", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
REDACTED = "***"


class TrackingError(FerflowError, RuntimeError):
    """run.json is unusable or the tracking server refused a request."""


@dataclass(frozen=True)
class RunInfo:
    """What run.json holds: where the parent run lives."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    model_uri: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "tracking_uri": redact(self.tracking_uri),
            "model_uri": self.model_uri,
        }


# --- configuration ---------------------------------------------------------------------


def tracking_uri(params: Params) -> str:
    """MLFLOW_TRACKING_URI if set, else tracking.tracking_uri."""
    return os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.tracking_uri


def redact(value: Any) -> Any:
    """Strip `user:password@` from URLs inside a string; other values unchanged."""
    if isinstance(value, str):
        return _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", value)
    return value


def safe_params(params: Params) -> dict[str, Any]:
    """`Params.flat()` with secrets removed: the dict that is logged."""
    return {
        key: REDACTED if _SECRET_KEY.search(key) and value else redact(value)
        for key, value in params.flat().items()
    }


def _connect(uri: str) -> Any:
    import mlflow

    if uri.startswith("sqlite:///"):
        # The local default store lives under mlflow/; make sure its folder exists.
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return mlflow


# --- provenance ------------------------------------------------------------------------


def git_commit() -> str:
    """HEAD's commit, with `-dirty` when tracked files changed; `unknown` outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head or "unknown"


def data_version(data_dir: Path, params: Params) -> str:
    """The DVC md5 of the raw data when it is DVC-tracked, else the manifest digest."""
    from ferflow.data.dataset import manifest_digest

    try:
        from ferflow.data.versioning import data_version as dvc_version

        version = dvc_version(Path(params.data.raw))
        if version:
            return str(version)
    except Exception as err:  # not tracked, or versioning unavailable: fall back
        log.debug("no DVC version for %s (%s); using the manifest digest", params.data.raw, err)
    return manifest_digest(data_dir)


def run_name(params: Params, data_hash: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M", time.gmtime())
    return f"{stamp}-data{data_hash[:8]}-p{params.digest()[:6]}"


# --- runs ------------------------------------------------------------------------------


def write_run_info(model_dir: Path, info: RunInfo) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / RUN_FILE
    path.write_text(json.dumps(info.to_json(), indent=2, sort_keys=True) + "\n")
    return path


def read_run_info(model_dir: Path) -> RunInfo | None:
    """models/run.json, or None when there is none."""
    path = Path(model_dir) / RUN_FILE
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        return RunInfo(
            run_id=raw["run_id"],
            experiment_id=raw["experiment_id"],
            tracking_uri=raw["tracking_uri"],
            model_uri=raw.get("model_uri"),
        )
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise TrackingError(
            f"{path} is not a ferflow run file ({err}); delete it and re-run `ferflow train`"
        ) from err


@contextlib.contextmanager
def _status_on_exit(mlflow: Any) -> Iterator[None]:
    """End the active run FAILED on an exception, KILLED on Ctrl-C, FINISHED otherwise."""
    try:
        yield
    except KeyboardInterrupt:
        mlflow.end_run(status="KILLED")
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


def set_run_status(uri: str, run_id: str, status: str) -> None:
    """Mark a run FAILED or KILLED from outside it (an orchestrator's crash hook)."""
    client = _connect(uri).MlflowClient(tracking_uri=uri)
    if client.get_run(run_id).info.status != status:
        client.set_terminated(run_id, status=status)


@contextlib.contextmanager
def pipeline_run(params: Params, data_dir: Path, model_dir: Path, *, resume: bool) -> Iterator[RunInfo]:
    """The parent run, active for the `with` block.

    resume=False starts a new parent run (phase 1) and writes run.json; resume=True reopens
    the run in run.json (later stages), or starts a new one when there is none.
    """
    uri = tracking_uri(params)
    mlflow = _connect(uri)
    while mlflow.active_run():  # a leftover from an earlier crash in this process
        mlflow.end_run(status="FAILED")
    previous = read_run_info(model_dir) if resume else None
    if previous is not None:
        active = mlflow.start_run(run_id=previous.run_id)
        info = RunInfo(active.info.run_id, active.info.experiment_id, uri, previous.model_uri)
    else:
        experiment = mlflow.set_experiment(params.tracking.experiment)
        # MLflow 3 opens experiments on the GenAI traces page unless told this is model training.
        mlflow.MlflowClient().set_experiment_tag(
            experiment.experiment_id, "mlflow.experimentKind", "custom_model_development"
        )
        version = data_version(data_dir, params)
        active = mlflow.start_run(run_name=run_name(params, version), experiment_id=experiment.experiment_id)
        info = RunInfo(active.info.run_id, active.info.experiment_id, uri)
    log.info("MLflow run %s (experiment %s) at %s", info.run_id, info.experiment_id, redact(uri))
    with _status_on_exit(mlflow):
        if previous is None:
            _log_parent_metadata(mlflow, params, data_dir, version)
            write_run_info(model_dir, info)
        yield info


def _log_parent_metadata(mlflow: Any, params: Params, data_dir: Path, version: str) -> None:
    from ferflow.data.dataset import MANIFEST_FILE, manifest_digest

    mlflow.log_params(safe_params(params))
    digest = manifest_digest(data_dir)
    mlflow.set_tags(
        {
            "ferflow.git_commit": git_commit(),
            "ferflow.data_version": version,
            "ferflow.manifest_digest": digest,
            "ferflow.params_digest": params.digest(),
        }
    )
    import pandas as pd

    manifest = pd.read_csv(Path(data_dir) / MANIFEST_FILE, dtype=str)
    dataset = mlflow.data.from_pandas(
        manifest, source=str(Path(data_dir).resolve()), name="fer-prepared", digest=digest[:36]
    )
    mlflow.log_input(dataset, context="training")


@contextlib.contextmanager
def phase_run(
    info: RunInfo, phase: str, epoch_offset: int = 0, params: Params | None = None
) -> Iterator[EpochLogger]:
    """A nested run for one phase under the active parent; yields the per-epoch logger.

    With `params`, the phase run records the params it ran with (and their digest): the
    parent holds those phase 1 started with, and a later stage re-run alone (`dvc repro`
    after a `finetune.*` change) may have run with others.
    """
    import mlflow

    # The experiment must be explicit: in a fresh process (a later DVC stage) no experiment
    # is active and the nested run would land in "Default".
    mlflow.start_run(run_name=phase, nested=True, parent_run_id=info.run_id, experiment_id=info.experiment_id)
    active = mlflow.active_run()
    assert active is not None
    with _status_on_exit(mlflow):
        if params is not None:
            mlflow.log_params(safe_params(params))
            mlflow.set_tag("ferflow.params_digest", params.digest())
        yield EpochLogger([active.info.run_id, info.run_id], epoch_offset, info.tracking_uri)


def log_summary(phase: str, records: list[dict[str, Any]]) -> None:
    """`<phase>.best_val_accuracy`, `<phase>.best_val_loss`, `<phase>.epochs` on the active run."""
    import mlflow

    if not records:
        return
    mlflow.log_metrics(
        {
            f"{phase}.best_val_accuracy": max(r["val_accuracy"] for r in records),
            f"{phase}.best_val_loss": min(r["val_loss"] for r in records),
            f"{phase}.epochs": float(len(records)),
        }
    )


class EpochLogger(keras.callbacks.Callback):
    """Logs the epoch metrics to the phase run and the parent, at the global epoch."""

    def __init__(self, run_ids: list[str], epoch_offset: int, uri: str) -> None:
        super().__init__()
        from mlflow import MlflowClient

        self.run_ids = run_ids
        self.epoch_offset = epoch_offset
        self.client = MlflowClient(tracking_uri=uri)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = self.epoch_offset + epoch
        metrics = [
            Metric(name, float(value), now, step)
            for name, value in (logs or {}).items()
            if name in EPOCH_METRICS and math.isfinite(float(value))
        ]
        for run_id in self.run_ids:
            self.client.log_batch(run_id, metrics=metrics)


# --- the model -------------------------------------------------------------------------


def log_model(model: keras.Model, image_size: int, num_classes: int, example: np.ndarray) -> str:
    """Log the Keras model once on the active run, with a signature (and an example .npy).

    Loadable with stock `mlflow.pyfunc.load_model(uri).predict(batch)` for a float32
    `(n, S, S)` batch, returning `(n, num_classes)` probabilities. Returns the model URI.
    """
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, image_size, image_size), "pixels")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes), "probabilities")]),
    )
    # No `input_example=`: MLflow 3.17's Keras flavour writes it before creating the model
    # folder (FileNotFoundError). The example goes next to the model as a .npy instead.
    info = mlflow.keras.log_model(model, name="model", signature=signature)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "input_example.npy"
        np.save(path, example.astype(np.float32), allow_pickle=False)
        mlflow.log_artifact(str(path), "model_example")
    return str(info.model_uri)
