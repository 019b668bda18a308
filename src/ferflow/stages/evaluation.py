"""The `evaluate` stage, and the commands that look at models: evaluate any model on any
data, predict image files, compare two runs.

- `evaluate`: models/model.keras on the prepared test split -> reports/metrics.json,
  evaluation.json, confusion_matrix.json, plots/; logged to the MLflow parent run of
  models/run.json: the `test.*` summary metrics, the files under `evaluation/`, the
  per-class table `evaluation/per_class.json`, the curves and confusion matrices as keyed
  images (RUN_PAGE_IMAGES) that the run page shows.
- `evaluate_source`: any model (a .keras file or an MLflow URI) on the test images of any
  source ingest reads, into any folder; nothing logged.
- `predict`, `compare`: `ferflow predict` and `ferflow compare`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ferflow.config import Params
from ferflow.evaluation import evaluate as ev
from ferflow.files import PER_CLASS_ARTIFACT, file_sha256
from ferflow.stages import lineage
from ferflow.stages.layout import Layout, read_history
from ferflow.stages.training import sweep_stale_runs

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
    from ferflow.data.dataset import manifest_digest
    from ferflow.tracking import runs, store

    run = store.read_run_info(layout.run_file)
    if run is not None:  # the metrics go to this run: fail now, not after evaluating, if it is down
        store.connect(params)
        store.require_reachable(store.run_uri(run), params.tracking.connect_timeout_s)
        sweep_stale_runs(params)
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
    _log_summary(evaluation.metrics)
    return evaluation.metrics


def evaluate_source(params: Params, model: str, source: Path, out_dir: Path) -> dict[str, Any]:
    """Evaluate any model (path or MLflow URI) on the test images of any source ingest reads.

    A prepared dataset folder is read as is; anything else (folder, zip, fer2013.csv, a
    `<class>/*.jpg` folder) goes through `ferflow.data.ingest.read_source` without writing.
    """
    if not Path(source).exists():
        from ferflow.errors import FerflowError

        raise FerflowError(f"{source} does not exist; pass a prepared dataset or a FER download (--data)")
    predict_fn = load_predict_fn(model, params)  # checks the reference before loading anything
    images, labels, digest = _images_from_source(Path(source), params)
    evaluation = ev.evaluate_model(predict_fn, images, labels, params)
    ev.write_reports(
        evaluation,
        params,
        Path(out_dir),
        None,
        {"model": model, "source": str(source), "manifest_digest": digest},
    )
    _log_summary(evaluation.metrics)
    return evaluation.metrics


def _images_from_source(source: Path, params: Params) -> tuple[np.ndarray, np.ndarray, str]:
    from ferflow.data.dataset import IMAGES_FILE, manifest_digest

    if (source / IMAGES_FILE).exists():
        images, labels = ev.test_split(source)
        return images, labels, manifest_digest(source)
    from ferflow.data import ingest

    images, manifest = ingest.read_source(source, params)
    split = manifest["split"].to_numpy()
    # A folder without a split level has no "test" rows: evaluate on every image then.
    mask = split == "test" if (split == "test").any() else np.ones(len(manifest), dtype=bool)
    digest = hashlib.sha256(manifest.to_csv(index=False).encode()).hexdigest()
    return images[mask], manifest["label_index"].to_numpy()[mask].astype(np.int64), digest


def _log_summary(metrics: dict[str, Any]) -> None:
    log.info(
        "test accuracy %.4f, macro F1 %.4f, weighted F1 %.4f, macro AUC %.4f on %d images",
        metrics["accuracy"],
        metrics["macro_f1"],
        metrics["weighted_f1"],
        metrics["macro_auc"],
        metrics["n_test"],
    )


def predict(
    inputs: Sequence[str | Path], params: Params, model: str | None = None, skip_bad: bool = False
) -> list[Any]:
    """`ferflow predict`: the emotion of every image under `inputs` (files or folders), by
    `model` (default: the registered champion). The images are listed before the model loads."""
    from ferflow.evaluation import predict as prediction
    from ferflow.tracking import models, reader, store

    paths = prediction.list_images(inputs, check_named=not skip_bad)
    model = model or prediction.default_model(params)
    uri = None
    if models.is_model_uri(model):  # a wrong --model-name fails before anything loads
        check_model_reference(model)
        uri = store.connect(params)
        reader.require_registered(model, store.client(uri))
    predict_fn = load_predict_fn(model, params, uri=uri)
    log.info("predicting %d images with %s", len(paths), model)
    return prediction.predict_files(paths, predict_fn, params, skip_bad=skip_bad)


def compare(a: str | None, b: str | None, params: Params) -> Any:
    """`ferflow compare`: A and B (default champion vs challenger of register.model_name;
    when the challenger was promoted, so both are one version, the previous champion vs
    the champion: what the promotion changed)."""
    from ferflow.evaluation.compare import DEFAULT_A, DEFAULT_B, PROMOTED_FROM, compare_sides
    from ferflow.tracking import reader, store

    uri, name = store.connect(params), params.registry.model_name
    side_a, side_b = reader.read_sides(a or DEFAULT_A, b or DEFAULT_B, uri, name)
    note = None
    if a is None and b is None and side_a.run_id == side_b.run_id:
        previous = reader.read_side_if_any(PROMOTED_FROM, uri, name)
        if previous is not None and previous.run_id != side_b.run_id:
            side_a = previous
            note = f"the challenger is the champion (promoted): A is the {PROMOTED_FROM} it replaced"
    log.info(
        "comparing %s (%s) with %s (%s)", side_a.reference, side_a.run_id, side_b.reference, side_b.run_id
    )
    comparison = compare_sides(side_a, side_b, params.base.classes)
    if note:
        comparison.notes.insert(0, note)
    return comparison
