"""The Prefect tasks, one per row of the stage table (`ferflow.stages.STAGES`).

Each task calls its stage through `ferflow.stages.run_stage`; nothing here is written per
stage. The table decides, and these policies apply:

- Retries (exponential backoff from `flow.retry_delay_seconds`) only on the stages marked
  `network` (DVC pull/push to S3, MLflow registration). A broken data contract or a failed
  training is not transient, so the others never retry.
- A timeout per task: `flow.timeouts.<stage>`, else the stage's `timeout_s`.
- The `cached` stages (ingest, validate, train, finetune, evaluate) are skipped when their
  input files, params and code are unchanged (tasks/caching.py); a result is a small JSON
  dict (the stage's summary and its output files' hashes), never arrays.
- A failed data contract attaches its report to the flow run as an artifact, then raises.

`for_params(params)` returns the tasks, in pipeline order, with these options applied.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import Task, task
from prefect.tasks import exponential_backoff

from ferflow import stages
from ferflow.config import Params
from ferflow.stages import STAGES, DataContractError, Layout, StageSpec
from ferflow.stages.spec import task_timeouts
from tasks import reports
from tasks.caching import cache_key_for, output_hashes, outputs_intact

log = logging.getLogger(__name__)

# Cached results must outlive the process (the next flow run reads them); JSON keeps them
# small and readable under $PREFECT_HOME/storage.
CACHED = {"persist_result": True, "result_serializer": "json"}


def stage_task(spec: StageSpec) -> Task:
    """The Prefect task of one stage: `{"result": its summary, "outputs": file hashes}`."""

    def run(params: Params, layout: Layout) -> dict[str, Any]:
        try:
            result = stages.run_stage(spec.name, params, layout)
        except DataContractError as failed:
            reports.publish_contract_failure(failed.report.summary_markdown(), failed.report.to_dict())
            raise
        return {"result": result, "outputs": output_hashes(spec.name, layout)}

    # Prefect keys a task by its function's name: one per stage
    run.__name__ = run.__qualname__ = spec.name.replace("-", "_")
    run.__doc__ = f"The {spec.name} stage ({spec.entry} of ferflow.stages)."
    cache = {"cache_key_fn": cache_key_for(spec.name), **CACHED} if spec.cached else {}
    return task(name=spec.name, **cache)(run)


def for_params(params: Params) -> dict[str, Task]:
    """Each stage's task, in pipeline order, with the retries and timeout `params.flow` asks
    for (an unknown `flow.timeouts` key is an error here, before any stage runs)."""
    flow = params.flow
    timeouts = task_timeouts(params)
    network = {
        "retries": flow.network_retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=flow.retry_delay_seconds),
    }
    return {
        name: stage_task(spec).with_options(
            timeout_seconds=timeouts[name], **(network if spec.network else {"retries": 0})
        )
        for name, spec in STAGES.items()
    }


def switched_on(spec: StageSpec, params: Params, switches: dict[str, bool | None]) -> bool:
    """Whether the flow runs `spec`: always, or as its `flow.<switch>` flag (or the flow's
    argument of that name, when given) says."""
    if not spec.switch:
        return True
    chosen = switches.get(spec.switch)
    return bool(getattr(params.flow, spec.switch) if chosen is None else chosen)


def run_step(step: Task, stage: str, params: Params, layout: Layout) -> dict[str, Any]:
    """Run a stage's task; rerun a cached stage whose cache hit's files are gone or changed."""
    result: dict[str, Any] = step(params, layout)
    if STAGES[stage].cached and params.flow.cache and not outputs_intact(stage, layout, result):
        log.info("stage %s: cached result's files changed on disk; running it again", stage)
        result = step.with_options(refresh_cache=True)(params, layout)
    return result
