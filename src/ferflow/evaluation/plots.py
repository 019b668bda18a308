"""The figures of an evaluation, as PNG files: confusion matrices, ROC curves, per-class
precision/recall/F1, training curves.

matplotlib with the file-only Agg backend (servers have no display), imported lazily.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    """matplotlib with the file-only Agg backend (no display on servers); imported lazily."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_figures(confusion: np.ndarray, labels: Sequence[str], plots_dir: Path) -> list[Path]:
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


def roc_figure(labels: np.ndarray, probs: np.ndarray, names: Sequence[str], plots_dir: Path) -> Path:
    """One-vs-rest ROC curve per class with its AUC (the study's Figure 12)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    for i, name in enumerate(names):
        positives = labels == i
        if positives.all() or not positives.any():
            continue
        fpr, tpr, _ = metrics_lib().roc_curve(positives, probs[:, i])
        ax.plot(fpr, tpr, label=f"{name} (AUC {metrics_lib().roc_auc_score(positives, probs[:, i]):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    title = "ROC, one class vs rest"
    if aucs := [
        metrics_lib().roc_auc_score(labels == i, probs[:, i])
        for i in range(len(names))
        if 0 < (labels == i).sum() < len(labels)
    ]:
        title += f" (macro AUC {np.mean(aucs):.3f})"
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title=title)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, plots_dir / "roc.png")


PER_CLASS_METRICS = (("precision", "precision"), ("recall", "recall"), ("f1", "F1"))


def per_class_figure(
    per_class: Mapping[str, Mapping[str, float]],
    classes: Sequence[str],
    labels: Sequence[str],
    plots_dir: Path,
) -> Path:
    """Precision, recall and F1 of every class as grouped bars (the study's Figure 13)."""
    return _save(_per_class_figure(per_class, classes, labels), plots_dir / "per_class.png")


def _per_class_figure(
    per_class: Mapping[str, Mapping[str, float]], classes: Sequence[str], labels: Sequence[str]
) -> Any:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(classes) + 1.5), 4.8))
    positions = np.arange(len(classes))
    width = 0.8 / len(PER_CLASS_METRICS)
    for i, (key, name) in enumerate(PER_CLASS_METRICS):
        values = [float(per_class[c][key]) for c in classes]
        bars = ax.bar(positions + (i - (len(PER_CLASS_METRICS) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.2f", padding=2, fontsize=7, rotation=90)
    # the support under each label: a class with few test images has noisy scores
    ax.set_xticks(
        positions,
        [
            f"{label}\n(n={int(per_class[c].get('support', 0))})"
            for c, label in zip(classes, labels, strict=True)
        ],
    )
    # 0..1 on the axis; the headroom above 1 keeps a perfect score's value label inside
    ax.set_ylim(0, 1.12)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set(ylabel="score", title="Per-class precision, recall and F1 (test split)")
    ax.grid(axis="y", linewidth=0.5, alpha=0.5)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return fig


def history_figures(history: list[dict[str, Any]], plots_dir: Path) -> list[Path]:
    """Accuracy and loss against epoch for both phases (the study's Figures 9 and 10)."""
    return [
        _save(_history_figure(history, metric, title), plots_dir / f"{metric}.png")
        for metric, title in (
            ("accuracy", "Accuracy vs number of epochs"),
            ("loss", "Loss vs number of epochs"),
        )
    ]


def _history_figure(history: list[dict[str, Any]], metric: str, title: str) -> Any:
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    # records hold the 0-based global epoch; people (and the training log) count from 1
    epochs = [row["epoch"] + 1 for row in history]
    finetune_start = next((row["epoch"] + 1 for row in history if row.get("phase") == "finetune"), None)
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
    # whole epochs only, and no epoch 0 on the axis
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    if epochs:
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    ax.set(xlabel="epoch", ylabel=metric, title=title)
    ax.legend()
    return fig


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def metrics_lib() -> Any:
    """sklearn.metrics, imported on first use: importing this module stays cheap (the CLI
    checks its arguments and the tracking server before heavy imports)."""
    import sklearn.metrics

    return sklearn.metrics
