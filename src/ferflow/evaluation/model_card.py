"""The model card: a Markdown page that travels with every registered version.

`build_model_card` writes what a person deciding whether to use a version needs: the data
(version and counts), the params, the test metrics with a per-class table, the data issues
validation found, and the intended use and its limits. `card_summary` is the short form
shown as the version's description on the MLflow Models page. Pure functions of plain
values: the register stage (ferflow.stages.registration) publishes the result.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from ferflow.config import Params

log = logging.getLogger(__name__)

INTENDED_USE = """\
## Intended use and limits

- **Intended use**: research, teaching and demos of facial expression recognition on
  48x48 grayscale face crops, e.g. aggregate statistics over many images.
- **Not for decisions about people.** Do not use it to judge, hire, grade, police, diagnose
  or monitor anyone: an expression is not an emotion, and a wrong label about a person
  can harm them.
- **Data limits**: FER2013 is web-scraped, low-resolution, mostly frontal and often posed
  faces; labels are noisy, classes are imbalanced (disgust is rare: expect low recall),
  and the demographic make-up of the faces is unknown. Accuracy on candid photos, other
  cameras, ages or cultures will be lower and is not measured here.
- **Input**: one face per image, roughly centred and cropped; any image is converted to
  48x48 grayscale before prediction. No face detection is done.
"""


# The registered model's description on the MLflow Models page.
REGISTERED_MODEL_DESCRIPTION = (
    "Facial emotion recognition (FER2013, 7 classes) trained by ferflow: a Keras DenseNet with a "
    "dense head, trained frozen then fine-tuned. Input: a batch of 48x48 grayscale images as "
    "float32 (n, 48, 48) with values 0-255; output: (n, 7) probabilities in the order Anger, "
    "Disgust, Fear, Happy, Neutral, Sadness, Surprise. Aliases: `champion` (serving), `challenger` "
    "(latest run), `previous-champion` (rollback target). Each version's description and "
    "model_card.md hold its data version, metrics and the promotion decision. Not for decisions "
    "about people."
)


def read_validation(path: Path) -> dict[str, Any] | None:
    """The validation report (reports/validation.json) when present and readable; None
    (with a warning) otherwise."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        log.warning("cannot read %s (%s): the model card lists no data issues", path, err)
        return None
    return data if isinstance(data, dict) else None


def data_issues(validation: dict[str, Any] | None) -> list[str]:
    """One line per failed check (severity error or warning) of validation.json.

    The format is ferflow.contract.validation's (`checks: [{id, description, severity, success,
    observed, examples}]`), read defensively: unknown shapes give no lines, not an error.
    """
    if validation is None:
        return []
    checks = validation.get("checks") or []
    issues = []
    for check in checks if isinstance(checks, list) else []:
        if not isinstance(check, dict) or check.get("success", True) is not False:
            continue
        severity = str(check.get("severity") or "failed")
        if severity == "off":
            continue
        name = check.get("id") or check.get("name") or "check"
        detail = str(check.get("description") or check.get("message") or "")
        if "observed" in check:
            detail += f"{'; ' if detail else ''}observed {_short(check['observed'])}"
        if check.get("examples"):
            detail += f"; e.g. {', '.join(map(str, check['examples'][:3]))}"
        issues.append(f"{name} ({severity}){': ' + detail if detail else ''}")
    return issues


def _short(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def split_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Images per class (rows) and split (columns), with totals."""
    table = pd.crosstab(manifest["label"], manifest["split"], margins=True, margins_name="total")
    return table.reindex(columns=[c for c in ("train", "val", "test", "total") if c in table.columns])


def build_model_card(
    params: Params,
    metrics: dict[str, Any],
    *,
    version: str | None = None,
    data_version: str = "unknown",
    counts: pd.DataFrame | None = None,
    validation: dict[str, Any] | None = None,
    git_commit: str = "unknown",
) -> str:
    """The whole card as Markdown."""
    title = f"# Model card: {params.registry.model_name}" + (f" version {version}" if version else "")
    parts = [
        title,
        card_summary(params, metrics),
        "## Model\n\n"
        f"{params.model.backbone} (weights: {params.model.weights}), dense head "
        f"{list(params.model.head_units)}; input (n, {params.base.image_size}, {params.base.image_size}) "
        "float32 grayscale pixels 0..255, output (n, 7) softmax over "
        f"{', '.join(params.base.class_labels)}. Code version (git): `{git_commit}`; params digest "
        f"`{params.digest()}`.",
        _data_section(data_version, counts, validation),
        _metrics_section(params, metrics),
        _params_section(params),
        INTENDED_USE,
    ]
    return "\n\n".join(parts) + "\n"


def card_summary(params: Params, metrics: dict[str, Any]) -> str:
    """Two sentences for the version description on the Models page."""
    weakest = min(metrics["per_class"].items(), key=lambda item: item[1]["recall"])
    return (
        f"Facial expression classifier ({params.model.backbone}, 7 FER2013 classes). Test accuracy "
        f"{metrics['accuracy']:.3f}, macro F1 {metrics['macro_f1']:.3f}, macro AUC "
        f"{metrics['macro_auc']:.3f} on {metrics['n_test']} images; weakest class {weakest[0]} "
        f"(recall {weakest[1]['recall']:.3f}). Research and demo use only, not for decisions about people."
    )


def _data_section(data_version: str, counts: pd.DataFrame | None, validation: dict[str, Any] | None) -> str:
    lines = ["## Data", "", f"Data version: `{data_version}`.", ""]
    if counts is not None:
        lines += [_markdown_table(counts.reset_index().rename(columns={"label": "class"})), ""]
    issues = data_issues(validation)
    if validation is None:
        lines.append("Validation report: not available (reports/validation.json missing).")
    elif issues:
        lines.append("Known data issues found by validation:")
        lines += [f"- {issue}" for issue in issues]
    else:
        lines.append("Validation: every data-contract check passed.")
    return "\n".join(lines)


def _metrics_section(params: Params, metrics: dict[str, Any]) -> str:
    rows = [
        {
            "class": name,
            "label": label,
            "precision": f"{row['precision']:.3f}",
            "recall": f"{row['recall']:.3f}",
            "f1": f"{row['f1']:.3f}",
            "auc": f"{row['auc']:.3f}" if "auc" in row else "n/a",
            "support": row["support"],
        }
        for (name, row), label in zip(metrics["per_class"].items(), params.base.class_labels, strict=False)
    ]
    head = (
        f"## Test metrics\n\nAccuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}, "
        f"weighted F1 {metrics['weighted_f1']:.4f}, macro AUC {metrics['macro_auc']:.4f} "
        f"(test-time flip averaging: {params.evaluate.tta_flip}).\n\n"
    )
    return head + _markdown_table(pd.DataFrame(rows))


def _params_section(params: Params) -> str:
    keep = ("model.", "train.", "finetune.", "base.seed", "base.image_size", "register.")
    rows = [{"param": k, "value": v} for k, v in params.flat().items() if k.startswith(keep)]
    return "## Params\n\n" + _markdown_table(pd.DataFrame(rows))


def _markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pandas' to_markdown needs the tabulate package)."""
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])
