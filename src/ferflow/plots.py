"""The figures of an evaluation, as PNG files: confusion matrices, ROC curves, training curves.

matplotlib with the file-only Agg backend (servers have no display), imported lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def history_figures(history: list[dict[str, Any]], plots_dir: Path) -> list[Path]:
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


def metrics_lib() -> Any:
    """sklearn.metrics, imported on first use: importing this module stays cheap (the CLI
    checks its arguments and the tracking server before heavy imports)."""
    import sklearn.metrics

    return sklearn.metrics
