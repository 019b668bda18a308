"""The outcome of a validation run: one `CheckResult` per check, and the report around them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ferflow.errors import FerflowError

Severity = Literal["error", "warning", "off"]
# What a person reads for one check / one table / the dataset (validation.json, Data Docs).
Status = Literal["passed", "warning", "failed", "off"]
Verdict = Literal["passed", "passed with warnings", "failed"]


def verdict(failed_severities: Iterable[str]) -> Verdict:
    """The verdict over some checks, from the severities of those that failed.

    Only an error-level failure fails; warning-level failures pass "with warnings". The
    same rule decides the contract (`ValidationReport.verdict`) and each table's page of
    the Data Docs, so both say the same thing.
    """
    failed = set(failed_severities)
    if "error" in failed:
        return "failed"
    return "passed with warnings" if "warning" in failed else "passed"


class ContractViolation(FerflowError):
    """An error-level check of the data contract failed; the message names checks and files."""


@dataclass(frozen=True)
class CheckResult:
    """One check of the contract: did it pass, what was seen, which files show the problem."""

    id: str
    description: str
    severity: Severity
    success: bool
    observed: Any
    examples: list[str] = field(default_factory=list)
    expectations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return not self.success and self.severity != "off"

    @property
    def status(self) -> Status:
        """passed | warning (a warning-level check failed) | failed (an error-level one) | off."""
        if self.severity == "off":
            return "off"
        if self.success:
            return "passed"
        return "warning" if self.severity == "warning" else "failed"

    def line(self) -> str:
        """One short line, the finding first, then what was expected (the log level, or the
        list it is in, gives the severity); every example is in validation.json:
        `blank_images: blank 13, per_split (train 13); e.g. a.jpg, b.jpg, c.jpg, ...;
        expected no blank images (...)`."""
        text = f"{self.id}: {_compact(self.observed)}"
        if self.examples:
            more = ", ..." if len(self.examples) > LINE_EXAMPLES else ""
            text += "; e.g. " + ", ".join(self.examples[:LINE_EXAMPLES]) + more
        return f"{text}; expected {self.description}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "description": self.description,
            "severity": self.severity,
            "success": self.success,
            "status": self.status,
            "observed": self.observed,
            "examples": self.examples,
            "expectations": self.expectations,
        }


def _short(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


LINE_EXAMPLES = 3  # examples in a console line


def _compact(value: Any, limit: int = 120) -> str:
    """An observed value for a console line: `blank 13, per_split (train 10, test 3)`."""

    def words(item: Any) -> str:
        if isinstance(item, dict):
            nested = {k: f"({words(v)})" if isinstance(v, dict) else words(v) for k, v in item.items()}
            return ", ".join(f"{k} {v}" for k, v in nested.items())
        if isinstance(item, list | tuple):
            return "[" + ", ".join(map(words, item)) + "]"
        return str(item)

    return _short(words(value), limit)


@dataclass(frozen=True)
class ValidationReport:
    """All checks of one dataset, plus the class profile to compare the next dataset with."""

    data_dir: Path
    checks: list[CheckResult]
    profile: dict[str, Any]
    data_docs_index: Path | None = None
    report_path: Path | None = None
    profile_path: Path | None = None

    @property
    def errors(self) -> list[CheckResult]:
        return [c for c in self.checks if c.failed and c.severity == "error"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if c.failed and c.severity == "warning"]

    @property
    def passed(self) -> bool:
        """True when no error-level check failed (warnings allowed)."""
        return not self.errors

    @property
    def verdict(self) -> Verdict:
        """passed | passed with warnings | failed: what the Data Docs and the log say."""
        return verdict(c.severity for c in self.checks if c.failed)

    def check(self, check_id: str) -> CheckResult:
        for result in self.checks:
            if result.id == check_id:
                return result
        raise KeyError(f"no check {check_id!r}; known: {[c.id for c in self.checks]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir),
            "passed": self.passed,
            "verdict": self.verdict,
            "errors": [c.id for c in self.errors],
            "warnings": [c.id for c in self.warnings],
            "checks": [c.to_dict() for c in self.checks],
            "profile": self.profile,
            "data_docs_index": str(self.data_docs_index) if self.data_docs_index else None,
        }

    def summary_markdown(self) -> str:
        """A short table for the Prefect artifact and the MLflow run."""
        verdict = "passed" if self.passed else "FAILED"
        lines = [
            f"**Data contract {verdict}** for `{self.data_dir}`: "
            f"{len(self.errors)} error(s), {len(self.warnings)} warning(s), {len(self.checks)} checks.",
            "",
            "| check | severity | result | observed |",
            "|---|---|---|---|",
        ]
        for c in self.checks:
            result = "pass" if c.success else ("skipped" if c.severity == "off" else "FAIL")
            observed = _short(c.observed, 80).replace("|", "\\|")
            lines.append(f"| {c.id} | {c.severity} | {result} | {observed} |")
        return "\n".join(lines) + "\n"

    def failure_message(self) -> str:
        """The error-level failures, one per line, naming example files."""
        return "\n".join(c.line() for c in self.errors)

    def raise_for_errors(self) -> None:
        """Raise `ContractViolation` when an error-level check failed (for pipeline stages)."""
        if not self.passed:
            where = f" (details: {self.report_path})" if self.report_path else ""
            raise ContractViolation(
                f"data contract failed for {self.data_dir}{where}:\n{self.failure_message()}\n"
                "Fix the data, or relax the check in params.yaml validate.severity if it is expected."
            )
