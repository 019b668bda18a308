"""Metrics and plots of a trained model on the test split (the study's Figures 9-13).

`evaluate_stage` is the pipeline stage: it evaluates `models/model.keras` on the prepared
test split, writes `reports/metrics.json` (flat, for `dvc metrics`), plot data for
`dvc plots` and PNG figures, and logs all of it to the MLflow parent run. `evaluate_source`
does the same for any model (local `.keras`, `models:/`, `runs:/`) on any data source ingest
reads. Everything here works on a plain `predict_fn(batch) -> probabilities`, so this
module never imports mlflow (only `registry.py` does).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)
from tqdm import tqdm

from ferflow.config import Params
from ferflow.errors import FerflowError

log = logging.getLogger(__name__)

PredictFn = Callable[[np.ndarray], np.ndarray]

# File names under the report folder; dvc.yaml declares exactly these.
METRICS_FILE = "metrics.json"
EVALUATION_FILE = "evaluation.json"  # provenance: model sha256, data digest, tta, n
CONFUSION_JSON = "confusion_matrix.json"
PLOTS_DIR = "plots"
CONFUSION_CSV = "confusion.csv"  # actual,predicted per test image (dvc confusion template)
ROC_CSV = "roc.csv"  # class,fpr,tpr,threshold
HISTORY_CSV = "history.csv"  # epoch,phase,loss,accuracy,val_loss,val_accuracy
PNG_FILES = (
    "accuracy.png",
    "loss.png",
    "confusion_matrix.png",
    "confusion_matrix_normalized.png",
    "roc.png",
)


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
    """Class probabilities for `images` (n, S, S), in batches; optionally averaged with the mirror."""
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc="predict", unit="batch", leave=False):
        batch = np.asarray(images[start : start + batch_size], dtype=np.float32)
        probs = np.asarray(predict_fn(batch), dtype=np.float64)
        if tta_flip:
            # A mirrored face keeps its expression: averaging both views is cheap test-time
            # augmentation (the flip is along the width axis).
            probs = (probs + np.asarray(predict_fn(batch[:, :, ::-1].copy()), dtype=np.float64)) / 2
        chunks.append(probs)
    if not chunks:
        raise EvaluationError("no images to evaluate: the test split is empty")
    return np.concatenate(chunks)


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
    precision, recall, f1, support = precision_recall_fscore_support(
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
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, labels=indices, average="macro", zero_division=0)),
        "weighted_f1": float(
            f1_score(labels, predicted, labels=indices, average="weighted", zero_division=0)
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
            result.append(float(roc_auc_score(positives, probs[:, i])))
    return result


def flat_metric_names(metrics: dict[str, Any]) -> dict[str, float]:
    """The MLflow names of docs/architecture.md: test.accuracy, test.recall.<class>, ..."""
    flat = {
        f"test.{key}": float(metrics[key]) for key in ("accuracy", "macro_f1", "weighted_f1", "macro_auc")
    }
    for name, row in metrics["per_class"].items():
        for key in ("precision", "recall", "f1", "auc"):
            if key in row:
                flat[f"test.{key}.{name}"] = float(row[key])
    return flat


def evaluate_predictions(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> Evaluation:
    check_probabilities(probs, len(labels), len(classes), "the model")
    confusion = confusion_matrix(labels, probs.argmax(axis=1), labels=list(range(len(classes))))
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
    """metrics.json, evaluation.json, confusion_matrix.json, plot data and PNGs. Returns the paths."""
    report_dir.mkdir(parents=True, exist_ok=True)
    plots_dir = report_dir / PLOTS_DIR
    plots_dir.mkdir(exist_ok=True)
    classes, labels_display = params.base.classes, params.base.class_labels
    written = [
        _write_json(report_dir / METRICS_FILE, evaluation.metrics),
        _write_json(
            report_dir / CONFUSION_JSON,
            {"classes": list(classes), "matrix": evaluation.confusion.tolist()},
        ),
        _write_json(
            report_dir / EVALUATION_FILE,
            {**(provenance or {}), "tta_flip": params.evaluate.tta_flip, "n_test": len(evaluation.labels)},
        ),
        _write_confusion_pairs(plots_dir / CONFUSION_CSV, evaluation, classes),
        _write_roc_points(plots_dir / ROC_CSV, evaluation, classes),
    ]
    written += _confusion_figures(evaluation.confusion, labels_display, plots_dir)
    written.append(_roc_figure(evaluation.labels, evaluation.probabilities, labels_display, plots_dir))
    if history:
        written.append(_write_history_csv(plots_dir / HISTORY_CSV, history))
        written += _history_figures(history, plots_dir)
    else:
        log.warning("no training history: accuracy.png and loss.png are not drawn")
    log.info("wrote %d report files under %s", len(written), report_dir)
    return written


def _write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


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
            fpr, tpr, thresholds = roc_curve(positives, evaluation.probabilities[:, i])
            # sklearn's first threshold is +inf; clip so every CSV value is a number
            thresholds = np.minimum(thresholds, 1.0)
            writer.writerows(
                (name, f"{x:.6f}", f"{y:.6f}", f"{t:.6f}")
                for x, y, t in zip(fpr, tpr, thresholds, strict=True)
            )
    return path


def _write_history_csv(path: Path, history: list[dict[str, Any]]) -> Path:
    columns = ["epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
    return path


# --- figures ---------------------------------------------------------------------------


def _pyplot() -> Any:
    """matplotlib with the file-only Agg backend (no display on servers); imported lazily."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _confusion_figures(confusion: np.ndarray, labels: Sequence[str], plots_dir: Path) -> list[Path]:
    """Counts (the study's Figure 11) and the row-normalised heat map (recall on the diagonal)."""
    plt = _pyplot()
    row_sums = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, row_sums, out=np.zeros(confusion.shape), where=row_sums > 0)
    paths = []
    for name, matrix, fmt, title in (
        ("confusion_matrix.png", confusion, "d", "Confusion matrix (counts)"),
        ("confusion_matrix_normalized.png", normalised, ".2f", "Confusion matrix (share of actual class)"),
    ):
        fig, ax = plt.subplots(figsize=(7.5, 6.5))
        image = ax.imshow(matrix, cmap="Blues")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ticks = range(len(labels))
        ax.set(xticks=ticks, yticks=ticks, xlabel="Predicted", ylabel="Actual", title=title)
        ax.set_xticklabels(labels, rotation=45, ha="right")
        ax.set_yticklabels(labels)
        threshold = matrix.max() / 2 if matrix.size else 0
        for (row, col), value in np.ndenumerate(matrix):
            ax.text(
                col,
                row,
                format(value, fmt),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if value > threshold else "black",
            )
        paths.append(_save(fig, plots_dir / name))
    return paths


def _roc_figure(labels: np.ndarray, probs: np.ndarray, names: Sequence[str], plots_dir: Path) -> Path:
    """One-vs-rest ROC curve per class with its AUC (the study's Figure 12)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    for i, name in enumerate(names):
        positives = labels == i
        if positives.all() or not positives.any():
            continue
        fpr, tpr, _ = roc_curve(positives, probs[:, i])
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(positives, probs[:, i]):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    title = "ROC, one class vs rest"
    if aucs := [
        roc_auc_score(labels == i, probs[:, i])
        for i in range(len(names))
        if 0 < (labels == i).sum() < len(labels)
    ]:
        title += f" (macro AUC {np.mean(aucs):.3f})"
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title=title)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, plots_dir / "roc.png")


def _history_figures(history: list[dict[str, Any]], plots_dir: Path) -> list[Path]:
    """Accuracy and loss against epoch for both phases (the study's Figures 9 and 10)."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    finetune_start = next((row["epoch"] for row in history if row.get("phase") == "finetune"), None)
    paths = []
    for metric, title in (("accuracy", "Accuracy vs number of epochs"), ("loss", "Loss vs number of epochs")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            values = [row.get(key) for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v for v in values], marker=".", label=label)
        if finetune_start is not None:
            # The study appends fine-tuning epochs after the head's; mark where it starts.
            ax.axvline(finetune_start - 0.5, color="grey", linestyle="--", linewidth=1)
            ax.text(
                finetune_start - 0.3,
                0.97,
                "fine-tuning",
                va="top",
                fontsize=8,
                color="grey",
                transform=ax.get_xaxis_transform(),
            )
        ax.set(xlabel="epoch", ylabel=metric, title=title)
        ax.legend()
        paths.append(_save(fig, plots_dir / f"{metric}.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


# --- inputs ----------------------------------------------------------------------------


def read_history(model_dir: Path) -> list[dict[str, Any]] | None:
    """The per-epoch rows of models/history.json, or None when it is absent.

    Accepts a list of rows, `{"epochs": [...]}`, or Keras-style columns
    (`{"loss": [...], ..., "phase": [...]}`); each row gets an `epoch` (1-based if missing).
    """
    path = model_dir / "history.json"
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise EvaluationError(f"{path} is not valid JSON ({err}); re-run `ferflow train`") from err
    if isinstance(raw, dict) and isinstance(raw.get("epochs"), list):
        rows = raw["epochs"]
    elif isinstance(raw, dict):
        columns = {k: v for k, v in raw.items() if isinstance(v, list)}
        n = max((len(v) for v in columns.values()), default=0)
        rows = [{k: v[i] for k, v in columns.items() if i < len(v)} for i in range(n)]
    elif isinstance(raw, list):
        rows = raw
    else:
        raise EvaluationError(f"{path}: expected a list of per-epoch rows, got {type(raw).__name__}")
    return [{"epoch": row.get("epoch", i + 1), **row} for i, row in enumerate(rows)]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_keras_predict_fn(model_path: Path, batch_size: int) -> PredictFn:
    """A predict_fn over a local .keras file."""
    import keras

    if not model_path.exists():
        raise EvaluationError(f"model file {model_path} not found; run `ferflow train` first")
    model = keras.saving.load_model(model_path, compile=False)
    return lambda batch: np.asarray(model.predict(batch, batch_size=batch_size, verbose=0))


def test_split(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from ferflow.data.dataset import load_prepared

    images, labels = load_prepared(data_dir).split("test")
    if len(images) == 0:
        raise EvaluationError(
            f"{data_dir} has no test images; ingest a source with a test/ split before evaluating"
        )
    return images, labels


# --- stages ----------------------------------------------------------------------------


def evaluate_stage(params: Params, data_dir: Path, model_dir: Path, report_dir: Path) -> dict[str, Any]:
    """The pipeline's evaluate stage: model_dir/model.keras on data_dir's test split.

    Writes the report files (see the constants above) and, when model_dir/run.json names
    an MLflow parent run, logs the metrics (`test.*`) and plots (`evaluation/`) there.
    Returns the metrics dict written to metrics.json.
    """
    from ferflow.data.dataset import manifest_digest

    data_dir, model_dir, report_dir = Path(data_dir), Path(model_dir), Path(report_dir)
    model_path = model_dir / "model.keras"
    predict_fn = load_keras_predict_fn(model_path, params.evaluate.batch_size)
    images, labels = test_split(data_dir)
    evaluation = evaluate_model(predict_fn, images, labels, params)
    provenance = {
        "model": str(model_path),
        "model_sha256": file_sha256(model_path),
        "manifest_digest": manifest_digest(data_dir),
        "data_dir": str(data_dir),
    }
    write_reports(evaluation, params, report_dir, read_history(model_dir), provenance)
    _log_to_parent_run(params, model_dir, report_dir, evaluation.metrics)
    _log_summary(evaluation.metrics)
    return evaluation.metrics


def _log_to_parent_run(params: Params, model_dir: Path, report_dir: Path, metrics: dict[str, Any]) -> None:
    from ferflow import registry

    run = registry.read_run_info(model_dir)
    if run is None:
        log.warning("%s/run.json is missing: metrics are not logged to MLflow", model_dir)
        return
    registry.log_evaluation(params, run, flat_metric_names(metrics), report_dir)


def evaluate_source(params: Params, model: str, source: Path, out_dir: Path) -> dict[str, Any]:
    """Evaluate any model (path or MLflow URI) on the test images of any source ingest reads.

    A prepared dataset folder is read as is; anything else (folder, zip, fer2013.csv, a
    `<class>/*.jpg` folder) goes through `ferflow.data.ingest.read_source` without writing.
    """
    from ferflow import registry

    predict_fn = registry.load_predict_fn(model, params)
    images, labels, digest = _images_from_source(Path(source), params)
    evaluation = evaluate_model(predict_fn, images, labels, params)
    write_reports(
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
        images, labels = test_split(source)
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
