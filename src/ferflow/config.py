"""Typed, frozen, strict models of params.yaml.

Every hyperparameter lives in params.yaml, one top-level key per stage plus `base`.
It is loaded once into these models: an unknown or misspelled key, a wrong type or an
out-of-range value is a `ParamsError` that names the key. Command-line overrides
(`--set train.epochs=2`) are applied to the raw mapping first, so they go through exactly
the same validation.

Long on purpose: one model class per params.yaml section, each field with its bounds and
its description: the schema of params.yaml in one place, read top to bottom.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveFloat,
    ValidationError,
    model_validator,
)

from ferflow.errors import FerflowError

DEFAULT_PARAMS_PATH = Path("params.yaml")

FER_CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
FER_LABELS = ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sadness", "Surprise")


# params.yaml is ~10 KB; a file a hundred times larger is not a params file.
MAX_PARAMS_BYTES = 1024 * 1024


class ParamsError(FerflowError, ValueError):
    """params.yaml or an override is invalid; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Base(_Strict):
    seed: int = Field(12, ge=0)
    classes: tuple[str, ...] = FER_CLASSES
    class_labels: tuple[str, ...] = FER_LABELS
    image_size: int = Field(48, ge=8, le=1024, description="side of the canonical square image")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _labels_match_classes(self) -> Base:
        if len(self.classes) != len(self.class_labels):
            raise ValueError(
                f"base.class_labels has {len(self.class_labels)} entries but base.classes has "
                f"{len(self.classes)}; give one display label per class folder"
            )
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"base.classes has duplicates: {list(self.classes)}")
        return self


class Remote(_Strict):
    """The DVC S3 remote. Credentials never live here: only in the environment or .dvc/config.local."""

    name: str = "storage"
    bucket: str = "ferflow-data"
    prefix: str = "dvc"
    endpoint_url: str | None = None
    url: str | None = Field(
        None,
        description="instead of S3: a folder (relative to the DVC project) or any DVC remote URL; "
        "the demo keeps its data in a local one",
    )


class Data(_Strict):
    raw: str = Field("data/raw/fer2013", description="the DVC-tracked raw dataset ingest reads")
    prepared: str = "data/prepared"
    remote: Remote = Remote()


class Ingest(_Strict):
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    non_canonical: Literal["convert", "reject"] = "convert"
    on_bad_file: Literal["error", "quarantine"] = "error"
    csv_private_test: Literal["skip", "test"] = "skip"
    group_duplicates: bool = Field(True, description="identical images go to the same side of train/val")
    max_image_pixels: int = Field(4_194_304, ge=64, description="decompression-bomb bound")
    max_file_bytes: int = Field(20_000_000, ge=1)
    max_zip_bytes: int = Field(2_000_000_000, ge=1, description="bound on total uncompressed size")


class Synth(_Strict):
    per_class: int = Field(60, ge=1)
    test_per_class: int = Field(15, ge=1)


class Validate(_Strict):
    """Thresholds and severities of the data contract (see ferflow.contract.validation)."""

    min_class_count: dict[str, int] = Field(
        {"train": 10, "val": 2, "test": 2}, description="fewest images of a class, per split"
    )
    min_rows: dict[str, int] = {"train": 50, "val": 10, "test": 10}
    max_rows: dict[str, int] = {"train": 1_000_000, "val": 1_000_000, "test": 1_000_000}
    blank_std_threshold: float = Field(2.0, ge=0.0)
    max_blank_share: float = Field(0.01, ge=0.0, le=1.0)
    max_drift: float = Field(0.05, ge=0.0, le=1.0, description="max absolute change of a class share")
    near_duplicate_distance: int = Field(4, ge=0, le=64)
    max_examples: int = Field(10, ge=1)
    severity: dict[str, Literal["error", "warning", "off"]] = {}
    drop_blank_from_train: bool = False
    leakage: Literal["warn", "error", "drop"] = Field(
        "warn",
        description="val/test images that copy a train image: warn (the published FER2013 "
        "protocol), error (the contract fails), drop (training leaves those train images out)",
    )

    @model_validator(mode="before")
    @classmethod
    def _yaml_off_is_a_severity(cls, raw: Any) -> Any:
        # YAML 1.1 reads an unquoted `off` as False; in validate.severity it can only mean "off".
        if isinstance(raw, dict) and isinstance(raw.get("severity"), dict):
            severity = {k: "off" if v is False else v for k, v in raw["severity"].items()}
            raw = {**raw, "severity": severity}
        return raw


# The entries of ferflow.training.backbones.BACKBONES (a test keeps them equal): config must not import
# the model code, or every stage would depend on it. A typo's error lists these names.
BackboneName = Literal["densenet121", "densenet169", "densenet201", "densenet-bc-cpu", "densenet-bc-gpu"]


class Model(_Strict):
    backbone: BackboneName = "densenet169"
    input_size: int = Field(48, ge=32, le=512, description="images are upscaled to this inside the model")
    weights: str = Field("imagenet", description="'imagenet', 'none' or a path to a weights file")
    head_units: tuple[int, ...] = (256, 1024, 512)
    dropout: tuple[float, ...] = (0.3, 0.5, 0.5)
    l2: float = Field(0.0, ge=0.0)

    @model_validator(mode="after")
    def _one_dropout_per_dense(self) -> Model:
        if len(self.dropout) != len(self.head_units):
            raise ValueError(
                f"model.dropout has {len(self.dropout)} rates but model.head_units has "
                f"{len(self.head_units)} layers; give one rate per dense layer"
            )
        if any(not 0.0 <= rate < 1.0 for rate in self.dropout):
            raise ValueError(f"model.dropout rates must be in [0, 1): {list(self.dropout)}")
        return self


class Augment(_Strict):
    """Training-only augmentation, applied inside the compiled train step (ferflow.training.augment)."""

    horizontal_flip: bool = False
    shift: float = Field(0.0, ge=0.0, le=0.5, description="fraction of the image side")
    rotation: float = Field(0.0, ge=0.0, le=0.5, description="fraction of a full turn")
    zoom: float = Field(0.0, ge=0.0, le=0.5, description="fraction of the image side, in or out")
    contrast: float = Field(0.0, ge=0.0, le=1.0, description="contrast factor range 1 +- this")
    brightness: float = Field(0.0, ge=0.0, le=1.0, description="fraction of 255 added or removed")
    erasing: float = Field(0.0, ge=0.0, le=1.0, description="probability of one grey box per image")
    erasing_size: float = Field(0.4, gt=0.0, le=1.0, description="largest box side, fraction of the image")


class Train(_Strict):
    """Phase 1: the frozen backbone and a trainable head."""

    batch_size: int = Field(64, ge=1)
    epochs: int = Field(30, ge=0, description="0 skips phase 1 (from-scratch profile)")
    learning_rate: float = Field(1e-4, gt=0.0)
    early_stopping_patience: int = Field(3, ge=0)
    restore_best_weights: bool = True
    cache_features: bool = True


class Runtime(_Strict):
    """How every phase runs, whatever it trains: determinism, precision, XLA, devices."""

    deterministic: bool = Field(
        False, description="op determinism: repeatable, but ~30% slower on the CPU (docs/training.md)"
    )
    mixed_precision: bool = False
    jit_compile: bool | Literal["auto"] = Field(
        "auto",
        description="XLA-compile the train step; auto: on JAX only (where false means op-by-op "
        "eager execution), not on TensorFlow's CPU where XLA was slower",
    )
    compilation_cache: str | None = Field(
        None,
        description="JAX: folder of the persistent XLA compilation cache "
        "(FERFLOW_COMPILATION_CACHE overrides); a rerun skips compiling the train step",
    )
    xla_flags: str = Field(
        "",
        description="JAX: XLA_FLAGS for this run, set before the backend starts (flags already in "
        "the XLA_FLAGS environment variable come after them, so they win)",
    )
    data_parallel: Literal["auto", "all", "off"] = Field(
        "auto",
        description="JAX/TensorFlow: train data-parallel; auto: over all GPUs when there are several, "
        "all: over every local device (GPUs, or CPU devices), off: one device",
    )


class Finetune(_Strict):
    """Phase 2: the whole network, BatchNorm kept in inference mode (the study's way).

    The learning rate follows `schedule` per optimizer step (ferflow.training.schedules).

    `train_batchnorm` lets BatchNorm learn too: what a backbone that was never trained
    (`model.weights: none`) needs, with a faster `batchnorm_momentum` on small data.
    """

    epochs: int | Literal["auto"] = Field(
        20, description="auto: as many as `time_budget_s` holds, planned from the steady epochs"
    )
    steps_per_execution: int = Field(
        1, ge=1, description="train steps per compiled call (callbacks see every n-th batch)"
    )
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    learning_rate: float = Field(1e-3, gt=0.0, description="the peak rate of the schedule")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="SGD only")
    nesterov: bool = Field(False, description="SGD only: Nesterov momentum")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW and SGD (decoupled weight decay)")
    schedule: Literal["constant", "cosine", "onecycle"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0.0)
    final_lr_fraction: float = Field(0.0, ge=0.0, le=1.0, description="cosine: last rate / peak")
    time_budget_s: float | None = Field(
        None, gt=0.0, description="stop before an epoch that would end past this many seconds"
    )
    backup_every_s: float | None = Field(
        120.0,
        gt=0.0,
        description="also back up inside an epoch, this many seconds after the last backup, so a "
        "stopped run resumes within its epoch; null: at epoch ends only",
    )
    train_batchnorm: bool = False
    batchnorm_momentum: float = Field(0.99, gt=0.0, lt=1.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    ema_momentum: float | None = Field(
        None, gt=0.0, lt=1.0, description="average of the weights, saved instead of the last ones"
    )
    class_weights: bool | Literal["sqrt"] = Field(
        False, description="true: n / (k * count) per class; sqrt: its square root (milder)"
    )
    augment: Augment = Augment()

    @model_validator(mode="after")
    def _auto_epochs_need_a_budget(self) -> Finetune:
        if isinstance(self.epochs, int) and self.epochs < 0:
            raise ValueError(f"epochs must be 0 or more, or auto (got {self.epochs})")
        if self.epochs == "auto" and self.time_budget_s is None:
            raise ValueError("epochs: auto plans the epochs from the time budget: set time_budget_s too")
        if self.optimizer == "adam" and self.weight_decay:
            raise ValueError("weight_decay needs optimizer adamw or sgd (adam takes none): set one of them")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer: sgd with momentum > 0 (e.g. momentum: 0.9)")
        if self.epochs == "auto" and self.schedule == "onecycle" and self.warmup_epochs == 0:
            raise ValueError(
                "epochs: auto with schedule: onecycle needs warmup_epochs > 0 (its default rise is "
                "30% of a run whose length is not known yet)"
            )
        return self


class Evaluate(_Strict):
    tta_flip: bool = False
    batch_size: int = Field(256, ge=1)


class Register(_Strict):
    model_name: str = "fer-densenet169"
    min_accuracy: float = Field(0.0, ge=0.0, le=1.0)
    min_accuracy_over_majority: float | None = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="accuracy must exceed the test set's majority-class share by this (null: off)",
    )
    min_macro_f1: float = Field(0.2, ge=0.0, le=1.0, description="a one-class or chance model scores < 0.15")
    min_class_recall: float | None = Field(None, ge=0.0, le=1.0)
    refuse_one_class: bool = Field(
        True, description="the smoke test refuses a model answering one class for every class shown"
    )
    metric: Literal["accuracy", "macro_f1", "weighted_f1"] = "macro_f1"
    margin: float = Field(0.0, ge=0.0, le=1.0)
    lock_timeout_s: float = Field(
        600.0, gt=0.0, description="wait at most this long for the promotion lock, then fail"
    )


class Tracking(_Strict):
    experiment: str = "ferflow"
    tracking_uri: str = Field(
        "sqlite:///mlflow/mlflow.db",
        description="overridden by the MLFLOW_TRACKING_URI environment variable",
    )
    connect_timeout_s: float = Field(
        5.0, gt=0, description="a tracking server that does not answer /health within this fails the command"
    )
    http_retries: int = Field(
        3, ge=0, description="MLflow's retries of a failed request (MLFLOW_HTTP_REQUEST_MAX_RETRIES)"
    )
    http_timeout_s: int = Field(
        30, gt=0, description="seconds per MLflow request (MLFLOW_HTTP_REQUEST_TIMEOUT)"
    )
    http_backoff_factor: int = Field(
        1, ge=0, description="retry n waits about factor * 2**n s (MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR)"
    )
    stale_run_after_s: float = Field(
        3600.0,
        gt=0,
        description="`ferflow runs sweep`: another host's RUNNING run with no heartbeat this long failed",
    )


def _stage_timeouts(value: Any) -> Any:
    """`flow.timeouts` keys as stage names: `pull_data` is read as `pull-data`."""
    if isinstance(value, Mapping):
        return {str(key).replace("_", "-"): seconds for key, seconds in value.items()}
    return value


# Seconds each Prefect task may run, by stage name; a stage left out keeps the default its
# StageSpec declares (ferflow.stages.spec.task_timeouts, which also refuses unknown names).
TaskTimeouts = Annotated[dict[str, PositiveFloat], BeforeValidator(_stage_timeouts)]


class FlowSettings(_Strict):
    """Prefect orchestration: retries, timeouts, caching and the scheduled deployment."""

    work_pool: str = Field("ferflow-cpu", description="process work pool of prefect.yaml")
    gpu_work_pool: str = Field("ferflow-gpu", description="docker/kubernetes pool of GPU workers")
    deployment: str = "weekly-retrain"
    schedule_cron: str = Field("0 3 * * 1", description="weekly, Monday 03:00")
    timezone: str = "UTC"
    concurrency_limit: int = Field(1, ge=1, description="retrainings that may run at once")
    pull_data: bool = Field(False, description="dvc pull the latest data version first")
    push_data: bool = Field(False, description="dvc push the data version after the run")
    network_retries: int = Field(3, ge=0, description="only tasks that touch the network retry")
    retry_delay_seconds: float = Field(10.0, ge=0.0, description="first delay; doubles per retry")
    cache: bool = Field(True, description="skip unchanged stages (same data, params and code)")
    timeouts: TaskTimeouts = Field(
        default_factory=dict, description="seconds per task by stage name; unset: the stage's default"
    )


class Params(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, populate_by_name=True)

    base: Base = Base()
    data: Data = Data()
    ingest: Ingest = Ingest()
    synth: Synth = Synth()
    # `validate` and `register` would shadow BaseModel attributes: aliased.
    validation: Validate = Field(Validate(), alias="validate")
    model: Model = Model()
    train: Train = Train()
    finetune: Finetune = Finetune()
    runtime: Runtime = Runtime()
    evaluate: Evaluate = Evaluate()
    registry: Register = Field(Register(), alias="register")
    tracking: Tracking = Tracking()
    flow: FlowSettings = FlowSettings()

    def digest(self) -> str:
        """A short stable digest of the resolved params (for run names and tags)."""
        blob = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def flat(self) -> dict[str, Any]:
        """Flattened `section.key` -> value, the stable keys logged to MLflow."""
        return dict(_flatten(self.model_dump(mode="json", by_alias=True)))

    def section_digest(self, *sections: str) -> str:
        dumped = self.model_dump(mode="json", by_alias=True)
        blob = json.dumps({s: dumped[s] for s in sections}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
    """`section.key` -> value of a params mapping (lists joined by commas), as `Params.flat`."""
    return dict(_flatten(tree))


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{name}.")
        elif isinstance(value, list | tuple):
            yield name, ",".join(str(v) for v in value)
        else:
            yield name, value


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides (values parsed as YAML) to a raw params mapping."""
    result = json.loads(json.dumps(raw))  # deep copy of plain data
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"override {item!r} is not of the form section.key=value")
        try:
            value = read_yaml(text) if text.strip() else ""
        except yaml.YAMLError as err:
            raise ParamsError(f"override {key}: cannot parse value {text!r}: {err}") from err
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ParamsError(f"override {key}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return result


class _Loader(yaml.SafeLoader):
    """PyYAML reads `1e-4` as a string (YAML 1.1); accept it as the float people mean."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)$"),
    list("-+0123456789."),
)


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for problem in err.errors():
        key = ".".join(str(p) for p in problem["loc"]) or "(top level)"
        moved = problem["loc"][:1] == ("train",) and problem["loc"][-1] in Runtime.model_fields
        if problem["type"] == "extra_forbidden" and moved:
            message = (
                f"moved to runtime.{problem['loc'][-1]}: one `runtime:` section for every phase; "
                "move the line under `runtime:`"
            )
        elif problem["type"] == "extra_forbidden":
            message = "unknown key (misspelled? see params.yaml for the valid keys)"
        else:
            message = problem["msg"]
        value = problem.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {key}: {message}{shown}")
    return f"invalid params in {source}:\n" + "\n".join(lines)


def parse_params(raw: Mapping[str, Any] | None, source: str = "params") -> Params:
    """Validate a raw mapping into `Params`, raising `ParamsError` naming each bad key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        blob = json.dumps(dict(raw))
    except TypeError as err:
        raise ParamsError(f"{source}: values must be plain YAML data: {err}") from None
    try:
        # JSON mode in strict: no silent "2" -> 2 coercion; lists become tuples.
        return Params.model_validate_json(blob, strict=True)
    except ValidationError as err:
        raise ParamsError(_format_errors(err, source)) from None


EXTENDS_KEY = "extends"


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """`top` over `base`, section by section (a mapping merges; any other value replaces)."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_params_file(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a params file, with `extends: other.yaml` resolved.

    A profile (e.g. profiles/from-scratch.yaml) names the file it builds on, relative to
    itself, and lists only what it changes; sections merge key by key.
    """
    if not path.exists():
        raise ParamsError(f"params file {path} not found; run from the repository root or pass --params")
    if path.resolve() in _seen:
        raise ParamsError(f"{path}: `extends` makes a cycle ({' -> '.join(str(p) for p in _seen)})")
    try:
        raw = read_yaml(_params_text(path))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ParamsError(f"{path}: not valid YAML text: {err}") from err
    if raw is None:  # empty, or only comments: not "all defaults" by accident
        raise ParamsError(
            f"{path} is empty; pass a params file with sections (params.yaml, or a profile that "
            "`extends: params.yaml`)"
        )
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections")
    parent = raw.pop(EXTENDS_KEY, None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ParamsError(f"{path}: `extends` must be the path of another params file, got {parent!r}")
    base = read_params_file(path.parent / parent, (*_seen, path.resolve()))
    return _merge(base, raw)


def _params_text(path: Path) -> str:
    """The text of a params file: a regular file of at most MAX_PARAMS_BYTES (a device or a
    FIFO would be read until memory runs out, or block forever)."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise ParamsError(f"{path} is not a regular file (a device, FIFO or folder); pass a params file")
    if info.st_size > MAX_PARAMS_BYTES:
        raise ParamsError(
            f"{path} is {info.st_size:,} bytes, over the {MAX_PARAMS_BYTES:,} a params file may hold; "
            "is it the right file?"
        )
    with path.open("rb") as handle:  # read no more than the limit, should it grow meanwhile
        return handle.read(MAX_PARAMS_BYTES + 1)[:MAX_PARAMS_BYTES].decode("utf-8")


def load_params(path: str | Path = DEFAULT_PARAMS_PATH, overrides: Iterable[str] = ()) -> Params:
    """Load params.yaml (or a profile that extends it), apply `--set` overrides, validate strictly."""
    path = Path(path)
    raw = read_params_file(path)
    overrides = list(overrides)
    raw = apply_overrides(raw, overrides)
    source = f"{path}" + (f" with overrides {overrides}" if overrides else "")
    return parse_params(raw, source)


def set_in_file(path: str | Path, section: str, key: str, value: str) -> bool:
    """Set `section.key` (a top-level section's plain scalar) to `value` in a params file,
    editing that one line so comments and layout stay; returns whether it changed.

    For the few values a command must write back (`ferflow data add` records where the raw
    data went); the result is validated like any params file."""
    path = Path(path)
    lines = path.read_text().splitlines(keepends=True)
    in_section = False
    for i, line in enumerate(lines):
        if not line.startswith((" ", "\t", "#")) and line.strip():
            in_section = line.split(":", 1)[0].strip() == section
            continue
        match = re.match(rf"^(\s+{re.escape(key)}:\s*)([^#\n]*?)(\s*(#.*)?)$", line.rstrip("\n"))
        if in_section and match:
            if match.group(2).strip() == value:
                return False
            lines[i] = f"{match.group(1)}{value}{match.group(3)}\n"
            path.write_text("".join(lines))
            parse_params(read_params_file(path), str(path))  # still a valid params file
            return True
    raise ParamsError(f"{path}: no `{section}.{key}` line to set; add it to the file")
