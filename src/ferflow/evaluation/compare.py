"""Two runs or registered model versions side by side: `ferflow compare [A] [B]`.

A and B are each a run id, `models:/<name>/<version>`, `models:/<name>@<alias>` or a bare
alias of `register.model_name` (`champion`, `challenger`, `previous-champion`). The
comparison lists the params that differ, every metric with its delta (B - A), the per-class
test recall deltas (the `evaluation/per_class.json` table) and the largest changes between
the two confusion matrices (read from the `evaluation/confusion_matrix.json` artifact that
`ferflow.evaluation.evaluate` writes: `{"classes": [...], "matrix": [[...]]}`, rows = actual class,
columns = predicted).

It renders as aligned text for a terminal, Markdown for a pull request, or JSON for
scripts. Pure: ferflow.tracking.reader reads the two sides from MLflow.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ferflow.errors import FerflowError
from ferflow.evaluation import vocabulary as terms

Format = Literal["text", "markdown", "json"]
FORMATS: tuple[Format, ...] = ("text", "markdown", "json")

CONFUSION_ARTIFACT = "evaluation/confusion_matrix.json"
DEFAULT_A = terms.CHAMPION
DEFAULT_B = terms.CHALLENGER
PROMOTED_FROM = terms.PREVIOUS  # A once the challenger is promoted (stages.evaluation.compare)
# How many confusion-matrix cells the report shows (the largest changes first).
TOP_CONFUSION_CHANGES = 8

# Per-class metrics as runs logged them before the table (`test.recall.happy`): not in the main list.
_PER_CLASS = re.compile(r"^test\.(precision|recall|f1|auc)\.")
# Metrics that count things (`train.epochs`, `n_test`, `test.support.<class>`): whole numbers
# in text and Markdown (`12`, not `12.0000`). JSON keeps them as numbers.
_COUNT = re.compile(r"(^|\.)(epochs|n_[a-z0-9_]+)$|(^|\.)support(\.|$)")
GATE_DECISION_TAG = terms.DECISION_TAG
_RUN_TAGS = ("ferflow.data_version", "ferflow.params_digest", "ferflow.git_commit")
TAGS_SHOWN = (*_RUN_TAGS, GATE_DECISION_TAG, terms.ALIAS_TAG)
MANUAL_TAGS = (terms.MANUAL_MOVE_TAG, terms.MANUAL_REASON_TAG)  # a rollback or by hand: shown when set


class CompareError(FerflowError, ValueError):
    """A run, model version or alias to compare does not exist; the message names it."""


# --- what is compared ------------------------------------------------------------------


@dataclass(frozen=True)
class Confusion:
    """A confusion matrix: `matrix[actual][predicted]` counts over `classes`."""

    classes: tuple[str, ...]
    matrix: tuple[tuple[int, ...], ...]

    def share(self, actual: int, predicted: int) -> float:
        """The fraction of the actual class's test images predicted as `predicted`."""
        row_total = sum(self.matrix[actual])
        return self.matrix[actual][predicted] / row_total if row_total else 0.0


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a run, and the model version it was resolved from, if any."""

    reference: str  # what the user gave: "champion", a run id, "models:/name/3"
    run_id: str
    run_name: str
    experiment_id: str
    model_version: str | None  # "fer-densenet169 v3 (champion)" when resolved from the registry
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    confusion: Confusion | None = None
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)  # class -> {"recall": ...}

    def recall(self, name: str) -> float | None:
        """From the per-class table, else the `test.recall.<class>` metric of an older run."""
        return self.per_class.get(name, {}).get("recall", self.metrics.get(f"test.recall.{name}"))


@dataclass(frozen=True)
class ParamChange:
    key: str
    a: str | None  # None: the param is not logged on that side
    b: str | None


@dataclass(frozen=True)
class MetricDelta:
    key: str
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        """B - A, or None when one side lacks the metric."""
        return None if self.a is None or self.b is None else self.b - self.a


@dataclass(frozen=True)
class CellChange:
    """How one confusion-matrix cell changed; shares are of the actual class's images."""

    actual: str
    predicted: str
    a_count: int
    b_count: int
    a_share: float
    b_share: float

    @property
    def share_delta(self) -> float:
        return self.b_share - self.a_share


@dataclass(frozen=True)
class Comparison:
    a: Side
    b: Side
    changed_params: list[ParamChange]
    metrics: list[MetricDelta]  # every metric of either side, sorted by key
    recall: list[MetricDelta]  # test.recall.<class>, in class order
    confusion_changes: list[CellChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def summary_metrics(self) -> list[MetricDelta]:
        """The metrics without the per-class ones (those have their own section)."""
        return [m for m in self.metrics if not _PER_CLASS.match(m.key)]


def parse_confusion(path: Path) -> Confusion:
    """Read `{"classes": [...], "matrix": [[...]]}`, checking that the matrix is square."""
    try:
        data = json.loads(path.read_text())
        classes = tuple(str(c) for c in data["classes"])
        matrix = tuple(tuple(int(v) for v in row) for row in data["matrix"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CompareError(
            f"{path}: not a confusion matrix ({err}); expected JSON "
            '{"classes": [...], "matrix": [[counts]]} as ferflow.evaluation.evaluate writes it'
        ) from err
    if len(matrix) != len(classes) or any(len(row) != len(classes) for row in matrix):
        raise CompareError(f"{path}: matrix is not {len(classes)}x{len(classes)} for classes {classes}")
    return Confusion(classes, matrix)


# --- comparing -------------------------------------------------------------------------


def compare_sides(a: Side, b: Side, classes: tuple[str, ...]) -> Comparison:
    """The differences between two resolved sides (pure: no MLflow calls)."""
    notes = []
    if a.run_id == b.run_id:
        same = f"both sides are the same run {a.run_id}: every delta is zero"
        if a.model_version and a.model_version == b.model_version:
            same += f" ({a.model_version} holds both aliases: train again for a challenger)"
        notes.append(same)
    changes, confusion_note = confusion_changes(a.confusion, b.confusion)
    if confusion_note:
        notes.append(confusion_note)
    return Comparison(
        a=a,
        b=b,
        changed_params=changed_params(a.params, b.params),
        metrics=metric_deltas(a.metrics, b.metrics),
        recall=[
            MetricDelta(f"test.recall.{c}", a.recall(c), b.recall(c))
            for c in classes
            if a.recall(c) is not None or b.recall(c) is not None
        ],
        confusion_changes=changes,
        notes=notes,
    )


def changed_params(a: dict[str, str], b: dict[str, str]) -> list[ParamChange]:
    """Params whose value differs, or that only one side logged, sorted by key."""
    return [
        ParamChange(key, a.get(key), b.get(key))
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]


def metric_deltas(a: dict[str, float], b: dict[str, float]) -> list[MetricDelta]:
    """Every metric either side logged (latest value), sorted by key."""
    return [MetricDelta(key, a.get(key), b.get(key)) for key in sorted(set(a) | set(b))]


def confusion_changes(
    a: Confusion | None, b: Confusion | None, top: int = TOP_CONFUSION_CHANGES
) -> tuple[list[CellChange], str | None]:
    """The cells whose share of the actual class changed most, and a note when none can be compared.

    Shares rather than counts, so that two evaluations on test sets of different sizes still
    compare fairly.
    """
    if a is None or b is None:
        missing = " and ".join(side for side, m in (("A", a), ("B", b)) if m is None)
        return [], f"no {CONFUSION_ARTIFACT} on {missing}: confusion matrices not compared"
    if a.classes != b.classes:
        return [], f"confusion matrices have different classes ({a.classes} vs {b.classes}): not compared"
    cells = [
        CellChange(
            actual=actual,
            predicted=predicted,
            a_count=a.matrix[i][j],
            b_count=b.matrix[i][j],
            a_share=a.share(i, j),
            b_share=b.share(i, j),
        )
        for i, actual in enumerate(a.classes)
        for j, predicted in enumerate(a.classes)
    ]
    changed = [c for c in cells if abs(c.share_delta) > 1e-12]
    changed.sort(key=lambda c: (-abs(c.share_delta), c.actual, c.predicted))
    return changed[:top], None


# --- rendering -------------------------------------------------------------------------


def is_count(key: str) -> bool:
    """Whether a metric counts things (epochs, test images), by its name."""
    return bool(_COUNT.search(key))


def _number(value: float | None, count: bool = False) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if count and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"


def _or_dash(value: str | None) -> str:
    return "-" if value is None else value


def _signed(value: float | None, count: bool = False) -> str:
    return "-" if value is None else ("+" if value >= 0 else "") + _number(value, count)


def _side_rows(c: Comparison) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [
        ("reference", c.a.reference, c.b.reference),
        ("run name", c.a.run_name, c.b.run_name),
        ("run id", c.a.run_id, c.b.run_id),
        ("model version", c.a.model_version or "-", c.b.model_version or "-"),
    ]
    shown = TAGS_SHOWN + tuple(t for t in MANUAL_TAGS if t in c.a.tags or t in c.b.tags)
    rows += [(tag, c.a.tags.get(tag, "-"), c.b.tags.get(tag, "-")) for tag in shown]
    return rows


def _metric_row(m: MetricDelta) -> tuple[str, ...]:
    count = is_count(m.key)
    return (m.key, _number(m.a, count), _number(m.b, count), _signed(m.delta, count))


@dataclass(frozen=True)
class _Table:
    """One section of the report; `numeric` tables right-align their value columns."""

    title: str
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]
    numeric: bool = True


def _tables(c: Comparison) -> list[_Table]:
    """The report's sections, shared by the text and Markdown renderers."""
    return [
        _Table("Runs", ("", "A", "B"), _side_rows(c), numeric=False),
        _Table(
            f"Params that differ ({len(c.changed_params)})",
            ("param", "A", "B"),
            [(p.key, _or_dash(p.a), _or_dash(p.b)) for p in c.changed_params],
            numeric=False,
        ),
        _Table(
            "Metrics",
            ("metric", "A", "B", "B - A"),
            [_metric_row(m) for m in c.summary_metrics],
        ),
        _Table(
            "Per-class test recall",
            ("class", "A", "B", "B - A"),
            [
                (m.key.removeprefix("test.recall."), _number(m.a), _number(m.b), _signed(m.delta))
                for m in c.recall
            ],
        ),
        _Table(
            "Largest confusion-matrix changes (share of the actual class)",
            ("actual -> predicted", "A", "B", "B - A"),
            [
                (
                    f"{x.actual} -> {x.predicted}",
                    f"{x.a_share:.1%} ({x.a_count})",
                    f"{x.b_share:.1%} ({x.b_count})",
                    f"{x.share_delta * 100:+.1f} pt",
                )
                for x in c.confusion_changes
            ],
        ),
    ]


def format_text(c: Comparison) -> str:
    """Aligned plain-text tables for a terminal."""
    lines = [f"A = {c.a.reference}   B = {c.b.reference}"]
    for table in _tables(c):
        lines += ["", table.title, "-" * len(table.title)]
        if not table.rows:
            lines.append("(none)")
            continue
        columns = range(len(table.header))
        widths = [max(len(row[i]) for row in [table.header, *table.rows]) for i in columns]
        for row in [table.header, *table.rows]:
            cells = [
                row[i].rjust(widths[i]) if table.numeric and i > 0 else row[i].ljust(widths[i])
                for i in columns
            ]
            lines.append("  ".join(cells).rstrip())
    lines += ["", *[f"note: {n}" for n in c.notes]] if c.notes else []
    return "\n".join(lines) + "\n"


def _md_cell(value: str) -> str:
    return value.replace("|", "\\|")


def format_markdown(c: Comparison) -> str:
    """GitHub-flavoured Markdown tables, for a pull request or a Prefect artifact."""
    lines = [f"## Model comparison: `{c.a.reference}` (A) vs `{c.b.reference}` (B)"]
    for table in _tables(c):
        lines += ["", f"### {table.title}", ""]
        if not table.rows:
            lines.append("_none_")
            continue
        value_align = "---:" if table.numeric else "---"
        lines.append("| " + " | ".join(table.header) + " |")
        lines.append("|" + "|".join(["---"] + [value_align] * (len(table.header) - 1)) + "|")
        lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in table.rows]
    if c.notes:
        lines += ["", *[f"> {n}" for n in c.notes]]
    return "\n".join(lines) + "\n"


def to_dict(c: Comparison) -> dict[str, Any]:
    """Plain data for JSON: both sides (without the raw params) and every difference."""

    def side(s: Side) -> dict[str, Any]:
        data = asdict(s)
        data.pop("params")
        data["confusion"] = asdict(s.confusion) if s.confusion else None
        return data

    return {
        "a": side(c.a),
        "b": side(c.b),
        "changed_params": [asdict(p) for p in c.changed_params],
        "metrics": [{**asdict(m), "delta": m.delta} for m in c.metrics],
        "recall": [{**asdict(m), "delta": m.delta} for m in c.recall],
        "confusion_changes": [{**asdict(x), "share_delta": x.share_delta} for x in c.confusion_changes],
        "notes": c.notes,
    }


def _json_safe(value: Any) -> Any:
    """NaN and infinities become None: strict JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def render(c: Comparison, fmt: Format = "text") -> str:
    """The comparison in one of FORMATS."""
    if fmt == "markdown":
        return format_markdown(c)
    if fmt == "json":
        return json.dumps(_json_safe(to_dict(c)), indent=2, allow_nan=False) + "\n"
    return format_text(c)
