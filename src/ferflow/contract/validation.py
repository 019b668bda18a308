"""The data contract: checks a prepared dataset before anything trains on it.

`validate_dataset` computes per-image and per-class tables (blank images, exact and near
duplicates across splits, class shares, ...), runs them through a Great Expectations 1.x
suite, and writes:

- `<report_dir>/validation.json`: every check with id, severity, success, observed value
  and example files;
- `<report_dir>/data_docs/index.html`: the Data Docs (`report.data_docs_index`), one
  self-contained page that opens offline: the verdict, what each failed check found, every
  check, and links to Great Expectations' page per table (`ferflow.contract.data_docs`);
- `<report_dir>/profile.json`: the class profile of this dataset when it passed, the
  reference the next dataset's class shares are compared with (drift).

Severities (error / warning / off) come from `validate.severity`; see
`ferflow.contract.checks` for the ids and defaults, docs/data-contract.md for the policy.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ferflow.config import Params
from ferflow.contract.checks import CHECKS, Check, severities
from ferflow.contract.data_docs import INDEX_FILE, write_index
from ferflow.contract.expectations import Explanation, expectations_for, explain
from ferflow.contract.gx_runner import ExpectationOutcome, run_expectations
from ferflow.contract.report import CheckResult, ContractViolation, Severity, ValidationReport
from ferflow.contract.tables import build_tables
from ferflow.data.dataset import DatasetError, PreparedData, load_prepared, write_training_rows
from ferflow.errors import FerflowError
from ferflow.files import DATA_DOCS_DIR, PROFILE_FILE, TRAINING_ROWS_FILE, VALIDATION_FILE, write_json

__all__ = [
    "ContractViolation",
    "ReferenceProfileError",
    "ValidationReport",
    "training_drops",
    "training_mask",
    "validate_dataset",
]

log = logging.getLogger(__name__)


class ReferenceProfileError(FerflowError, ValueError):
    """The reference profile given for drift is missing or malformed."""


def load_reference(path: Path | None) -> dict[str, Any] | None:
    """The class profile saved by an earlier accepted validation, or None."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise ReferenceProfileError(
            f"reference profile {path} not found; pass the profile.json of the last accepted "
            "dataset (written by `ferflow validate`), or omit --reference"
        )
    try:
        profile = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReferenceProfileError(f"reference profile {path} is not JSON: {err}") from err
    if not isinstance(profile, dict) or not isinstance(profile.get("splits"), dict):
        raise ReferenceProfileError(f"reference profile {path} has no 'splits' mapping")
    return profile


def _check_shape(prepared: PreparedData, data_dir: Path, params: Params) -> None:
    size = params.base.image_size
    if prepared.images.ndim != 3 or prepared.images.shape[1:] != (size, size):
        raise DatasetError(
            f"{data_dir}/images.npy has shape {prepared.images.shape}, expected (N, {size}, {size}) "
            f"for base.image_size={size}; re-run ingest with the same params"
        )


def validate_dataset(
    data_dir: Path, params: Params, report_dir: Path, reference_profile: Path | None = None
) -> ValidationReport:
    """Run the data contract on a prepared dataset; write validation.json, Data Docs and
    training_rows.json (which train rows training uses: `training_drops`).

    Returns the report; it does not raise on failed checks (call `report.raise_for_errors()`
    in a pipeline stage). Raises `FerflowError` when the dataset cannot be read at all.
    """
    data_dir, report_dir = Path(data_dir), Path(report_dir)
    started = time.perf_counter()
    reference = load_reference(reference_profile)
    prepared = load_prepared(data_dir, mmap=True)
    _check_shape(prepared, data_dir, params)
    severity = severities(params)
    tables = build_tables(prepared, data_dir, params, reference)
    log.info(
        "contract tables for %d images computed in %.1fs",
        len(prepared.manifest),
        time.perf_counter() - started,
    )
    frames = {
        "images": tables.images,
        "classes": tables.classes,
        "splits": tables.splits,
        "rejected": tables.rejected,
    }
    # what each check found (files, pairs, counts): for the report and GX's pages alike
    explained = {c.id: explain(c.id, tables, params) for c in CHECKS if severity[c.id] != "off"}
    outcomes, suites = run_expectations(
        frames,
        expectations_for(
            params,
            severity,
            has_reference=reference is not None,
            found={check_id: examples for check_id, (_, examples) in explained.items()},
        ),
        report_dir / DATA_DOCS_DIR,
        params.validation.max_examples,
    )
    checks = [_check_result(c, severity[c.id], outcomes, explained) for c in CHECKS]
    accepted = not any(c.failed and c.severity == "error" for c in checks)
    report = ValidationReport(
        data_dir=data_dir,
        checks=checks,
        profile=tables.profile,
        data_docs_index=report_dir / DATA_DOCS_DIR / INDEX_FILE,
        report_path=report_dir / VALIDATION_FILE,
        # only an accepted dataset becomes the reference for the next one's drift check
        profile_path=report_dir / PROFILE_FILE if accepted else None,
    )
    write_index(report, suites, report_dir / DATA_DOCS_DIR)
    _write(report, report_dir)
    write_training_rows(report_dir / TRAINING_ROWS_FILE, data_dir, training_drops(prepared, params))
    _log_summary(report, time.perf_counter() - started)
    return report


def _check_result(
    check: Check,
    level: Severity,
    outcomes: list[ExpectationOutcome],
    explained: dict[str, Explanation],
) -> CheckResult:
    """Merge a check's GX outcomes (pass/fail) with its explanation (observed, examples)."""
    if level == "off":
        return CheckResult(check.id, check.description, "off", True, "off")
    mine = [o for o in outcomes if o.check_id == check.id]
    success = all(o.success for o in mine)
    observed, examples = explained[check.id]
    return CheckResult(
        id=check.id,
        description=check.description,
        severity=level,
        success=success,
        observed=observed,
        examples=[] if success else examples,
        expectations=[o.to_dict() for o in mine],
    )


def _write(report: ValidationReport, report_dir: Path) -> None:
    write_json(report_dir / VALIDATION_FILE, report.to_dict(), sort_keys=False)
    if report.profile_path is not None:
        write_json(report.profile_path, report.profile)


def _log_summary(report: ValidationReport, seconds: float) -> None:
    for check in report.errors:
        log.error("%s", check.line())
    for check in report.warnings:
        log.warning("%s", check.line())
    log.info(
        "data contract %s in %.1fs: %d error(s), %d warning(s); report %s, Data Docs %s",
        report.verdict if report.passed else "FAILED",
        seconds,
        len(report.errors),
        len(report.warnings),
        report.report_path,
        report.data_docs_index,
    )


def training_drops(prepared: PreparedData, params: Params) -> dict[str, np.ndarray]:
    """The rows of `prepared.split("train")` that training leaves out, by policy (bool masks
    over the split, True: left out); the `validate` stage writes them to
    reports/training_rows.json, which training reads.

    - "blank", with `validate.drop_blank_from_train`: blank / near-constant train images
      (pixel std < `validate.blank_std_threshold`);
    - "leaked", with `validate.leakage: drop`: train images that a val or test image copies
      (exactly, or nearly: `contract.tables.leaked_train_rows`), so the test scores a model
      that never saw those faces.

    Val and test are never filtered: the test split stays the published one.
    """
    train = prepared.manifest[prepared.manifest["split"] == "train"]
    drops: dict[str, np.ndarray] = {}
    if params.validation.drop_blank_from_train:
        drops["blank"] = (train["std"].astype(float) < params.validation.blank_std_threshold).to_numpy()
        log.info(
            "training leaves out %d blank train image(s) (validate.drop_blank_from_train)",
            int(drops["blank"].sum()),
        )
    if params.validation.leakage == "drop":
        from ferflow.contract.tables import leaked_train_rows

        drops["leaked"] = np.asarray(leaked_train_rows(prepared, params), dtype=bool)
        log.info(
            "training leaves out %d train image(s) copied in val/test (validate.leakage: drop)",
            int(drops["leaked"].sum()),
        )
    return drops


def training_mask(prepared: PreparedData, params: Params) -> np.ndarray:
    """Which rows of `prepared.split("train")` training uses (bool, same order): all but
    those of `training_drops`."""
    train_rows = int((prepared.manifest["split"] == "train").sum())
    keep = np.ones(train_rows, dtype=bool)
    for dropped in training_drops(prepared, params).values():
        keep &= ~dropped
    return keep
