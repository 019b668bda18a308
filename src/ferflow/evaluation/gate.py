"""The promotion gate: whether a newly registered model becomes `champion`.

Like TFX's Evaluator "blessing", a challenger is promoted only if:

a. it clears the floors in params (`register.min_accuracy`, `min_accuracy_over_majority`,
   `min_macro_f1`, `min_class_recall`);
b. the version loaded back from the registry the way serving loads it predicts a smoke
   batch with shape (n, k), finite values and the same probabilities as the evaluated
   model file (`smoke_problem`);
c. when a champion exists, the champion, evaluated on the same test data in the same run,
   is beaten by at least `register.margin` on `register.metric`.

Pure functions over metrics dicts (metrics.json) and arrays: the registry calls live in
ferflow.tracking.registry and the sequence (gather -> decide -> publish) in
ferflow.stages.registration.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ferflow.config import Register
from ferflow.evaluation.vocabulary import NOT_PROMOTED, PROMOTED

GATE_METRICS = ("accuracy", "macro_f1", "weighted_f1", "macro_auc")


@dataclass(frozen=True)
class Verdict:
    promoted: bool
    reason: str


def majority_share(metrics: dict[str, Any]) -> float:
    """The accuracy of always answering the test set's most common class."""
    support = [row["support"] for row in metrics["per_class"].values()]
    return max(support) / max(1, sum(support))


def check_floors(metrics: dict[str, Any], floors: Register) -> list[str]:
    """The floors `metrics` misses, as readable sentences (empty when all are met)."""
    misses = []
    if metrics["accuracy"] < floors.min_accuracy:
        misses.append(f"accuracy {metrics['accuracy']:.4f} < register.min_accuracy {floors.min_accuracy}")
    if floors.min_accuracy_over_majority is not None:
        majority = majority_share(metrics)
        needed = majority + floors.min_accuracy_over_majority
        if metrics["accuracy"] < needed:
            misses.append(
                f"accuracy {metrics['accuracy']:.4f} < {needed:.4f} (majority-class share {majority:.4f} "
                f"+ register.min_accuracy_over_majority {floors.min_accuracy_over_majority}): "
                "no better than always answering the most common class"
            )
    if metrics["macro_f1"] < floors.min_macro_f1:
        misses.append(f"macro_f1 {metrics['macro_f1']:.4f} < register.min_macro_f1 {floors.min_macro_f1}")
    if floors.min_class_recall is not None:
        for name, row in metrics["per_class"].items():
            if row["recall"] < floors.min_class_recall:
                misses.append(
                    f"recall of {name} {row['recall']:.4f} < "
                    f"register.min_class_recall {floors.min_class_recall}"
                )
    return misses


def smoke_batch_indices(labels: np.ndarray, size: int) -> np.ndarray:
    """Rows for the smoke batch: the first image of every class present, then the next
    rows, `size` in all. Test splits are stored class by class, so the first `size` rows
    would all be one class, and a one-class model would look healthy on them."""
    firsts = np.unique(labels, return_index=True)[1]  # the first row of every class present
    rest = np.setdiff1d(np.arange(len(labels)), firsts)
    return np.concatenate([firsts, rest])[:size].astype(np.int64)


def smoke_problem(
    source: str,
    probs: np.ndarray | str,
    n: int,
    num_classes: int,
    expected: np.ndarray | None,
    labels: np.ndarray | None = None,
) -> str | None:
    """What is wrong with the probabilities the registered copy gave for the smoke batch
    (`probs`, or the loading error as a sentence), or None when they are right.

    `expected` are the probabilities the evaluated model file gives for the same batch:
    the registered artifact must be the evaluated model. With the batch's true `labels`
    (three classes or more), a model that answers one class for every image is refused:
    its outputs are finite, but it has collapsed (a diverged fine-tuning does this).
    """
    if isinstance(probs, str):
        return probs
    if probs.shape != (n, num_classes):
        return f"{source} returned shape {probs.shape}, expected {(n, num_classes)}"
    if not np.all(np.isfinite(probs)):
        return f"{source} returned NaN or infinite probabilities"
    answers = np.unique(probs.argmax(axis=1))
    if labels is not None and len(np.unique(labels)) >= 3 and len(answers) == 1:
        return (
            f"{source} predicts class {int(answers[0])} for all {n} smoke images, which hold "
            f"{len(np.unique(labels))} classes: the model has collapsed to one answer"
        )
    if expected is not None and not np.allclose(probs, expected, atol=1e-4):
        return (
            f"{source} predicts differently from the evaluated model file (max difference "
            f"{np.abs(probs - expected).max():.3g}): the registered artifact is not the evaluated model"
        )
    return None


def decide(
    challenger: dict[str, Any],
    champion: dict[str, Any] | None,
    rules: Register,
    smoke_problem: str | None = None,
) -> Verdict:
    """The gate: floors, then the smoke test (what `smoke_problem()` found), then the
    comparison with the champion."""
    misses = check_floors(challenger, rules)
    if misses:
        return Verdict(False, "below floor: " + "; ".join(misses))
    if smoke_problem:
        return Verdict(False, f"smoke test failed: {smoke_problem}")
    if champion is None:
        return Verdict(True, "no champion yet and every floor is met")
    metric = rules.metric
    gain = challenger[metric] - champion[metric]
    # "beats by at least margin": strictly better, and by margin or more (1e-12: float noise)
    if gain > 1e-12 and gain >= rules.margin - 1e-12:
        return Verdict(
            True, f"{metric} {challenger[metric]:.4f} beats champion {champion[metric]:.4f} by {gain:+.4f}"
        )
    return Verdict(
        False,
        f"{metric} {challenger[metric]:.4f} vs champion {champion[metric]:.4f} ({gain:+.4f}); "
        f"needs to be better by at least register.margin={rules.margin}",
    )


def decision_record(
    name: str,
    version: str,
    metrics: dict[str, Any],
    champion: str | None,
    champion_metrics: dict[str, Any] | None,
    verdict: Verdict,
    smoke: str | None,
) -> dict[str, Any]:
    """What promotion.json holds (the stage adds model URI, run id and provenance)."""
    return {
        "decision": PROMOTED if verdict.promoted else NOT_PROMOTED,
        "reason": verdict.reason,
        "model_name": name,
        "version": version,
        "challenger": {"version": version, "metrics": metrics},
        "champion": None if champion is None else {"version": champion, "metrics": champion_metrics},
        "smoke_test": smoke or "passed",
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def version_tags(metrics: dict[str, Any], provenance: dict[str, str], run_id: str) -> dict[str, str]:
    """The tags a registered version carries: its gate metrics and where it came from."""
    tags = {f"test.{k}": f"{metrics[k]:.6f}" for k in GATE_METRICS}
    tags.update({f"ferflow.{k}": v for k, v in provenance.items()})
    tags["ferflow.run_id"] = run_id
    return tags
