"""The retraining flow: pull -> ingest -> validate -> push -> train -> finetune -> evaluate -> register.

Only composition lives here: the flow runs the stage table (`ferflow.stages.STAGES`) in
its order, each stage as its task of `tasks.pipeline`; pull and push run when switched
on. Run it once with `ferflow run`, on a schedule with the deployment of prefect.yaml
(`infra/deploy.sh`), or as part of the demo (`python -m flows.demo`).

Guarantees:

- A data-contract failure stops the flow before training, with the report attached as
  an artifact (`data-contract-failure`).
- On failure or crash, the MLflow run this flow run started is marked FAILED or KILLED,
  never left RUNNING and never FINISHED (the try/except below plus the state hooks,
  which also cover a crash of the flow-run process).
- An unchanged rerun skips the cached stages (tasks/caching.py).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from prefect import Task, flow
from prefect.client.schemas.objects import FlowRun
from prefect.states import State

from ferflow.config import Params
from ferflow.console import redact_log_records
from ferflow.stages import STAGES, Layout, load_run_params
from tasks import guards, reports
from tasks.pipeline import for_params, run_step, switched_on

# A worker imports this file to run a deployment: ferflow's lines reach the flow run's logs
# (PREFECT_LOGGING_EXTRA_LOGGERS), masked like on the console.
redact_log_records()


def _mark_mlflow_failed(_flow: Any, flow_run: FlowRun, state: State) -> None:
    guards.fail_mlflow_run_of(flow_run, "FAILED")


def _mark_mlflow_killed(_flow: Any, flow_run: FlowRun, state: State) -> None:
    guards.fail_mlflow_run_of(flow_run, "KILLED")


@flow(
    name="ferflow-retrain",
    log_prints=True,
    on_failure=[_mark_mlflow_failed],
    on_crashed=[_mark_mlflow_killed],
    on_cancellation=[_mark_mlflow_killed],
)
def retrain(
    params_file: str = "params.yaml",
    overrides: list[str] | None = None,
    root: str = ".",
    pull_data: bool | None = None,
    push_data: bool | None = None,
) -> dict[str, Any]:
    """Retrain, evaluate and (if the gate passes) promote a model; returns the decision.

    Args:
        params_file: params.yaml, relative to `root`.
        overrides: `section.key=value` strings, validated like params.yaml.
        root: the repository (DVC workspace) the stages run in.
        pull_data: `dvc pull` the latest data version first (default: flow.pull_data).
        push_data: `dvc push` the data version afterwards (default: flow.push_data).
    """
    params, layout = load_run_params(params_file, list(overrides or []), root)
    started = time.time()
    steps = for_params(params)
    switches = {"pull_data": pull_data, "push_data": push_data}
    # The stages resolve relative paths (data.raw, the local MLflow store) against the
    # working directory: run them in the repository they belong to.
    with contextlib.chdir(layout.root):
        return _run_pipeline(params, layout, steps, started, switches)


def _run_pipeline(
    params: Params,
    layout: Layout,
    steps: dict[str, Task],
    started: float,
    switches: dict[str, bool | None],
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    try:
        for name, step in steps.items():
            if switched_on(STAGES[name], params, switches):
                results[name] = run_step(step, name, params, layout)["result"]
    except Exception:
        guards.fail_mlflow_run(params, layout, since=started, status="FAILED")
        raise
    except BaseException:  # Ctrl-C, a timeout's cancellation
        guards.fail_mlflow_run(params, layout, since=started, status="KILLED")
        raise
    metrics, decision = results.get("evaluate") or {}, results.get("register") or {}
    reports.publish_run_report(
        reports.run_report_markdown(
            results.get("validate") or {},
            metrics,
            decision,
            reports.mlflow_run_info(layout),
            guards.data_version(layout),
        ),
        metrics,
    )
    return decision
