"""Thin Prefect tasks, each calling one stage of `ferflow.stages`.

Policies, decided here once:

- Retries (exponential backoff from `flow.retry_delay_seconds`) only on the tasks that
  touch the network: DVC pull/push to S3 and MLflow registration. A broken data contract
  or a failed training is not transient, so those never retry.
- A timeout per task from `flow.timeouts`.
- The expensive stages (ingest, validate, train, finetune, evaluate) are cached on their
  input files, params and code (tasks/caching.py); results are small JSON dicts of paths
  and hashes, never arrays.

`for_params(params)` returns the tasks with these options applied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from prefect import Task, task
from prefect.tasks import exponential_backoff

from ferflow import stages
from ferflow.config import Params
from ferflow.stages import Layout
from tasks import reports
from tasks.caching import cache_key_for, output_hashes, outputs_intact

log = logging.getLogger(__name__)

# Cached results must outlive the process (the next flow run reads them); JSON keeps them
# small and readable under $PREFECT_HOME/storage.
CACHED = {"persist_result": True, "result_serializer": "json"}


@task(name="pull-data")
def pull_data(params: Params, layout: Layout) -> str:
    """`dvc pull`: the data version git points at, from the S3 remote."""
    return stages.pull_data(params, layout)


@task(name="push-data")
def push_data(params: Params, layout: Layout) -> str:
    """`dvc push`: the data version this run trained on, to the S3 remote."""
    return stages.push_data(params, layout)


@task(name="ingest", cache_key_fn=cache_key_for("ingest"), **CACHED)
def ingest(params: Params, layout: Layout) -> dict[str, Any]:
    stages.ingest(params, layout)
    return {"prepared": str(layout.prepared), "outputs": output_hashes("ingest", layout)}


@task(name="validate", cache_key_fn=cache_key_for("validate"), **CACHED)
def validate(params: Params, layout: Layout) -> dict[str, Any]:
    """The data contract. A failure attaches the report as an artifact, then raises."""
    report = stages.validate(params, layout)
    summary = report.summary_markdown()
    if not report.passed:
        reports.publish_contract_failure(summary, report.to_dict())
        stages.require_valid(report)
    return {
        "passed": True,
        "warnings": len(report.warnings),
        "summary": summary,
        "data_docs": str(report.data_docs_index or ""),
        "outputs": output_hashes("validate", layout),
    }


@task(name="train", cache_key_fn=cache_key_for("train"), **CACHED)
def train(params: Params, layout: Layout) -> dict[str, Any]:
    stages.train(params, layout)
    return {"model": str(layout.head_model), "outputs": output_hashes("train", layout)}


@task(name="finetune", cache_key_fn=cache_key_for("finetune"), **CACHED)
def finetune(params: Params, layout: Layout) -> dict[str, Any]:
    stages.finetune(params, layout)
    return {"model": str(layout.model_file), "outputs": output_hashes("finetune", layout)}


@task(name="evaluate", cache_key_fn=cache_key_for("evaluate"), **CACHED)
def evaluate(params: Params, layout: Layout) -> dict[str, Any]:
    metrics = stages.evaluate(params, layout)
    return {"metrics": metrics, "outputs": output_hashes("evaluate", layout)}


@task(name="register")
def register(params: Params, layout: Layout) -> dict[str, Any]:
    """MLflow registration and the champion/challenger gate; never cached (a side effect)."""
    return stages.register(params, layout)


@dataclass(frozen=True)
class PipelineTasks:
    """The tasks with the timeouts, retries and caching that `params.flow` asks for."""

    pull_data: Task
    ingest: Task
    validate: Task
    train: Task
    finetune: Task
    evaluate: Task
    register: Task
    push_data: Task


def for_params(params: Params) -> PipelineTasks:
    flow = params.flow
    timeouts = flow.timeouts
    network = {
        "retries": flow.network_retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=flow.retry_delay_seconds),
    }

    def configured(base: Task, timeout: float, **options: Any) -> Task:
        return base.with_options(timeout_seconds=timeout, **options)

    return PipelineTasks(
        pull_data=configured(pull_data, timeouts.pull_data, **network),
        ingest=configured(ingest, timeouts.ingest),
        validate=configured(validate, timeouts.validation, retries=0),
        train=configured(train, timeouts.train, retries=0),
        finetune=configured(finetune, timeouts.finetune, retries=0),
        evaluate=configured(evaluate, timeouts.evaluate),
        register=configured(register, timeouts.registry, **network),
        push_data=configured(push_data, timeouts.push_data, **network),
    )


def run_cached(step: Task, stage: str, params: Params, layout: Layout) -> dict[str, Any]:
    """Run a cached stage task; rerun it when a cache hit's files are gone or changed."""
    result = step(params, layout)
    if params.flow.cache and not outputs_intact(stage, layout, result):
        log.info("stage %s: cached result's files changed on disk; running it again", stage)
        result = step.with_options(refresh_cache=True)(params, layout)
    return result
