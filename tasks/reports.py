"""Prefect artifacts of a retraining run: the Markdown run report and per-class metrics.

The Markdown is built by plain functions (easy to test without Prefect); `publish_*`
attach it to the current flow run.
"""

from __future__ import annotations

import json
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from ferflow.evaluation.evaluate import SUMMARY_METRICS
from ferflow.stages import Layout
from ferflow.tracking.runs import recorded_run
from ferflow.tracking.store import run_page_url

REPORT_KEY = "retrain-report"
TABLE_KEY = "per-class-metrics"
CONTRACT_KEY = "data-contract-failure"


def mlflow_run_info(layout: Layout) -> dict[str, Any]:
    """models/run.json (run id, experiment id, tracking URI), or {} before training."""
    return recorded_run(layout.run_file)


def mlflow_run_link(run: dict[str, Any]) -> str:
    """A Markdown link to the MLflow run (server), or how to open it (local store)."""
    run_id, experiment = run.get("run_id"), run.get("experiment_id")
    if not run_id:
        return "no MLflow run (training did not start)"
    uri = str(run.get("tracking_uri", ""))
    if uri.startswith(("http://", "https://")):
        return f"[{run_id}]({run_page_url(uri, str(experiment), run_id)})"
    return f"`{run_id}` in `{uri}` (open with `mlflow ui --backend-store-uri {uri}`)"


def per_class_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per class: precision, recall, F1, AUC and support, from metrics.json."""
    per_class = metrics.get("per_class")
    if isinstance(per_class, dict):
        return [{"class": name, **_rounded(values)} for name, values in per_class.items()]
    # flat metrics.json: precision.<class>, recall.<class>, ...
    classes = sorted({key.split(".", 1)[1] for key in metrics if key.startswith("recall.")})
    return [
        {
            "class": name,
            **_rounded(
                {
                    kind: metrics.get(f"{kind}.{name}")
                    for kind in ("precision", "recall", "f1", "auc", "support")
                    if f"{kind}.{name}" in metrics
                }
            ),
        }
        for name in classes
    ]


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}


def run_report_markdown(
    validation: dict[str, Any],
    metrics: dict[str, Any],
    decision: dict[str, Any],
    run: dict[str, Any],
    data_version: str,
) -> str:
    """The run report: validation summary, test metrics, the promotion decision, MLflow link."""
    lines = ["# ferflow retraining run", ""]
    lines += [f"- **Data version:** `{data_version or 'not DVC-tracked'}`"]
    lines += [f"- **MLflow run:** {mlflow_run_link(run)}", ""]
    lines += ["## Data contract", "", validation.get("summary") or "(no summary)", ""]
    lines += ["## Test metrics", "", "| metric | value |", "|---|---|"]
    lines += [
        f"| {name} | {metrics[name]:.4f} |"
        for name in SUMMARY_METRICS
        if isinstance(metrics.get(name), int | float)
    ]
    lines += ["", "## Champion vs challenger", ""]
    lines += [f"- **Decision:** {decision.get('decision', 'unknown')}"]
    lines += [f"- **Reason:** {decision.get('reason', '')}"]
    lines += [f"- **Challenger:** `{decision.get('model_name')}` version {decision.get('version')}"]
    lines += [f"- **Champion before this run:** {_champion_text(decision.get('champion'))}"]
    return "\n".join(lines) + "\n"


def _champion_text(champion: Any) -> str:
    if not isinstance(champion, dict):
        return "none"
    scores = champion.get("metrics") or {}
    shown = ", ".join(
        f"{name} {scores[name]:.4f}" for name in SUMMARY_METRICS if isinstance(scores.get(name), int | float)
    )
    return f"version {champion.get('version')}" + (f" ({shown})" if shown else "")


def publish_run_report(markdown: str, metrics: dict[str, Any]) -> None:
    create_markdown_artifact(markdown=markdown, key=REPORT_KEY, description="ferflow run report")
    rows = per_class_rows(metrics)
    if rows:
        create_table_artifact(table=rows, key=TABLE_KEY, description="per-class test metrics")


def publish_contract_failure(summary: str, report: dict[str, Any]) -> None:
    """Attach the failed validation report to the run before the flow stops."""
    details = json.dumps(report, indent=2, default=str)[:20_000]
    markdown = (
        "# Data contract failed: training did not start\n\n"
        f"{summary}\n\n<details><summary>validation.json</summary>\n\n```json\n{details}\n```\n</details>\n"
    )
    create_markdown_artifact(markdown=markdown, key=CONTRACT_KEY, description="data contract failure")
