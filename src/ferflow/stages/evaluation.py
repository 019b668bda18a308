"""The `evaluate` stage: models/model.keras on the prepared test split -> reports/metrics.json,
scores.json, evaluation.json, confusion_matrix.json, plots/; logged to the MLflow parent run
of models/run.json: the `test.*` summary metrics, the files under `evaluation/`, the
per-class table `evaluation/per_class.json`, the curves and confusion matrices as keyed
images (RUN_PAGE_IMAGES) that the run page shows.

`check_model_reference` and `load_predict_fn` load any model the commands name (a .keras
file or an MLflow URI): `ferflow evaluate --model`, `predict` and the register stage use them.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from ferflow.config import Params
from ferflow.evaluation import evaluate as ev
from ferflow.files import PER_CLASS_ARTIFACT, file_sha256
from ferflow.stages import lineage
from ferflow.stages.layout import Layout, read_history

log = logging.getLogger(__name__)


# The figures the run page shows among its charts (MLflow keyed images), PNG -> key; the
# rest of reports/plots/ is under the run's Artifacts only.
RUN_PAGE_IMAGES = {
    "accuracy.png": "curves/accuracy",
    "loss.png": "curves/loss",
    "confusion_matrix.png": "confusion/counts",
    "confusion_matrix_normalized.png": "confusion/normalized",
}

_MODEL_URI = re.compile(r"^(models:/[^/@\s]+(/\d+|@[\w.-]+)|runs:/[0-9a-f]{32}/\S+)$")


def check_model_reference(model: str) -> None:
    """Fail at once, before any heavy import, on a model reference that cannot be right:
    a malformed `models:/` or `runs:/` URI, or a local file that does not exist."""
    from ferflow.errors import FerflowError

    if model.startswith(("models:/", "runs:/")):
        if not _MODEL_URI.match(model):
            raise FerflowError(
                f"{model!r} is not a model URI; use models:/NAME/VERSION, models:/NAME@ALIAS "
                "or runs:/RUN_ID/model"
            )
    elif "://" not in model and not Path(model).exists():
        raise FerflowError(f"model file {model} not found; pass a .keras file or an MLflow model URI")


def load_predict_fn(
    model: str, params: Params, batch_size: int | None = None, uri: str | None = None
) -> ev.PredictFn:
    """A predict_fn for a local .keras file or an MLflow model URI (`uri`: the tracking URI
    when the caller has connected already)."""
    batch_size = batch_size or params.evaluate.batch_size
    from ferflow.tracking import models, store

    check_model_reference(model)
    if not models.is_model_uri(model):
        return ev.load_keras_predict_fn(Path(model), batch_size)
    return models.load_predict_fn(model, uri or store.connect(params), batch_size)


def evaluate(params: Params, layout: Layout) -> dict[str, Any]:
    """The pipeline's evaluate stage; returns the metrics dict written to metrics.json."""
    from ferflow import tracking
    from ferflow.data.dataset import manifest_digest
    from ferflow.tracking import runs, store

    run = store.read_run_info(layout.run_file)
    if run is not None:  # the metrics go to this run: fail now, not after evaluating, if it is down
        session = tracking.connect(params)
        store.require_reachable(store.run_uri(run), params.tracking.connect_timeout_s)
        session.sweep_stale()
    predict_fn = ev.load_keras_predict_fn(layout.model_file, params.evaluate.batch_size)
    images, labels = ev.test_split(layout.prepared)
    evaluation = ev.evaluate_model(predict_fn, images, labels, params)
    provenance = {
        "model": str(layout.model_file),
        "model_sha256": file_sha256(layout.model_file),
        "manifest_digest": manifest_digest(layout.prepared),
        "data_dir": str(layout.prepared),
    }
    history = read_history(layout.history_file) or None
    ev.write_reports(evaluation, params, layout.reports, history, provenance)
    made = lineage.read(lineage.sidecar(layout.model_file))
    if run is None:
        log.warning("%s is missing: metrics are not logged to MLflow", layout.run_file)
    elif made is not None and made.run_id != run.run_id:
        log.warning(
            "%s was made by run %s, not by run %s of %s: its metrics are not logged to that run",
            layout.model_file,
            made.run_id,
            run.run_id,
            layout.run_file,
        )
    else:
        files = [layout.metrics_file, layout.confusion_file, layout.evaluation_file, layout.plots_dir]
        runs.log_evaluation(
            store.run_uri(run),
            run.run_id,
            ev.flat_metric_names(evaluation.metrics),
            files,
            tables={PER_CLASS_ARTIFACT: ev.per_class_table(evaluation.metrics)},
            images={key: layout.plots_dir / png for png, key in RUN_PAGE_IMAGES.items()},
            step=max((row["epoch"] for row in history or []), default=0),
        )
    log_summary(evaluation.metrics)
    return evaluation.metrics


def log_summary(metrics: dict[str, Any]) -> None:
    log.info(
        "test accuracy %.4f, macro F1 %.4f, weighted F1 %.4f, macro AUC %.4f on %d images",
        metrics["accuracy"],
        metrics["macro_f1"],
        metrics["weighted_f1"],
        metrics["macro_auc"],
        metrics["n_test"],
    )
