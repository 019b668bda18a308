"""The flow's DVC steps around the stages: `pull-data` (the data version git points at) and
`push-data` (the version this run trained on), and `data_version` for run reports.
"""

from __future__ import annotations

import logging

from ferflow.config import Params
from ferflow.stages.layout import Layout

log = logging.getLogger(__name__)


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
