"""The `ingest` stage: a raw download (folder, zip or fer2013.csv) -> the prepared dataset."""

from __future__ import annotations

import logging
from pathlib import Path

from ferflow.config import Params
from ferflow.stages.layout import Layout

log = logging.getLogger(__name__)


def ingest(params: Params, layout: Layout) -> Path:
    """Raw download (folder, zip or fer2013.csv) -> the canonical prepared dataset."""
    from ferflow.data.ingest import ingest as ingest_source

    ingest_source(layout.raw, layout.prepared, params)
    return layout.prepared
