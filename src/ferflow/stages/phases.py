"""What the two training stages (`train`, `finetune`) share: the checks made before Keras is
imported, and how a model file is written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ferflow.config import Params
from ferflow.stages.layout import Layout

log = logging.getLogger(__name__)

TRAIN, FINETUNE = "train", "finetune"  # the stages' names: backups, history.json, MLflow runs


def save_model(model: Any, path: Path) -> None:
    """`model.save(path)` under a temporary name, then renamed: a process killed mid-write
    leaves the previous file (and its lineage) whole."""
    partial = path.with_name(f".partial-{path.name}")
    model.save(partial)
    os.replace(partial, path)


def before_training(params: Params, layout: Layout, *needed: Path) -> None:
    """What can fail in a second, checked before Keras (and TensorFlow) is imported: the
    inputs exist and the tracking server answers; then dead runs are swept."""
    from ferflow import tracking
    from ferflow.errors import FerflowError

    for path in (layout.prepared, *needed):
        if not path.exists():
            stage = "ferflow ingest" if path == layout.prepared else "ferflow train"
            raise FerflowError(f"{path} does not exist; run `{stage}` first (or pass the right --data)")
    # a tracking server that is down fails this now, not after an epoch
    tracking.connect(params).sweep_stale()
