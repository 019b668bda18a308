"""The pipeline as one table, `STAGES`, in the order the flow runs it. Everything else is
derived from it: `ferflow run --stage NAME` and `ferflow.stages.run_stage` (the entry
point), the Prefect tasks with their timeout, retries and cache key (tasks/pipeline.py,
tasks/caching.py), the flow's order (flows/retrain.py), and dvc.yaml's deps, params and
outs (ferflow.stages.dvcfile), so both orchestrators agree on when a stage is stale.

`code` lists every module of src/ferflow the stage imports, directly or not (a test
derives that set from the import graph, so it cannot drift); `params` every params key or
section it reads (a test records the reads of a real run of each stage).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferflow.config import Params, ParamsError

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # src/ferflow


@dataclass(frozen=True)
class DvcOut:
    """An output as dvc.yaml declares it: `cache: false` for small files git may hold,
    `persist` for a file two stages write; `notes` become comment lines above it."""

    path: str
    cache: bool = True
    persist: bool = False
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class StageSpec:
    """What one stage reads and writes, and how DVC runs it (ferflow.stages.dvcfile)."""

    name: str
    # "module:function" under ferflow.stages, called with (params, layout): raises when the
    # stage fails and returns a small JSON-able summary (the Prefect task's result)
    entry: str
    params: tuple[str, ...]  # params keys or whole sections it reads
    code: tuple[str, ...]  # source files (or packages) under src/ferflow it runs
    inputs: tuple[str, ...]  # Layout attributes it reads (raw, prepared, models/<file>)
    outputs: tuple[str, ...]  # files it writes, as "<Layout attribute>/<name>" (Prefect's cache)
    timeout_s: float = 3600.0  # the Prefect task's default timeout (flow.timeouts.<name> overrides)
    network: bool = False  # it talks to a server: retried with backoff (flow.network_retries)
    cached: bool = True  # Prefect skips it while its inputs, params and code are unchanged
    switch: str = ""  # the flow.<switch> flag (or the flow's argument) that turns it on; "": always
    cmd: str = ""  # dvc.yaml's command; "": a flow-only step, not in dvc.yaml
    dvc_outs: tuple[DvcOut, ...] = ()  # dvc.yaml's outs (a folder may stand for its files)
    dvc_metrics: tuple[DvcOut, ...] = ()


_CORE = ("config.py", "errors.py", "files.py", "data/dataset.py", "stages/layout.py")
_MODEL = (
    "training/augment.py",
    "training/backup.py",
    "training/backbones.py",
    "training/batching.py",
    "training/budget.py",
    "training/callbacks.py",
    "training/model.py",
    "training/monitors.py",
    "progress.py",
    "training/runtime.py",
    "training/schedules.py",
    "training/train.py",
)
_TRACKING = (
    "tracking/session.py",
    "tracking/store.py",
    "tracking/runs.py",
    "tracking/epochs.py",
    "data/versioning.py",
    "redaction.py",
)
# the flow's DVC steps (pull-data, push-data)
_SYNC = (
    "config.py",
    "errors.py",
    "files.py",
    "redaction.py",
    "stages/layout.py",
    "stages/sync.py",
    "data/versioning.py",
)
# what ties a stage's files to its run (lineage.py reads each stage's params from STAGES)
_LINEAGE = ("stages/lineage.py", "stages/spec.py")
# the evaluate stage's code; loading any model the commands name (load_predict_fn) sits in
# its module, hence tracking.models (which no longer imports the registry or its lock)
_EVALUATE = (
    *_CORE,
    *_TRACKING,
    *_LINEAGE,
    "training/backup.py",
    "training/batching.py",
    "training/callbacks.py",
    "training/monitors.py",
    "evaluation/evaluate.py",
    "evaluation/plots.py",
    "progress.py",
    "tracking/models.py",
    "stages/evaluation.py",
)
STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec(
            "pull-data",
            "sync:pull_data",
            params=("data",),
            code=_SYNC,
            inputs=(),
            outputs=(),
            timeout_s=1800,
            network=True,
            cached=False,
            switch="pull_data",
        ),
        StageSpec(
            "ingest",
            "ingestion:ingest",
            params=("base.seed", "base.classes", "base.image_size", "ingest"),
            code=(
                *_CORE,
                "progress.py",
                "stages/ingestion.py",
                "data/ingest.py",
                "data/images.py",
                "data/safezip.py",
            ),
            inputs=("raw",),
            outputs=("prepared/images.npy", "prepared/manifest.csv", "prepared/dataset.json"),
            cmd="ferflow ingest ${data.raw} --out ${data.prepared}",
            dvc_outs=(DvcOut("prepared"),),
        ),
        StageSpec(
            "validate",
            "validation:check_contract",
            params=("base.classes", "base.image_size", "validate"),
            code=(*_CORE, "stages/validation.py", "contract"),
            inputs=("prepared",),
            # which train rows training uses (the blank-image and leakage policies)
            outputs=("reports/validation.json", "reports/training_rows.json"),
            timeout_s=1800,
            cmd="ferflow validate ${data.prepared} --reports reports",
            dvc_outs=(
                DvcOut("reports/validation.json", cache=False),
                DvcOut(
                    "reports/training_rows.json",
                    cache=False,
                    notes=("the train rows training uses (the blank-image and leakage policies decide)",),
                ),
            ),
        ),
        # Accepted data goes to the remote before training: a registered model's data
        # version is always fetchable.
        StageSpec(
            "push-data",
            "sync:push_data",
            params=("data",),
            code=_SYNC,
            inputs=("raw",),
            outputs=(),
            network=True,
            cached=False,
            switch="push_data",
        ),
        StageSpec(
            "train",
            "head_training:train",
            params=("base", "model", "train", "runtime", "tracking"),
            code=(*_CORE, *_MODEL, *_TRACKING, *_LINEAGE, "stages/phases.py", "stages/head_training.py"),
            inputs=("prepared", "reports/training_rows.json"),
            # not run.json: later stages add to it, which must not invalidate this stage
            outputs=("models/head.keras", "models/head.keras.lineage.json"),
            timeout_s=86_400,
            cmd="ferflow train",
            dvc_outs=(
                DvcOut("models/head.keras"),
                DvcOut(
                    "models/head.keras.lineage.json",
                    notes=(
                        "who made head.keras (run, params, data): restored with it, so `finetune` accepts it",
                    ),
                ),
            ),
        ),
        StageSpec(
            "finetune",
            "fine_tuning:finetune",
            params=("base", "model", "train", "finetune", "runtime", "tracking"),
            code=(
                *_CORE,
                *_MODEL,
                *_TRACKING,
                "tracking/models.py",
                *_LINEAGE,
                "stages/phases.py",
                "stages/fine_tuning.py",
            ),
            inputs=("prepared", "reports/training_rows.json", "models/head.keras"),
            outputs=("models/model.keras", "models/model.keras.lineage.json", "models/history.json"),
            timeout_s=86_400,
            cmd="ferflow finetune",
            dvc_outs=(
                DvcOut("models/model.keras"),
                DvcOut("models/model.keras.lineage.json"),
                DvcOut(
                    "models/history.json",
                    cache=False,
                    persist=True,
                    notes=("written first by train, completed here: persist, so DVC does not delete them",),
                ),
                DvcOut("models/run.json", cache=False, persist=True),
            ),
        ),
        StageSpec(
            "evaluate",
            "evaluation:evaluate",
            params=("base.classes", "base.class_labels", "evaluate", "tracking"),
            code=_EVALUATE,
            inputs=("prepared", "models/model.keras", "models/history.json"),
            outputs=("reports/metrics.json", "reports/scores.json"),
            cmd="ferflow evaluate",
            dvc_outs=tuple(
                DvcOut(f"reports/{name}", cache=False)
                for name in ("metrics.json", "evaluation.json", "confusion_matrix.json", "plots")
            ),
            dvc_metrics=(DvcOut("reports/scores.json", cache=False),),
        ),
        StageSpec(
            "register",
            "registration:register",
            # the champion's evaluation and the smoke test predict like evaluate; the model
            # card names the model
            params=(
                "base.classes",
                "base.class_labels",
                "base.image_size",
                "evaluate.batch_size",
                "evaluate.tta_flip",
                "model.backbone",
                "model.head_units",
                "model.weights",
                "register",
                "tracking",
            ),
            # the champion's evaluation and the smoke test load and predict as evaluate does
            code=(
                *_EVALUATE,
                "evaluation/gate.py",
                "evaluation/model_card.py",
                "evaluation/vocabulary.py",
                "tracking/registry.py",
                "tracking/lock.py",
                "stages/registration.py",
            ),
            inputs=("models/model.keras", "models/run.json", "reports/metrics.json"),
            outputs=("reports/promotion.json",),
            timeout_s=600,
            network=True,
            cached=False,  # registration moves aliases, a side effect no cache may replay
            cmd="ferflow register",
            dvc_outs=(DvcOut("reports/promotion.json", cache=False),),
        ),
    )
}
# `ferflow run --stage NAME`, in pipeline order.
STAGE_NAMES = tuple(STAGES)


def task_timeouts(params: Params) -> dict[str, float]:
    """Seconds each stage's task may run: `flow.timeouts.<stage>`, else the table's default.
    A key naming no stage is an error (a typo would otherwise keep the default silently)."""
    chosen = dict(params.flow.timeouts)
    unknown = sorted(set(chosen) - set(STAGES))
    if unknown:
        raise ParamsError(
            f"flow.timeouts.{unknown[0]}: there is no stage {unknown[0]!r}; the stages are "
            f"{', '.join(STAGES)}"
        )
    return {name: chosen.get(name, spec.timeout_s) for name, spec in STAGES.items()}


def stage_params(params: Params, keys: Iterable[str]) -> dict[str, Any]:
    """The flattened params under `keys` (a key or a whole section), as MLflow logs them."""
    keys = tuple(keys)
    return {name: value for name, value in params.flat().items() if selects(name, keys)}


def selects(name: str, keys: Iterable[str]) -> bool:
    """True when the flat param `name` is one of `keys` or inside one of their sections."""
    return any(name == key or name.startswith(f"{key}.") for key in keys)


def params_digest(params: Params, keys: Iterable[str]) -> str:
    """Digest of the flattened params under `keys`: the Prefect cache key's params part, and
    the params identity of a phase's outputs (ferflow.stages.lineage)."""
    return values_digest(stage_params(params, keys))


def values_digest(values: dict[str, Any]) -> str:
    """sha256 of flattened params as JSON with sorted keys (`params_digest` of a selection)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()
