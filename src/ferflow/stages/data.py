"""The data stages: `ingest` and `validate`, and the DVC moves around them.

- `synthesize`: synthetic faces in the download layout (the demo, tests).
- `add_data`, `configure_remote`, `pull_data`, `push_data`, `data_version`: the raw data
  under DVC (`ferflow data ...`, the flow's first and fourth steps).
- `ingest`: a raw download (folder, zip or fer2013.csv) -> the prepared dataset.
- `validate`: the data contract (Great Expectations) -> reports/validation.json, Data Docs;
  `require_valid` turns a failed contract into `DataContractError`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ferflow.config import Params
from ferflow.errors import FerflowError
from ferflow.stages.layout import Layout

log = logging.getLogger(__name__)


class DataContractError(FerflowError):
    """The prepared dataset broke the data contract; training must not start."""


def synthesize(
    params: Params,
    out: Path,
    per_class: int | None = None,
    test_per_class: int | None = None,
    seed: int | None = None,
) -> Path:
    """Synthetic faces in the download layout (train/<class>/*.jpg, test/<class>/*.jpg);
    counts and seed default to synth.per_class, synth.test_per_class and base.seed."""
    from ferflow.data.synth import write_synthetic_dataset

    write_synthetic_dataset(
        Path(out),
        classes=params.base.classes,
        per_class=per_class or params.synth.per_class,
        test_per_class=test_per_class or params.synth.test_per_class,
        seed=params.base.seed if seed is None else seed,
        size=params.base.image_size,
    )
    return Path(out)


def pull_data(params: Params, layout: Layout) -> str:
    """Fetch the raw data version git points at from the DVC remote; returns its version."""
    from ferflow.data import versioning

    versioning.pull(params, layout.root, targets=_raw_pointer(layout))
    return data_version(layout)


def push_data(params: Params, layout: Layout) -> str:
    """Upload the raw data version to the DVC remote; returns its version."""
    from ferflow.data import versioning

    versioning.push(params, layout.root, targets=_raw_pointer(layout))
    return data_version(layout)


def _raw_pointer(layout: Layout) -> list[str]:
    """The raw data's .dvc file (folder, .zip or .csv), or [] for everything DVC tracks."""
    for suffix in ("", ".zip", ".csv"):
        pointer = layout.raw.with_name(f"{layout.raw.name}{suffix}.dvc")
        if pointer.exists():
            return [str(pointer)]
    return []


def data_version(layout: Layout) -> str:
    """The DVC md5 of the raw data, or '' when it is not DVC-tracked."""
    from ferflow.data import versioning

    return versioning.data_version(layout.raw) or ""


def ingest(params: Params, layout: Layout) -> Path:
    """Raw download (folder, zip or fer2013.csv) -> the canonical prepared dataset."""
    from ferflow.data.ingest import ingest as ingest_source

    ingest_source(layout.raw, layout.prepared, params)
    return layout.prepared


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


def add_data(
    params: Params,
    source: Path,
    dest: Path | None = None,
    force: bool = False,
    root: Path | None = None,
    params_file: Path | None = None,
) -> Path:
    """`ferflow data add`: copy a FER download under data/ and track it with DVC.

    With `params_file`, a copy that did not land at `data.raw` (a .zip or .csv keeps its
    suffix) is recorded there, so dvc.yaml's `${data.raw}` names what was added and
    `dvc repro` runs next."""
    from ferflow.config import set_in_file
    from ferflow.data.versioning import add_dataset

    target = add_dataset(Path(source), params, dest=dest, force=force, repo_root=root)
    if params_file is not None:
        base = Path(params_file).resolve().parent
        recorded = target.resolve().relative_to(base) if target.resolve().is_relative_to(base) else target
        try:
            if set_in_file(params_file, "data", "raw", recorded.as_posix()):
                log.info("%s: data.raw is now %s (what dvc.yaml's ingest stage reads)", params_file, recorded)
        except FerflowError as err:  # e.g. a profile that inherits data.raw: say what to do
            log.warning("%s; set data.raw to %s in params.yaml for `dvc repro`", err, recorded)
    return target


def configure_remote(params: Params) -> str:
    """`ferflow data remote`: make data.remote the default DVC remote (no credentials written)."""
    from ferflow.data.versioning import configure_remote as configure

    return configure(params)


def push_targets(params: Params, targets: Sequence[str]) -> int:
    """`ferflow data push`: upload tracked data (all, or `targets`); returns the file count."""
    from ferflow.data.versioning import push

    return push(params, targets=targets)


def pull_targets(params: Params, targets: Sequence[str]) -> int:
    """`ferflow data pull`: download tracked data (all, or `targets`); returns the file count."""
    from ferflow.data.versioning import pull

    return pull(params, targets=targets)
