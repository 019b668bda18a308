"""Metrics and reports of a model on a test split (the study's Figures 9-13).

Everything here works on a plain `predict_fn(batch) -> probabilities`, whatever the model
is (a .keras file, an MLflow URI: ferflow.tracking.models loads those): the metrics
(accuracy, macro/weighted F1, macro AUC, per class), the report files (`metrics.json` for
`dvc metrics`, plot data for `dvc plots`) and the figures (ferflow.evaluation.plots). The evaluate
stage (ferflow.stages.evaluation) decides where they go and logs them to MLflow.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferflow.config import Params
from ferflow.errors import FerflowError
from ferflow.evaluation.plots import (
    confusion_figures,
    history_figures,
    metrics_lib,
    per_class_figure,
    roc_figure,
)
from ferflow.files import (
    CONFUSION_CSV,
    CONFUSION_JSON,
    EVALUATION_FILE,
    HISTORY_CSV,
    METRICS_FILE,
    PER_CLASS_CSV,
    PLOTS_DIR,
    ROC_CSV,
    SCORES_FILE,
    write_json,
)
from ferflow.training.batching import predict_padded

log = logging.getLogger(__name__)

PredictFn = Callable[[np.ndarray], np.ndarray]


class EvaluationError(FerflowError, ValueError):
    """The model or the data cannot be evaluated; the message says which and why."""


@dataclass(frozen=True)
class Evaluation:
    """Everything one evaluation produced."""

    metrics: dict[str, Any]  # what metrics.json holds
    probabilities: np.ndarray  # (n, k) float
    labels: np.ndarray  # (n,) int, the true classes
    confusion: np.ndarray  # (k, k) counts, rows = actual


# --- prediction ------------------------------------------------------------------------


def predict_probabilities(
    predict_fn: PredictFn, images: np.ndarray, batch_size: int, tta_flip: bool = False
) -> np.ndarray:
    """Class probabilities for `images` (n, S, S) in batches of exactly `batch_size` rows (the
    last one padded, ferflow.training.batching: a compiled predict step compiles once); optionally
    averaged with the mirror image."""
    if len(images) == 0:
        raise EvaluationError("no images to evaluate: the test split is empty")

    def scored(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        probs = np.asarray(predict_fn(batch), dtype=np.float64)
        if tta_flip:
            # A mirrored face keeps its expression: averaging both views is cheap test-time
            # augmentation (the flip is along the width axis).
            probs = (probs + np.asarray(predict_fn(batch[:, :, ::-1].copy()), dtype=np.float64)) / 2
        return probs

    return predict_padded(scored, images, batch_size, desc="evaluate")


def check_probabilities(probs: np.ndarray, n: int, n_classes: int, source: str) -> None:
    """Raise unless `probs` is (n, n_classes) of finite numbers: a wrong model fails loudly."""
    if probs.shape != (n, n_classes):
        raise EvaluationError(
            f"{source} returned shape {probs.shape} for {n} images; expected ({n}, {n_classes}) "
            "class probabilities (is it a 7-class FER model taking (n, 48, 48) grayscale input?)"
        )
    if not np.all(np.isfinite(probs)):
        raise EvaluationError(f"{source} returned NaN or infinite probabilities")


# --- metrics ---------------------------------------------------------------------------


def compute_metrics(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, macro AUC and per-class precision/recall/F1/support/AUC."""
    k = len(classes)
    predicted = probs.argmax(axis=1)
    indices = list(range(k))
    precision, recall, f1, support = metrics_lib().precision_recall_fscore_support(
        labels, predicted, labels=indices, zero_division=0
    )
    auc = _per_class_auc(labels, probs, k)
    present = [a for a in auc if a is not None]
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            # a class absent from the test split has no ROC curve; NaN would break JSON
            **({"auc": auc[i]} if auc[i] is not None else {}),
        }
        for i, name in enumerate(classes)
    }
    return {
        "accuracy": float(metrics_lib().accuracy_score(labels, predicted)),
        "macro_f1": float(
            metrics_lib().f1_score(labels, predicted, labels=indices, average="macro", zero_division=0)
        ),
        "weighted_f1": float(
            metrics_lib().f1_score(labels, predicted, labels=indices, average="weighted", zero_division=0)
        ),
        "macro_auc": float(np.mean(present)) if present else 0.0,
        "n_test": len(labels),
        "per_class": per_class,
    }


def _per_class_auc(labels: np.ndarray, probs: np.ndarray, k: int) -> list[float | None]:
    """One-vs-rest ROC AUC per class; None where the class (or its complement) is absent."""
    result: list[float | None] = []
    for i in range(k):
        positives = labels == i
        if positives.all() or not positives.any():
            result.append(None)
        else:
            result.append(float(metrics_lib().roc_auc_score(positives, probs[:, i])))
    return result


SUMMARY_METRICS = ("accuracy", "macro_f1", "weighted_f1", "macro_auc")
PER_CLASS_COLUMNS = ("class", "precision", "recall", "f1", "auc", "support")


def flat_metric_names(metrics: dict[str, Any]) -> dict[str, float]:
    """The MLflow metric names of docs/architecture.md: test.accuracy, test.macro_f1,
    test.weighted_f1, test.macro_auc. Per-class numbers are a table (`per_class_table`):
    35 scalars would be 35 charts on the run page."""
    return {f"test.{key}": float(metrics[key]) for key in SUMMARY_METRICS}


def per_class_table(metrics: dict[str, Any]) -> dict[str, list[Any]]:
    """The per-class test metrics as columns (PER_CLASS_COLUMNS), one row per class in
    metrics order; `auc` is None for a class absent from the test split."""
    rows = metrics["per_class"]
    table: dict[str, list[Any]] = {"class": list(rows)}
    for key in PER_CLASS_COLUMNS[1:]:
        table[key] = [row.get(key) for row in rows.values()]
    return table


def evaluate_predictions(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> Evaluation:
    check_probabilities(probs, len(labels), len(classes), "the model")
    confusion = metrics_lib().confusion_matrix(labels, probs.argmax(axis=1), labels=list(range(len(classes))))
    return Evaluation(compute_metrics(labels, probs, classes), probs, labels, confusion)


def evaluate_model(
    predict_fn: PredictFn, images: np.ndarray, labels: np.ndarray, params: Params
) -> Evaluation:
    """Predict `images` and score them against `labels` (indices into base.classes)."""
    log.info("evaluating on %d images (tta_flip=%s)", len(images), params.evaluate.tta_flip)
    probs = predict_probabilities(predict_fn, images, params.evaluate.batch_size, params.evaluate.tta_flip)
    return evaluate_predictions(labels, probs, params.base.classes)


# --- reports ---------------------------------------------------------------------------


def write_reports(
    evaluation: Evaluation,
    params: Params,
    report_dir: Path,
    history: list[dict[str, Any]] | None = None,
    provenance: dict[str, Any] | None = None,
) -> list[Path]:
    """metrics.json, scores.json, evaluation.json, confusion_matrix.json, plot data (CSV) and
    PNGs. Returns the paths."""
    report_dir.mkdir(parents=True, exist_ok=True)
    plots_dir = report_dir / PLOTS_DIR
    plots_dir.mkdir(exist_ok=True)
    classes, labels_display = params.base.classes, params.base.class_labels
    written = [
        write_json(report_dir / METRICS_FILE, evaluation.metrics),
        write_json(report_dir / SCORES_FILE, headline_scores(evaluation.metrics)),
        write_json(
            report_dir / CONFUSION_JSON,
            {"classes": list(classes), "matrix": evaluation.confusion.tolist()},
        ),
        write_json(
            report_dir / EVALUATION_FILE,
            {**(provenance or {}), "tta_flip": params.evaluate.tta_flip, "n_test": len(evaluation.labels)},
        ),
        _write_confusion_pairs(plots_dir / CONFUSION_CSV, evaluation, classes),
        _write_roc_points(plots_dir / ROC_CSV, evaluation, classes),
        _write_per_class_csv(plots_dir / PER_CLASS_CSV, evaluation.metrics["per_class"], classes),
    ]
    written += confusion_figures(evaluation.confusion, labels_display, plots_dir)
    written.append(roc_figure(evaluation.labels, evaluation.probabilities, labels_display, plots_dir))
    written.append(per_class_figure(evaluation.metrics["per_class"], classes, labels_display, plots_dir))
    if history:
        written.append(_write_history_csv(plots_dir / HISTORY_CSV, history))
        written += history_figures(history, plots_dir)
    else:
        log.warning("no training history: accuracy.png and loss.png are not drawn")
    log.info("wrote %d report files under %s", len(written), report_dir)
    return written


HEADLINE = ("accuracy", "macro_f1", "weighted_f1", "macro_auc", "n_test")


def headline_scores(metrics: dict[str, Any]) -> dict[str, Any]:
    """The few numbers people compare across runs, plus the weakest class's recall (the one
    a macro-F1 gate and class weights are about): six columns in `dvc metrics show`, where
    metrics.json's per-class rows make ~40."""
    recalls = {name: row["recall"] for name, row in metrics["per_class"].items()}
    weakest = min(recalls, key=recalls.__getitem__)
    return {
        **{key: metrics[key] for key in HEADLINE},
        "min_class_recall": recalls[weakest],
        "min_recall_class": weakest,
    }


def _write_confusion_pairs(path: Path, evaluation: Evaluation, classes: Sequence[str]) -> Path:
    predicted = evaluation.probabilities.argmax(axis=1)
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["actual", "predicted"])
        writer.writerows((classes[a], classes[p]) for a, p in zip(evaluation.labels, predicted, strict=True))
    return path


def _write_roc_points(path: Path, evaluation: Evaluation, classes: Sequence[str]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["class", "fpr", "tpr", "threshold"])
        for i, name in enumerate(classes):
            positives = evaluation.labels == i
            if positives.all() or not positives.any():
                continue
            fpr, tpr, thresholds = metrics_lib().roc_curve(positives, evaluation.probabilities[:, i])
            # sklearn's first threshold is +inf; clip so every CSV value is a number
            thresholds = np.minimum(thresholds, 1.0)
            writer.writerows(
                (name, f"{x:.6f}", f"{y:.6f}", f"{t:.6f}")
                for x, y, t in zip(fpr, tpr, thresholds, strict=True)
            )
    return path


def _write_per_class_csv(path: Path, per_class: dict[str, dict[str, Any]], classes: Sequence[str]) -> Path:
    """class,precision,recall,f1,support: one row per class, in class order (dvc plots)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["class", "precision", "recall", "f1", "support"])
        writer.writerows(
            (
                name,
                *(f"{per_class[name][k]:.6f}" for k in ("precision", "recall", "f1")),
                int(per_class[name]["support"]),
            )
            for name in classes
        )
    return path


def _write_history_csv(path: Path, history: list[dict[str, Any]]) -> Path:
    columns = ["epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
    return path


# --- inputs ----------------------------------------------------------------------------


def load_keras_predict_fn(model_path: Path, batch_size: int) -> PredictFn:
    """A predict_fn over a local .keras file."""
    import keras

    if not model_path.exists():
        raise EvaluationError(f"model file {model_path} not found; run `ferflow train` first")
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except (ValueError, OSError, TypeError, KeyError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "safe_mode" in str(err):
            raise EvaluationError(
                f"{model_path} holds Python code (a Lambda layer) that Keras' safe mode refuses to "
                "load: ferflow never runs code from a model file. Rebuild the model without Lambda "
                "layers (ferflow's own models have none)"
            ) from err
        raise EvaluationError(f"{model_path} is not a loadable Keras model: {first_line}") from err
    return lambda batch: np.asarray(model.predict(batch, batch_size=batch_size, verbose=0))


def test_split(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from ferflow.data.dataset import load_prepared

    images, labels = load_prepared(data_dir).split("test")
    if len(images) == 0:
        raise EvaluationError(
            f"{data_dir} has no test images; ingest a source with a test/ split before evaluating"
        )
    return images, labels
