"""What a failed or crashed flow run must clean up: its MLflow run.

A flow run that fails after training started must not leave its MLflow run RUNNING (it
looks alive forever) nor FINISHED (it looks like a good run). Only the run this flow run
trained is touched: the one in models/run.json when training (train or finetune) wrote
that file after the flow run started. A run from an earlier flow run whose training was
cached keeps its status.
"""

from __future__ import annotations

import logging
from typing import Any

from ferflow.config import Params
from ferflow.errors import FerflowError
from ferflow.stages import Layout, load_run_params
from ferflow.tracking.runs import mark_recorded_run

log = logging.getLogger(__name__)

TERMINAL_FAILURES = ("FAILED", "KILLED")


def fail_mlflow_run(params: Params, layout: Layout, since: float, status: str) -> str | None:
    """Mark the MLflow run of models/run.json `status` if training wrote it after `since`."""
    if status not in TERMINAL_FAILURES:
        raise ValueError(f"status must be one of {TERMINAL_FAILURES}, got {status!r}")
    return mark_recorded_run(layout.run_file, since, status)


def fail_mlflow_run_of(flow_run: Any, status: str) -> str | None:
    """The state-hook form: params and layout from the flow run's parameters."""
    parameters = dict(flow_run.parameters or {})
    try:
        params, layout = load_run_params(
            parameters.get("params_file", "params.yaml"),
            list(parameters.get("overrides") or []),
            parameters.get("root", "."),
        )
    except FerflowError as err:
        log.warning("flow run %s: cannot read its params (%s); MLflow untouched", flow_run.id, err)
        return None
    since = flow_run.start_time.timestamp() if flow_run.start_time else 0.0
    return fail_mlflow_run(params, layout, since, status)


def data_version(layout: Layout) -> str:
    """The DVC version of the raw data for the report; '' when it is not tracked."""
    from ferflow.stages.sync import data_version as stage_data_version

    try:
        return stage_data_version(layout)
    except (FerflowError, OSError) as err:
        log.debug("no DVC data version for %s: %s", layout.raw, err)
        return ""
