"""The `train` stage: phase 1 of ferflow.training.train (frozen backbone, dense head) with its
files and MLflow runs. Starts the MLflow parent run, records it in models/run.json, writes
models/head.keras (and its lineage) and models/history.json. Holds models/training.lock.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ferflow.config import Params
from ferflow.stages import lineage
from ferflow.stages.layout import Layout, write_history
from ferflow.stages.phases import TRAIN, before_training, save_model

log = logging.getLogger(__name__)


def train(params: Params, layout: Layout) -> Path:
    """Phase 1 as a pipeline stage: writes head.keras, history.json and run.json."""
    with lineage.models_lock(layout.models, TRAIN):
        return _train(params, layout)


def _train(params: Params, layout: Layout) -> Path:
    before_training(params, layout)
    from ferflow.tracking import runs
    from ferflow.training.model import build_model, ensure_imagenet_weights
    from ferflow.training.runtime import configure_runtime, distribution_scope
    from ferflow.training.train import fit_head, load_training_data

    ensure_imagenet_weights(params.model)  # offline: the from-scratch route, before any run
    configure_runtime(params)
    train_split, val_split = load_training_data(layout.prepared, layout.training_rows_file)
    layout.models.mkdir(parents=True, exist_ok=True)
    with runs.pipeline_run(params, layout.prepared, layout.run_file, resume=False, raw=layout.raw) as run:
        with (
            runs.phase_run(run, TRAIN, 0, params) as epoch_logger,
            distribution_scope(params.runtime.data_parallel),
        ):
            model = build_model(params.model, params.base.image_size, len(params.base.classes))
            made = lineage.current(params, layout, TRAIN, run.run_id, epoch_logger.run_ids[0])
            lineage.claim_backup(layout.backup(TRAIN), made)
            records = fit_head(model, train_split, val_split, params, layout.backup(TRAIN), [epoch_logger])
            runs.log_summary(TRAIN, records, epoch_logger.run_ids)
        save_model(model, layout.head_model)
        made = lineage.record(layout.head_model, made)
        write_history(layout.history_file, records, {TRAIN: made.summary()})
    log.info("phase 1 done: %s (%d epochs)", layout.head_model, len(records))
    return layout.head_model
