"""The `finetune` stage: phase 2 of ferflow.training.train (the whole network) with its files
and MLflow runs: reads models/head.keras, writes models/model.keras (the file MLflow logged,
copied back), completes history.json, logs the model to the MLflow parent run and records
its URI in run.json. When that parent run already holds a phase 2, failed or was killed
(never reopened, unless its phase 2 left the backup this phase 2 resumes), or logged other
`finetune.*` params, phase 2 starts a new parent run, which gets phase 1's curves copied
from history.json and a tag naming the run they came from: each registered model has a run
of its own. Holds models/training.lock; refuses a head.keras of other params, data or rows,
or of a run that failed (ferflow.stages.lineage).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from ferflow.config import Params
from ferflow.stages import lineage
from ferflow.stages.layout import Layout, read_history, write_history
from ferflow.stages.phases import FINETUNE, TRAIN, before_training

log = logging.getLogger(__name__)


def finetune(params: Params, layout: Layout) -> Path:
    """Phase 2 as a pipeline stage: reads head.keras, writes model.keras and history.json,
    logs the model to the parent run and records its URI in run.json."""
    with lineage.models_lock(layout.models, FINETUNE):
        return _finetune(params, layout)


def _finetune(params: Params, layout: Layout) -> Path:
    before_training(params, layout, layout.head_model)
    from ferflow.tracking import runs, store

    head = lineage.check_head(params, layout)  # before Keras: a wrong head fails in a second
    uri = store.tracking_uri(params)
    state = runs.run_state(uri, head.phase_run_id or head.run_id, params=False)
    lineage.require_finished(state, head.run_id, str(layout.head_model), "ferflow train")
    lineage.check_history(layout, head)
    from ferflow.tracking import models
    from ferflow.training.model import load_model
    from ferflow.training.runtime import configure_runtime, distribution_scope
    from ferflow.training.train import fine_tune, load_training_data

    configure_runtime(params)
    train_split, val_split = load_training_data(layout.prepared, layout.training_rows_file)
    train_records = [r for r in read_history(layout.history_file) if r["phase"] == TRAIN]
    resume = _continues_run(params, layout, head)
    with runs.pipeline_run(params, layout.prepared, layout.run_file, resume=resume, raw=layout.raw) as run:
        if not resume:
            runs.log_earlier_phase(run, TRAIN, train_records, head.run_id)
        killed = lineage.resumed_phase_run(
            layout.backup(FINETUNE), run.run_id, _planned(params, layout, head)
        )
        with (
            runs.phase_run(run, FINETUNE, len(train_records), params, continues=killed) as epoch_logger,
            distribution_scope(params.runtime.data_parallel),
        ):
            made = lineage.current(
                params,
                layout,
                FINETUNE,
                run.run_id,
                epoch_logger.run_ids[0],
                {layout.head_model.name: head.sha256 or ""},
            )
            lineage.claim_backup(layout.backup(FINETUNE), made)
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
        example = val_split[0][: min(4, len(val_split[0]))]
        model_uri = models.log_model(model, params.base.image_size, len(params.base.classes), example)
        # model.keras is the very file MLflow serves, so registered == trained, byte for byte
        models.fetch_model_file(model_uri, layout.model_file)
        made = lineage.record(layout.model_file, made)
        store.client(run.tracking_uri).set_tag(run.run_id, lineage.MODEL_SHA_TAG, made.sha256)
        write_history(
            layout.history_file, train_records + records, {TRAIN: head.summary(), FINETUNE: made.summary()}
        )
        store.write_run_info(layout.run_file, replace(run, model_uri=model_uri))
    log.info("phase 2 done: %s (%d epochs), MLflow model %s", layout.model_file, len(records), model_uri)
    return layout.model_file


def _planned(params: Params, layout: Layout, head: lineage.Lineage) -> lineage.Lineage:
    """The lineage phase 2 would give its model now (what a backup must match to resume)."""
    return lineage.current(params, layout, FINETUNE, inputs={layout.head_model.name: head.sha256 or ""})


def _continues_run(params: Params, layout: Layout, head: lineage.Lineage) -> bool:
    """Whether phase 2 continues the parent run of run.json:

    - a run whose phase 2 was killed or failed and left the backup this phase 2 resumes
      (same params, data and head.keras): the rerun finishes that training in its runs;
    - else only the run that made head.keras, while it holds no model, finished and logged
      the params phase 2 runs with (any other failed or killed run is never reopened: its
      status stays).

    Otherwise phase 2 starts a new parent run, with phase 1's curves copied from history.json.
    """
    from ferflow.tracking import runs, store

    previous = store.read_run_info(layout.run_file)
    if previous is None:
        return False
    state = runs.run_state(store.run_uri(previous), previous.run_id)
    backup = layout.backup(FINETUNE)
    if (
        state is not None
        and previous.model_uri is None
        and lineage.resumed_phase_run(backup, previous.run_id, _planned(params, layout, head))
    ):
        log.info("MLflow run %s (%s) resumes its phase 2 backup", previous.run_id, state["status"])
        return True
    if previous.run_id != head.run_id:
        return False
    if previous.model_uri is not None:
        why = "already holds a phase 2"
    elif state is None or state["status"] != "FINISHED":
        why = f"is {state['status'] if state else 'not in this tracking store'}"
    else:
        wanted = lineage.current(params, layout, FINETUNE).params
        logged = {key: state["params"].get(key) for key in wanted if key in state["params"]}
        changed = lineage.params_changes(logged, {key: wanted[key] for key in logged})
        if not changed:
            return True
        why = f"logged other params ({', '.join(changed)})"
    log.info("MLflow run %s %s: phase 2 gets a new run", previous.run_id, why)
    return False
