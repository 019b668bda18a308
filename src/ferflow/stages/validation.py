"""The `validate` stage: the data contract (Great Expectations) on the prepared dataset ->
reports/validation.json, Data Docs and reports/training_rows.json (the train rows training
uses); `require_valid` turns a failed contract into `DataContractError`.
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
    """The prepared dataset broke the data contract; training must not start."""


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
            "(validate.* in params.yaml) and rerun"
        )


def _check_line(check: Any) -> str:
    """A failed check as one line (CheckResult.line() when it has one)."""
    return check.line() if hasattr(check, "line") else str(check)
