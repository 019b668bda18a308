"""One function per pipeline stage: (params, paths) -> files.

This is the single code path of the pipeline. The Prefect tasks (`tasks/`) and the DVC
stages (`dvc.yaml`, through the `ferflow` CLI) both end up in the functions the stages
below call, so a model trained by the scheduled flow and one trained by `dvc repro` come
from the same code with the same params.

Each stage also declares what it reads (`STAGES`): the params keys, the input paths and
the source files. The Prefect cache keys on exactly these (tasks/caching.py), and a test
checks that dvc.yaml lists the same things, so both orchestrators agree on when a stage
is stale.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ferflow.config import Params
from ferflow.errors import FerflowError

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
PROMOTION_FILE = "promotion.json"
RUN_FILE = "run.json"


class DataContractError(FerflowError):
    """The prepared dataset broke the data contract; training must not start."""


@dataclass(frozen=True)
class Paths:
    """Where the stages read and write; relative paths resolve against `root`."""

    raw: Path
    prepared: Path
    models: Path = Path("models")
    reports: Path = Path("reports")
    root: Path = Path(".")

    @classmethod
    def from_params(cls, params: Params, root: str | Path = ".") -> Paths:
        """The default layout of params.yaml (data.raw, data.prepared, models/, reports/)."""
        root = Path(root)
        return cls(
            raw=root / params.data.raw,
            prepared=root / params.data.prepared,
            models=root / "models",
            reports=root / "reports",
            root=root,
        )

    def with_raw(self, raw: str | Path) -> Paths:
        return replace(self, raw=Path(raw))


@dataclass(frozen=True)
class StageSpec:
    """What one stage reads and writes: the cache key and dvc.yaml are built from this."""

    name: str
    params: tuple[str, ...]  # params keys or whole sections it reads
    code: tuple[str, ...]  # source files (or packages) under src/ferflow it runs
    inputs: tuple[str, ...]  # Paths attributes it reads (raw, prepared, models)
    outputs: tuple[str, ...]  # files it writes, as "<Paths attribute>/<name>"


_DATA_CODE = ("data/dataset.py", "data/images.py", "config.py")
_MODEL_CODE = ("model.py", "train.py", "tracking.py", "data/dataset.py", "config.py")

STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec(
            "ingest",
            params=("base.seed", "base.classes", "base.image_size", "ingest"),
            code=("data/ingest.py", "data/safezip.py", *_DATA_CODE),
            inputs=("raw",),
            outputs=("prepared/images.npy", "prepared/manifest.csv", "prepared/dataset.json"),
        ),
        StageSpec(
            "validate",
            params=("base.classes", "base.image_size", "validate"),
            code=("validation.py", "contract", *_DATA_CODE),
            inputs=("prepared",),
            outputs=("reports/validation.json",),
        ),
        StageSpec(
            "train",
            params=("base", "model", "train", "tracking"),
            code=_MODEL_CODE,
            inputs=("prepared",),
            # not run.json: later stages add to it, which must not invalidate this stage
            outputs=("models/head.keras",),
        ),
        StageSpec(
            "finetune",
            params=("base", "model", "train", "finetune", "tracking"),
            code=_MODEL_CODE,
            inputs=("prepared", "models/head.keras"),
            outputs=("models/model.keras", "models/history.json"),
        ),
        StageSpec(
            "evaluate",
            params=("base.classes", "base.class_labels", "evaluate", "tracking"),
            code=("evaluate.py", "registry.py", "data/dataset.py", "config.py"),
            inputs=("prepared", "models/model.keras", "models/history.json"),
            outputs=("reports/metrics.json",),
        ),
        StageSpec(
            "register",
            params=("register", "tracking"),
            code=("registry.py", "stages.py"),
            inputs=("models/model.keras", "models/run.json", "reports/metrics.json"),
            outputs=("reports/promotion.json",),
        ),
    )
}


# --- the stages ---------------------------------------------------------------------------


def synthesize(params: Params, out: Path) -> Path:
    """Synthetic faces in the download layout (train/<class>/*.png, test/<class>/*.png)."""
    from ferflow.data.synth import write_synthetic_dataset

    write_synthetic_dataset(
        Path(out),
        classes=params.base.classes,
        per_class=params.synth.per_class,
        test_per_class=params.synth.test_per_class,
        seed=params.base.seed,
        size=params.base.image_size,
    )
    return Path(out)


def pull_data(params: Params, paths: Paths) -> str:
    """Fetch the raw data version git points at from the DVC remote; returns its version."""
    from ferflow.data import versioning

    versioning.pull(params, paths.root, targets=_raw_pointer(paths))
    return data_version(paths)


def push_data(params: Params, paths: Paths) -> str:
    """Upload the raw data version to the DVC remote; returns its version."""
    from ferflow.data import versioning

    versioning.push(params, paths.root, targets=_raw_pointer(paths))
    return data_version(paths)


def _raw_pointer(paths: Paths) -> list[str]:
    """The raw data's .dvc file (folder, .zip or .csv), or [] for everything DVC tracks."""
    for suffix in ("", ".zip", ".csv"):
        pointer = paths.raw.with_name(f"{paths.raw.name}{suffix}.dvc")
        if pointer.exists():
            return [str(pointer)]
    return []


def data_version(paths: Paths) -> str:
    """The DVC md5 of the raw data, or '' when it is not DVC-tracked."""
    from ferflow.data import versioning

    return versioning.data_version(paths.raw) or ""


def ingest(params: Params, paths: Paths) -> Path:
    """Raw download (folder, zip or fer2013.csv) -> the canonical prepared dataset."""
    from ferflow.data.ingest import ingest as ingest_source

    ingest_source(paths.raw, paths.prepared, params)
    return paths.prepared


def validate(params: Params, paths: Paths) -> Any:
    """Check the data contract; returns the ValidationReport (it never raises on failure)."""
    from ferflow.validation import validate_dataset

    return validate_dataset(paths.prepared, params, paths.reports)


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


def train(params: Params, paths: Paths) -> Path:
    """Phase 1 (frozen backbone, dense head): writes models/head.keras and run.json."""
    from ferflow.train import train_stage

    train_stage(params, paths.prepared, paths.models)
    return paths.models / "head.keras"


def finetune(params: Params, paths: Paths) -> Path:
    """Phase 2 (whole network): writes models/model.keras and history.json."""
    from ferflow.train import finetune_stage

    finetune_stage(params, paths.prepared, paths.models)
    return paths.models / "model.keras"


def evaluate(params: Params, paths: Paths) -> dict[str, Any]:
    """Test-split metrics and plots; writes reports/metrics.json and reports/plots/."""
    from ferflow.evaluate import evaluate_stage

    return evaluate_stage(params, paths.prepared, paths.models, paths.reports)


def register(params: Params, paths: Paths) -> dict[str, Any]:
    """Register the model and run the promotion gate, once per trained model.

    Registration moves aliases, a side effect no cache may replay: when
    reports/promotion.json already holds the decision for the MLflow run in
    models/run.json, that decision is returned and nothing is registered again.
    """
    from ferflow.registry import register_stage

    previous = decided_promotion(paths)
    if previous is not None:
        log.info(
            "run %s was already decided (%s, version %s): not registering it again",
            previous.get("run_id"),
            previous.get("decision"),
            previous.get("version"),
        )
        return previous
    return register_stage(params, paths.models, paths.reports, paths.prepared)


def decided_promotion(paths: Paths) -> dict[str, Any] | None:
    """The promotion decision already taken for the current model's MLflow run, if any."""
    run_file, promotion_file = paths.models / RUN_FILE, paths.reports / PROMOTION_FILE
    if not (run_file.exists() and promotion_file.exists()):
        return None
    run_id = read_json(run_file).get("run_id")
    decision = read_json(promotion_file)
    return decision if run_id and decision.get("run_id") == run_id else None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or a FerflowError naming the file."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise FerflowError(f"cannot read {path}: {err}; rerun the stage that writes it") from err
    if not isinstance(value, dict):
        raise FerflowError(f"{path} does not hold a JSON object; rerun the stage that writes it")
    return value


def run_stage(name: str, params: Params, paths: Paths) -> Any:
    """One stage by its CLI name (`ferflow run --stage NAME`); validate raises on failure."""
    if name == "validate":
        report = validate(params, paths)
        require_valid(report)
        return report.to_dict()
    runners = {
        "pull-data": pull_data,
        "ingest": ingest,
        "train": train,
        "finetune": finetune,
        "evaluate": evaluate,
        "register": register,
        "push-data": push_data,
    }
    if name not in runners:
        raise FerflowError(f"unknown stage {name!r}; choose one of {sorted([*runners, 'validate'])}")
    return runners[name](params, paths)
