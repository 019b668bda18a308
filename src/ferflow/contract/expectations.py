"""Each check of the contract as Great Expectations expectations, plus its explanation.

`expectations_for` turns the params into GX 1.x expectations on the contract tables, each
tagged with `meta={"check_id": ...}` so results map back to checks. The `explain_*`
functions compute a readable observed value and example files for each check from the
same tables: GX decides pass/fail, the explanation tells a person where to look.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from ferflow.config import Params
from ferflow.contract.checks import DESCRIPTIONS
from ferflow.contract.tables import ContractTables


def _never(gxe: Any, column: str) -> Any:
    """A computed boolean column that must be False on every row."""
    return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[False])


def _at_least(gxe: Any, column: str, bound_column: str) -> Any:
    """column >= bound_column on every row (the bound differs per split / class)."""
    return gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=column, column_B=bound_column, or_equal=True)


def _table_expectations(params: Params, gxe: Any) -> dict[str, list[tuple[str, Any]]]:
    size, classes, v = params.base.image_size, list(params.base.classes), params.validation
    between = gxe.ExpectColumnValuesToBeBetween
    return {
        "rejected": [("decoded", gxe.ExpectTableRowCountToEqual(value=0))],
        "images": [
            ("image_size", between(column="width", min_value=size, max_value=size)),
            ("image_size", between(column="height", min_value=size, max_value=size)),
            ("image_mode", gxe.ExpectColumnValuesToBeInSet(column="mode", value_set=["L"])),
            ("label_set", gxe.ExpectColumnValuesToBeInSet(column="label", value_set=classes)),
            ("label_set", gxe.ExpectColumnDistinctValuesToContainSet(column="label", value_set=classes)),
            ("blank_images", _never(gxe, "is_blank")),
            ("duplicates_within_split", gxe.ExpectCompoundColumnsToBeUnique(column_list=["split", "sha256"])),
            ("cross_split_duplicates", _never(gxe, "leak_of_train")),
            ("conflicting_labels", _never(gxe, "conflicting_label")),
            ("near_duplicates", _never(gxe, "near_duplicate_of_train")),
        ],
        "classes": [
            ("every_class_in_split", between(column="count", min_value=1)),
            ("min_class_count", _at_least(gxe, "count", "min_count")),
            ("class_drift", between(column="drift", max_value=v.max_drift)),
        ],
        "splits": [
            ("row_count", _at_least(gxe, "rows", "min_rows")),
            ("row_count", _at_least(gxe, "max_rows", "rows")),
            ("blank_share", between(column="blank_share", max_value=v.max_blank_share)),
        ],
    }


def expectations_for(
    params: Params,
    severity: Mapping[str, str],
    has_reference: bool,
    found: Mapping[str, list[str]] | None = None,
) -> dict[str, list[Any]]:
    """Expectations per table name ("images", "classes", "splits", "rejected").

    Checks whose severity is "off" get none; each expectation carries in `meta` its check
    id, ferflow severity and `found` (the check's examples from `explain`: files, pairs,
    counts; the Data Docs pages show them under a failed expectation), and its id,
    severity and meaning in `notes`, which the expectation suite pages show.
    """
    import great_expectations.expectations as gxe

    enabled = {check_id for check_id, level in severity.items() if level != "off"}
    if not has_reference:
        enabled.discard("class_drift")  # nothing to compare with: the check passes
    result: dict[str, list[Any]] = {}
    for table, pairs in _table_expectations(params, gxe).items():
        result[table] = []
        for check_id, expectation in pairs:
            if check_id in enabled:
                expectation.meta = {
                    "check_id": check_id,
                    "severity": severity[check_id],
                    "found": list((found or {}).get(check_id, [])),
                }
                expectation.notes = (
                    f"ferflow check {check_id} ({severity[check_id]}): {DESCRIPTIONS[check_id]}"
                )
                expectation.severity = "critical" if severity[check_id] == "error" else "warning"
                result[table].append(expectation)
    return result


# --- explanations: observed values and example files per check --------------------------

Explanation = tuple[Any, list[str]]


def _per_split(frame: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(n) for k, n in frame["split"].value_counts().sort_index().items()}


def _rows(frame: pd.DataFrame, template: str, limit: int) -> list[str]:
    """Format the first `limit` rows with `template` (str.format over the row's columns)."""
    return [template.format(**row) for row in frame.head(limit).to_dict("records")]


def explain_decoded(t: ContractTables, p: Params) -> Explanation:
    return {"rejected": len(t.rejected)}, _rows(t.rejected, "{source} ({reason})", p.validation.max_examples)


def explain_image_size(t: ContractTables, p: Params) -> Explanation:
    size, images = p.base.image_size, t.images
    bad = images[(images["width"] != size) | (images["height"] != size)]
    observed = {"non_canonical_size": len(bad), "converted": int(images["converted"].astype(bool).sum())}
    return observed, _rows(bad, "{source} ({width}x{height})", p.validation.max_examples)


def explain_image_mode(t: ContractTables, p: Params) -> Explanation:
    bad = t.images[t.images["mode"] != "L"]
    observed = {
        "not_grayscale": len(bad),
        "modes": {str(k): int(n) for k, n in bad["mode"].value_counts().items()},
    }
    return observed, _rows(bad, "{source} (mode {mode})", p.validation.max_examples)


def explain_label_set(t: ContractTables, p: Params) -> Explanation:
    expected = set(p.base.classes)
    unknown = t.images[~t.images["label"].isin(expected)]
    missing = sorted(expected - set(t.images["label"]))
    examples = [f"missing class {c!r}" for c in missing]
    examples += _rows(unknown, "{source} (unknown class {label!r})", p.validation.max_examples)
    return {"unknown_labels": sorted(set(unknown["label"])), "missing_classes": missing}, examples[
        : p.validation.max_examples
    ]


def explain_every_class_in_split(t: ContractTables, p: Params) -> Explanation:
    empty = t.classes[t.classes["count"] == 0]
    return {"empty": len(empty)}, _rows(empty, "{split}/{label}: no images", p.validation.max_examples)


def explain_min_class_count(t: ContractTables, p: Params) -> Explanation:
    small = t.classes[t.classes["count"] < t.classes["min_count"]]
    smallest = t.classes.sort_values("count").drop_duplicates("split").set_index("split")
    observed = {s: {"class": r["label"], "count": int(r["count"])} for s, r in smallest.iterrows()}
    return {"smallest": observed}, _rows(
        small, "{split}/{label}: {count} < {min_count}", p.validation.max_examples
    )


def explain_row_count(t: ContractTables, p: Params) -> Explanation:
    s = t.splits
    bad = s[(s["rows"] < s["min_rows"]) | (s["rows"] > s["max_rows"])]
    observed = {str(k): int(n) for k, n in zip(s["split"], s["rows"], strict=True)}
    return observed, _rows(
        bad, "{split}: {rows} rows (allowed {min_rows}..{max_rows})", p.validation.max_examples
    )


def explain_blank_images(t: ContractTables, p: Params) -> Explanation:
    bad = t.images[t.images["is_blank"]]
    return {"blank": len(bad), "per_split": _per_split(bad)}, _rows(
        bad, "{source}", p.validation.max_examples
    )


def explain_blank_share(t: ContractTables, p: Params) -> Explanation:
    s, bound = t.splits, p.validation.max_blank_share
    bad = s[s["blank_share"] > bound].assign(percent=100 * s["blank_share"], bound=100 * bound)
    observed = {str(k): round(float(x), 6) for k, x in zip(s["split"], s["blank_share"], strict=True)}
    template = "{split}: {blank} blank of {rows} ({percent:.2f}% > {bound:.2f}%)"
    return observed, _rows(bad, template, p.validation.max_examples)


def _groups(frame: pd.DataFrame, keys: list[str], template: str, limit: int) -> list[str]:
    """One example per duplicate group: up to 3 members joined with ' = '."""
    examples = []
    for _, group in list(frame.groupby(keys, sort=False))[:limit]:
        members = [template.format(**row) for row in group.head(3).to_dict("records")]
        examples.append(" = ".join(members) + (" ..." if len(group) > 3 else ""))
    return examples


def explain_duplicates_within_split(t: ContractTables, p: Params) -> Explanation:
    dup = t.images[t.images.duplicated(["split", "sha256"], keep=False)]
    groups = dup.groupby(["split", "sha256"]).ngroups
    observed = {"images": len(dup), "groups": groups, "per_split": _per_split(dup)}
    return observed, _groups(dup, ["split", "sha256"], "{source}", p.validation.max_examples)


def explain_cross_split_duplicates(t: ContractTables, p: Params) -> Explanation:
    bad = t.images[t.images["leak_of_train"]]
    observed = {"copies_of_train": len(bad), "per_split": _per_split(bad)}
    return observed, _rows(bad, "{source} = {train_copy}", p.validation.max_examples)


def explain_conflicting_labels(t: ContractTables, p: Params) -> Explanation:
    bad = t.images[t.images["conflicting_label"]]
    observed = {"images": len(bad), "groups": bad["sha256"].nunique()}
    return observed, _groups(bad, ["sha256"], "{source} ({label})", p.validation.max_examples)


def explain_near_duplicates(t: ContractTables, p: Params) -> Explanation:
    bad = t.images[t.images["near_duplicate_of_train"]]
    observed = {
        "near_copies_of_train": len(bad),
        "per_split": _per_split(bad),
        "max_bits": p.validation.near_duplicate_distance,
    }
    template = "{source} ~ {near_train_copy} ({near_train_bits} bits)"
    return observed, _rows(bad, template, p.validation.max_examples)


def explain_class_drift(t: ContractTables, p: Params) -> Explanation:
    c = t.classes
    if c["reference_share"].isna().all():
        return "no reference", []
    bad = c[c["drift"] > p.validation.max_drift].sort_values("drift", ascending=False)
    observed = {
        "max_drift": round(float(c["drift"].max()), 6),
        "bound": p.validation.max_drift,
        "shares": {
            s: {"reference": dict(zip(g["label"], g["reference_share"], strict=True)),
                "now": dict(zip(g["label"], g["share"], strict=True))}
            for s, g in c.groupby("split", sort=False)
        },
    }  # fmt: skip
    template = "{split}/{label}: share {reference_share:.3f} -> {share:.3f}"
    return observed, _rows(bad, template, p.validation.max_examples)


EXPLAIN: dict[str, Callable[[ContractTables, Params], Explanation]] = {
    name.removeprefix("explain_"): function
    for name, function in list(globals().items())
    if name.startswith("explain_") and callable(function)
}


def explain(check_id: str, tables: ContractTables, params: Params) -> Explanation:
    """(observed value, examples) of one check."""
    return EXPLAIN[check_id](tables, params)
