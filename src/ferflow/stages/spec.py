"""What each stage reads and writes: the Prefect cache key (tasks/caching.py) and
dvc.yaml's deps, params and outs come from `STAGES`, so both orchestrators agree on when a
stage is stale.

`code` lists every module of src/ferflow the stage imports, directly or not (a test
derives that set from the import graph, so it cannot drift); `params` every params key or
section it reads (a test records the reads of a real run of each stage).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # src/ferflow


@dataclass(frozen=True)
class StageSpec:
    """What one stage reads and writes."""

    name: str
    params: tuple[str, ...]  # params keys or whole sections it reads
    code: tuple[str, ...]  # source files (or packages) under src/ferflow it runs
    inputs: tuple[str, ...]  # Layout attributes it reads (raw, prepared, models/<file>)
    outputs: tuple[str, ...]  # files it writes, as "<Layout attribute>/<name>"


# `ferflow run --stage NAME`, in pipeline order.
STAGE_NAMES = ("pull-data", "ingest", "validate", "train", "finetune", "evaluate", "register", "push-data")

_CORE = ("config.py", "errors.py", "files.py", "data/dataset.py", "stages/layout.py")
_MODEL = (
    "augment.py",
    "backbones.py",
    "batching.py",
    "budget.py",
    "callbacks.py",
    "model.py",
    "progress.py",
    "runtime.py",
    "schedules.py",
    "train.py",
)
_TRACKING = ("tracking/store.py", "tracking/runs.py", "tracking/epochs.py", "data/versioning.py")
# training reads `validate.drop_blank_from_train` through ferflow.validation.training_mask
_MASK = ("validation.py", "contract")
_MASK_PARAMS = (
    "validate.drop_blank_from_train",
    "validate.blank_std_threshold",
    "validate.leakage",
    "validate.near_duplicate_distance",
)

STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec(
            "ingest",
            params=("base.seed", "base.classes", "base.image_size", "ingest"),
            code=(
                *_CORE,
                "progress.py",
                "stages/data.py",
                "data/ingest.py",
                "data/images.py",
                "data/safezip.py",
            ),
            inputs=("raw",),
            outputs=("prepared/images.npy", "prepared/manifest.csv", "prepared/dataset.json"),
        ),
        StageSpec(
            "validate",
            params=("base.classes", "base.image_size", "validate"),
            code=(*_CORE, "stages/data.py", "validation.py", "contract"),
            inputs=("prepared",),
            outputs=("reports/validation.json",),
        ),
        StageSpec(
            "train",
            params=("base", "model", "train", "tracking", *_MASK_PARAMS),
            code=(*_CORE, *_MODEL, *_MASK, *_TRACKING, "stages/training.py"),
            inputs=("prepared",),
            # not run.json: later stages add to it, which must not invalidate this stage
            outputs=("models/head.keras",),
        ),
        StageSpec(
            "finetune",
            params=("base", "model", "train", "finetune", "tracking", *_MASK_PARAMS),
            code=(
                *_CORE,
                *_MODEL,
                *_MASK,
                *_TRACKING,
                "tracking/models.py",
                "tracking/lock.py",
                "stages/training.py",
            ),
            inputs=("prepared", "models/head.keras"),
            outputs=("models/model.keras", "models/history.json"),
        ),
        StageSpec(
            "evaluate",
            params=("base.classes", "base.class_labels", "evaluate", "tracking"),
            code=(
                *_CORE,
                *_TRACKING,
                "batching.py",
                "budget.py",
                "callbacks.py",
                "evaluate.py",
                "plots.py",
                "progress.py",
                "stages/training.py",  # sweep_stale_runs
                "stages/evaluation.py",
            ),
            inputs=("prepared", "models/model.keras", "models/history.json"),
            outputs=("reports/metrics.json",),
        ),
        StageSpec(
            "register",
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
            code=(
                *_CORE,
                *_TRACKING,
                "batching.py",
                "budget.py",
                "callbacks.py",
                "evaluate.py",
                "plots.py",
                "progress.py",
                "gate.py",
                "model_card.py",
                "tracking/models.py",
                "tracking/lock.py",
                "stages/training.py",  # sweep_stale_runs
                "stages/evaluation.py",
                "stages/promotion.py",
            ),
            inputs=("models/model.keras", "models/run.json", "reports/metrics.json"),
            outputs=("reports/promotion.json",),
        ),
    )
}
