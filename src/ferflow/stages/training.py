"""The `train` and `finetune` stages: the two phases of ferflow.train with their files and
MLflow runs.

- `train`: phase 1 (frozen backbone, dense head). Starts the MLflow parent run, records it
  in models/run.json, writes models/head.keras and models/history.json.
- `finetune`: phase 2 (whole network), in the same parent run: writes models/model.keras,
  completes history.json, logs the model to MLflow and records its URI in run.json. When
  that parent run already holds a phase 2 (finetune rerun alone: `dvc repro` after a
  `finetune.*` change, a cached phase 1 in the flow), phase 2 starts a new parent run, which
  gets phase 1's curves copied from history.json and a tag naming the run they came from:
  each registered model has a run of its own.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ferflow.config import Params
from ferflow.stages.layout import Layout, read_history, write_history

log = logging.getLogger(__name__)

TRAIN, FINETUNE = "train", "finetune"


def train(params: Params, layout: Layout) -> Path:
    """Phase 1 as a pipeline stage: writes head.keras, history.json and run.json."""
    _before_training(params, layout)
    from ferflow.model import build_model
    from ferflow.runtime import configure_runtime, distribution_scope
    from ferflow.tracking import runs
    from ferflow.train import fit_head, load_training_data

    configure_runtime(params)
    train_split, val_split = load_training_data(params, layout.prepared)
    layout.models.mkdir(parents=True, exist_ok=True)
    with runs.pipeline_run(params, layout.prepared, layout.run_file, resume=False, raw=layout.raw) as run:
        with (
            runs.phase_run(run, TRAIN, 0, params) as epoch_logger,
            distribution_scope(params.train.data_parallel),
        ):
            model = build_model(params.model, params.base.image_size, len(params.base.classes))
            records = fit_head(model, train_split, val_split, params, layout.backup(TRAIN), [epoch_logger])
            runs.log_summary(TRAIN, records, epoch_logger.run_ids)
        model.save(layout.head_model)
        write_history(layout.history_file, records)
    log.info("phase 1 done: %s (%d epochs)", layout.head_model, len(records))
    return layout.head_model


def finetune(params: Params, layout: Layout) -> Path:
    """Phase 2 as a pipeline stage: reads head.keras, writes model.keras and history.json,
    logs the model to the parent run and records its URI in run.json."""
    _before_training(params, layout, layout.head_model)
    from ferflow.model import load_model
    from ferflow.runtime import configure_runtime, distribution_scope
    from ferflow.tracking import models, runs, store
    from ferflow.train import fine_tune, load_training_data

    configure_runtime(params)
    train_split, val_split = load_training_data(params, layout.prepared)
    train_records = [r for r in read_history(layout.history_file) if r["phase"] == TRAIN]
    previous = store.read_run_info(layout.run_file)
    # The run phase 1 started (or a phase 2 cut short) has no model yet: continue it.
    resume = previous is None or previous.model_uri is None
    with runs.pipeline_run(params, layout.prepared, layout.run_file, resume=resume, raw=layout.raw) as run:
        if previous is not None and not resume:
            log.info("MLflow run %s already holds a phase 2: this one gets a new run", previous.run_id)
            runs.log_earlier_phase(run, TRAIN, train_records, previous.run_id)
        with (
            runs.phase_run(run, FINETUNE, len(train_records), params) as epoch_logger,
            distribution_scope(params.train.data_parallel),
        ):
            model = load_model(layout.head_model)
            records = fine_tune(
                model,
                train_split,
                val_split,
                params,
                layout.backup(FINETUNE),
                len(train_records),
                [epoch_logger],
            )
            runs.log_summary(FINETUNE, records, epoch_logger.run_ids)
        model.save(layout.model_file)
        write_history(layout.history_file, train_records + records)
        example = val_split[0][: min(4, len(val_split[0]))]
        model_uri = models.log_model(model, params.base.image_size, len(params.base.classes), example)
        store.write_run_info(
            layout.run_file, store.RunInfo(run.run_id, run.experiment_id, run.tracking_uri, model_uri)
        )
    log.info("phase 2 done: %s (%d epochs), MLflow model %s", layout.model_file, len(records), model_uri)
    return layout.model_file


def _before_training(params: Params, layout: Layout, *needed: Path) -> None:
    """What can fail in a second, checked before Keras (and TensorFlow) is imported: the
    inputs exist and the tracking server answers; then dead runs are swept."""
    from ferflow.errors import FerflowError
    from ferflow.tracking import store

    for path in (layout.prepared, *needed):
        if not path.exists():
            stage = "ferflow ingest" if path == layout.prepared else "ferflow train"
            raise FerflowError(f"{path} does not exist; run `{stage}` first (or pass the right --data)")
    store.connect(params)  # a tracking server that is down fails this now, not after an epoch
    sweep_stale_runs(params)


def recorded_run(layout: Layout) -> dict[str, Any]:
    """models/run.json as a dict (run id, experiment id, tracking URI, model URI), or {}
    before training or when the file is unreadable: for reports, never raises."""
    from ferflow.tracking import store

    try:
        run = store.read_run_info(layout.run_file)
    except store.TrackingError:
        return {}
    return run.to_json() if run else {}


def mark_run(params: Params, layout: Layout, since: float, status: str) -> str | None:
    """Mark the MLflow run of models/run.json `status` (FAILED or KILLED) if training
    wrote that file after `since` (epoch seconds): only a run this pipeline run started.

    Returns the run id it marked, or None. Never raises: it runs while a failure is
    already being reported, and must not hide it.
    """
    from ferflow.tracking import runs, store

    if status not in ("FAILED", "KILLED"):
        raise ValueError(f"status must be FAILED or KILLED, got {status!r}")
    try:
        run = store.read_run_info(layout.run_file)
        if run is None or layout.run_file.stat().st_mtime < since:
            return None
        runs.set_run_status(store.run_uri(run), run.run_id, status)
    except Exception as err:  # reporting a failure must not raise another one
        log.warning("could not mark the MLflow run of %s %s: %s", layout.run_file, status, err)
        return None
    log.info("marked MLflow run %s %s", run.run_id, status)
    return run.run_id


def sweep_stale_runs(params: Params) -> list[tuple[str, str]]:
    """`ferflow runs sweep`, and the start of every MLflow stage: runs left RUNNING by a
    process that is gone are marked FAILED (ferflow.tracking.runs.sweep)."""
    from ferflow.tracking import runs, store

    return runs.sweep(store.connect(params), params.tracking.experiment, params.tracking.stale_run_after_s)
