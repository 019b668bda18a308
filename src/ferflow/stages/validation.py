"""The `validate` stage: the data contract (Great Expectations) on the prepared dataset ->
reports/validation.json, Data Docs and reports/training_rows.json (the train rows training
uses); `require_valid` turns a failed contract into `DataContractError`, and
`check_contract` (the pipeline's entry) does both and returns the summary.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ferflow.config import Params
from ferflow.errors import FerflowError
from ferflow.stages.layout import Layout

log = logging.getLogger(__name__)


class DataContractError(FerflowError):
    """The prepared dataset broke the data contract; training must not start. `report` (the
    ValidationReport) says why, for a run report."""

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


def check_contract(params: Params, layout: Layout) -> dict[str, Any]:
    """The pipeline's validate stage: validate, raise `DataContractError` on a failed
    contract, else return the summary the run report shows."""
    report = validate(params, layout)
    require_valid(report)
    return {
        "passed": True,
        "warnings": len(report.warnings),
        "summary": report.summary_markdown(),
        "data_docs": str(report.data_docs_index or ""),
    }


def validate(params: Params, layout: Layout, reference: Path | None = None) -> Any:
    """Check the data contract; returns the ValidationReport (it never raises on failure).

    `reference`: the profile.json of the last accepted dataset, for the drift check.
    """
    from ferflow.contract.validation import validate_dataset

    return validate_dataset(layout.prepared, params, layout.reports, reference)


def require_valid(report: Any) -> None:
    """Raise `DataContractError` when the validation report has error-level failures."""
    if not report.passed:
        problems = "; ".join(_check_line(error) for error in report.errors[:5]) or "see the report"
        raise DataContractError(
            f"the prepared dataset broke the data contract ({len(report.errors)} error(s): "
            f"{problems}); training did not start. Fix the data or the contract "
            "(validate.* in params.yaml) and rerun",
            report=report,
        )


def _check_line(check: Any) -> str:
    """A failed check as one line (CheckResult.line() when it has one)."""
    return check.line() if hasattr(check, "line") else str(check)
