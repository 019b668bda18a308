"""What a failed or crashed flow run must clean up: its MLflow run.

A flow run that fails after training started must not leave its MLflow run RUNNING (it
looks alive forever) nor FINISHED (it looks like a good run). Only the run this flow run
trained is touched: the one in models/run.json when training (train or finetune) wrote
that file after the flow run started. A run from an earlier flow run whose training was
cached keeps its status.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ferflow.config import Params
from ferflow.errors import FerflowError
from ferflow.stages import RUN_FILE, Paths
from ferflow.tracking import set_run_status
from tasks.reports import mlflow_run_info

log = logging.getLogger(__name__)

TERMINAL_FAILURES = ("FAILED", "KILLED")


def fail_mlflow_run(params: Params, paths: Paths, since: float, status: str) -> str | None:
    """Mark the MLflow run of models/run.json `status` if training wrote it after `since` (epoch s).

    Returns the run id it marked, or None. Never raises: it runs while a failure is
    already being reported, and must not hide it.
    """
    if status not in TERMINAL_FAILURES:
        raise ValueError(f"status must be one of {TERMINAL_FAILURES}, got {status!r}")
    run_file = paths.models / RUN_FILE
    run = mlflow_run_info(paths)
    if not run.get("run_id") or run_file.stat().st_mtime < since:
        return None
    try:
        set_run_status(_tracking_uri(params, run), run["run_id"], status)
    except Exception as err:  # reporting a failure must not raise another one
        log.warning("could not mark MLflow run %s %s: %s", run.get("run_id"), status, err)
        return None
    log.info("marked MLflow run %s %s", run["run_id"], status)
    return str(run["run_id"])


def _tracking_uri(params: Params, run: dict[str, Any]) -> str:
    """MLFLOW_TRACKING_URI, else the URI the run was logged to, else params."""
    return os.environ.get("MLFLOW_TRACKING_URI") or run.get("tracking_uri") or params.tracking.tracking_uri


def fail_mlflow_run_of(flow_run: Any, status: str) -> str | None:
    """The state-hook form: params and paths from the flow run's parameters."""
    from flows.retrain import load_run_params

    parameters = dict(flow_run.parameters or {})
    try:
        params, paths = load_run_params(
            parameters.get("params_file", "params.yaml"),
            list(parameters.get("overrides") or []),
            parameters.get("root", "."),
        )
    except FerflowError as err:
        log.warning("flow run %s: cannot read its params (%s); MLflow untouched", flow_run.id, err)
        return None
    since = flow_run.start_time.timestamp() if flow_run.start_time else 0.0
    return fail_mlflow_run(params, paths, since, status)


def data_version(paths: Paths) -> str:
    """The DVC version of the raw data for the report; '' when it is not tracked."""
    try:
        from ferflow.stages import data_version as stage_data_version

        return stage_data_version(paths)
    except (FerflowError, ImportError, OSError) as err:
        log.debug("no DVC data version for %s: %s", Path(paths.raw), err)
        return ""
