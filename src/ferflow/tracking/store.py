"""Where runs are tracked and what ties a stage to its run: the URI, the client, run.json.

- `tracking_uri(params)`: MLFLOW_TRACKING_URI if set, else `tracking.tracking_uri`; the
  one place this rule lives.
- `client(uri)`: an MlflowClient on that URI for tracking and the registry; a local SQLite
  store gets its folder created and its artifacts under `mlflow/artifacts/` beside it.
- `RunInfo`, `read_run_info`, `write_run_info`: models/run.json, which records the parent
  run so the next stage (a separate process under DVC) logs into the same run. The only
  reader and writer of that file.
- provenance: `git_commit()`, `data_version()`; `model_signature()` of the served model;
  `redact()` / `safe_params()` so that no secret reaches MLflow or the console;
  `logged_params()`, the ~25 params a run shows (every param is in its params.yaml
  artifact, which `run_params()` reads back).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferflow.config import Params, flatten
from ferflow.errors import FerflowError
from ferflow.files import write_json
from ferflow.redaction import MASK, mask_url

log = logging.getLogger(__name__)

# Values under keys like these never reach MLflow; URLs lose their user:password@ part.
_SECRET_KEY = re.compile(r"(secret|password|passwd|token|access_key|api_key|credential)", re.I)
SQLITE_PREFIX = "sqlite:///"
ARTIFACTS_DIR = "artifacts"  # beside a local SQLite store: mlflow/artifacts/
# MLflow 3.17's UI shows an experiment as GenAI (traces) or model training (runs) by a switch
# kept in the browser, not by the experiment's tag (see `experiment_id`); this URL query
# selects model training for the page it opens.
ML_VIEW = "?workflowType=machine_learning"
# Who runs a RUNNING run, and when it last showed life: what `runs.sweep` judges a dead run by.
HOST_TAG, PID_TAG, HEARTBEAT_TAG = "ferflow.host", "ferflow.pid", "ferflow.heartbeat"


class TrackingError(FerflowError, RuntimeError):
    """run.json is unusable or the tracking server refused a request."""


class TrackingUnreachableError(TrackingError):
    """The tracking server does not answer: nothing was run."""


class TrackingUriError(TrackingError):
    """The tracking URI cannot be what its user meant (a host:port without a scheme)."""


# `host:port[/path]` without `http://`: MLflow would take it for a file store's path (or for
# a scheme named after the host) and fail deep inside with a traceback.
_HOST_PORT = re.compile(r"^(?:[A-Za-z0-9-]+\.)*[A-Za-z0-9-]+:\d{1,5}(?:/.*)?$")


# --- configuration ---------------------------------------------------------------------


def tracking_uri(params: Params, *, checked: bool = True) -> str:
    """MLFLOW_TRACKING_URI if set, else tracking.tracking_uri.

    `checked`: refuse a `host:port` without a scheme (TrackingUriError, naming where it was
    set and the URI to use instead); False only where an error is being reported already.
    """
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    uri = from_env or params.tracking.tracking_uri
    if checked and _HOST_PORT.match(uri):
        source = "MLFLOW_TRACKING_URI" if from_env else "tracking.tracking_uri"
        raise TrackingUriError(
            f"{source}={redact(uri)} has no scheme, so MLflow would read it as a file path: "
            f"use http://{redact(uri)} for a tracking server (or sqlite:///mlflow/mlflow.db, a local store)"
        )
    return uri


def redact(value: Any) -> Any:
    """A string with the userinfo of its URLs masked (ferflow.redaction.mask_url); other
    values unchanged."""
    return mask_url(value) if isinstance(value, str) else value


def resolved_params(params: Params) -> dict[str, Any]:
    """The resolved params in params.yaml's sections, secrets removed as in `safe_params`:
    what a run logs whole, as its `params/params.yaml` artifact."""

    def clean(tree: dict[str, Any], prefix: str) -> dict[str, Any]:
        return {
            key: clean(value, f"{prefix}{key}.")
            if isinstance(value, dict)
            else _masked(f"{prefix}{key}", value)
            for key, value in tree.items()
        }

    return clean(params.model_dump(mode="json", by_alias=True), "")


# The params a run logs as MLflow params: what people compare across runs in the MLflow UI's
# runs table and compare view (with `finetune.augment` as one line). Every param, these
# included, is in the run's params/params.yaml artifact (PARAMS_ARTIFACT).
LOGGED_PARAMS = tuple(
    """
    base.seed base.image_size model.backbone model.input_size model.weights model.head_units
    model.dropout train.epochs train.batch_size train.learning_rate runtime.mixed_precision
    finetune.epochs finetune.optimizer finetune.learning_rate finetune.momentum
    finetune.weight_decay finetune.schedule finetune.warmup_epochs finetune.time_budget_s
    finetune.label_smoothing finetune.class_weights finetune.ema_momentum finetune.train_batchnorm
    evaluate.tta_flip register.model_name
    """.split()  # noqa: SIM905 (a table to read, not 25 quoted lines)
)
PARAMS_ARTIFACT = "params/params.yaml"  # the resolved params file of a run, secrets removed
AUGMENT_PARAM = "finetune.augment"


def logged_params(params: Params) -> dict[str, Any]:
    """The params a run logs (LOGGED_PARAMS and the augmentation in one line), secrets removed."""
    safe = safe_params(params)  # read from the dump: logging every param is not reading it

    def augment(name: str) -> Any:
        return safe[f"{AUGMENT_PARAM}.{name}"]

    turned_on = [
        "flip" if augment("horizontal_flip") else "",
        *(
            f"{name}={augment(name)}"
            for name in ("shift", "rotation", "zoom", "contrast", "brightness")
            if augment(name)
        ),
        f"erasing={augment('erasing')}/{augment('erasing_size')}" if augment("erasing") else "",
    ]
    return {key: safe[key] for key in LOGGED_PARAMS} | {
        AUGMENT_PARAM: " ".join(filter(None, turned_on)) or "none"
    }


def run_params(mlflow_client: Any, run: Any) -> dict[str, str]:
    """Every param of `run` as MLflow would show it logged (`section.key` -> str): its
    params.yaml artifact flattened, over the params it logged. A run logged before the
    artifact existed has only its logged params (then every param was logged)."""
    import tempfile

    import yaml
    from mlflow.exceptions import MlflowException

    logged = dict(run.data.params)
    with tempfile.TemporaryDirectory(prefix="ferflow-params-") as tmp:
        try:
            local = mlflow_client.download_artifacts(run.info.run_id, PARAMS_ARTIFACT, tmp)
            resolved = yaml.safe_load(Path(local).read_text())
        except (MlflowException, OSError, yaml.YAMLError) as err:
            log.debug("run %s has no readable %s: %s", run.info.run_id, PARAMS_ARTIFACT, err)
            return logged
    if not isinstance(resolved, dict):
        return logged
    return logged | {key: str(value) for key, value in flatten(resolved).items()}


def safe_params(params: Params) -> dict[str, Any]:
    """`Params.flat()` with secrets removed: the dict that is logged."""
    return {key: _masked(key, value) for key, value in params.flat().items()}


def _masked(key: str, value: Any) -> Any:
    """The one rule of both: a secret-looking key's value goes, URLs lose their userinfo."""
    return MASK if _SECRET_KEY.search(key) and value else redact(value)


def connect(params: Params) -> str:
    """The tracking URI, after configuring MLflow's HTTP retries from params and checking
    that a tracking server answers: call first in every command that talks to MLflow, so a
    server that is down fails it in seconds, before any work, with one line."""
    settings = params.tracking
    # Values the user set in the environment win.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.http_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(settings.http_timeout_s))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", str(settings.http_backoff_factor))
    uri = tracking_uri(params)
    require_reachable(uri, settings.connect_timeout_s)
    return uri


_REACHABLE: set[str] = set()


def require_reachable(uri: str, timeout_s: float) -> None:
    """Raise TrackingUnreachableError unless the server at an http(s) `uri` answers its
    /health endpoint within `timeout_s` (any HTTP answer counts: the server is up). Local
    stores need no check. Checked once per process and URI."""
    if not uri.startswith(("http://", "https://")) or uri in _REACHABLE:
        return
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    health = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    try:
        with urllib.request.urlopen(health, timeout=timeout_s) as answer:
            body = answer.read(512).lstrip().lower()
    except urllib.error.HTTPError:
        body = b""  # it answered (perhaps 401 behind auth): it is up
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingUnreachableError(
            f"the MLflow tracking server at {redact(uri)} does not answer ({reason}; waited up to "
            f"tracking.connect_timeout_s={timeout_s:g} s); nothing was run. Start it, or point "
            "MLFLOW_TRACKING_URI (or tracking.tracking_uri) at one that is up"
        ) from err
    if body.startswith((b"<!doctype", b"<html")):  # MLflow's /health answers "OK"
        raise TrackingError(
            f"the server at {redact(uri)} answers with a web page, not MLflow's health check: "
            "MLFLOW_TRACKING_URI (or tracking.tracking_uri) points at another server, a proxy's "
            "login page or the wrong port; nothing was run. Point it at the MLflow tracking server"
        )
    _REACHABLE.add(uri)


def local_artifact_root(uri: str) -> str | None:
    """`mlflow/artifacts` beside a local SQLite store (as a file URI); None for a server."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    return (Path(uri.removeprefix(SQLITE_PREFIX)).parent / ARTIFACTS_DIR).resolve().as_uri()


def client(uri: str) -> Any:
    """An MlflowClient for tracking and the registry at `uri`, also made the global default."""
    import mlflow

    # MLflow prints "View run ... at: <URI>" on stdout when a run ends, password included:
    # ferflow logs the run with the URI redacted instead (runs.pipeline_run).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # MLflow's "Downloading artifacts" bars are not ferflow's progress (ferflow.progress).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if uri.startswith(SQLITE_PREFIX):
        # The local default store lives under mlflow/; make sure its folder exists.
        Path(uri.removeprefix(SQLITE_PREFIX)).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def run_page_url(ui_url: str, experiment: str, run_id: str) -> str:
    """A run's page in the MLflow UI at `ui_url`, opened in its model-training view."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}{ML_VIEW}"


def experiment_id(mlflow_client: Any, name: str, uri: str) -> str:
    """The id of experiment `name`, created when missing (local stores keep artifacts in
    mlflow/artifacts/, not ./mlruns), tagged `mlflow.experimentKind=custom_model_development`.

    The tag is what MLflow 3.x UIs before the GenAI / Model training switch read to open the
    runs table instead of the GenAI traces page. MLflow 3.17's UI ignores it: the switch in
    its sidebar decides, kept per browser (localStorage `mlflow.workflowType_v1`, default
    GenAI) and overridden by `?workflowType=machine_learning` in the URL
    (docs/comparing-models.md, "In the MLflow UI")."""
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is None:
        ident = mlflow_client.create_experiment(name, artifact_location=local_artifact_root(uri))
    else:
        ident = experiment.experiment_id
    mlflow_client.set_experiment_tag(ident, "mlflow.experimentKind", "custom_model_development")
    return str(ident)


# --- run.json --------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """What run.json holds: where the parent run lives, and its logged model once phase 2 ran."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    model_uri: str | None = None
    # the run's `ferflow.params_digest` and `ferflow.manifest_digest` (ferflow.stages.lineage)
    params_digest: str | None = None
    data_digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "tracking_uri": redact(self.tracking_uri),
            "model_uri": self.model_uri,
            "params_digest": self.params_digest,
            "data_digest": self.data_digest,
        }


def write_run_info(path: Path, info: RunInfo) -> Path:
    return write_json(Path(path), info.to_json())  # a full disk never leaves half a run.json


def read_run_info(path: Path) -> RunInfo | None:
    """The RunInfo in `path` (models/run.json), or None when there is no such file."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        return RunInfo(
            run_id=str(raw["run_id"]),
            experiment_id=str(raw["experiment_id"]),
            tracking_uri=str(raw["tracking_uri"]),
            model_uri=raw.get("model_uri"),
            params_digest=raw.get("params_digest"),
            data_digest=raw.get("data_digest"),
        )
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise TrackingError(
            f"{path} is not a ferflow run file ({err}); delete it and re-run `ferflow train`"
        ) from err


def run_uri(info: RunInfo) -> str:
    """The URI to reach a recorded run: MLFLOW_TRACKING_URI wins over the one it was logged
    to (run.json stores it redacted, and a shared server may have moved)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or info.tracking_uri


# --- provenance ------------------------------------------------------------------------


def git_commit() -> str:
    """HEAD's commit, with `-dirty` when tracked files changed; `unknown` outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not head:
        return "unknown"
    return f"{head}-dirty" if changed else head


def data_version(data_dir: Path, raw: Path | None) -> str:
    """The DVC md5 of the raw data `raw` when it is DVC-tracked, else the manifest digest of
    the prepared dataset in `data_dir`."""
    from ferflow.data.dataset import manifest_digest

    try:
        from ferflow.data.versioning import data_version as dvc_version

        version = dvc_version(Path(raw)) if raw is not None else None
        if version:
            return str(version)
    except Exception as err:  # not tracked, or versioning unavailable: fall back
        log.debug("no DVC version for %s (%s); using the manifest digest", raw, err)
    return manifest_digest(data_dir)


def model_signature(image_size: int, num_classes: int) -> Any:
    """What the served model takes and returns: float32 (n, S, S) grayscale pixels 0..255
    -> (n, num_classes) probabilities."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, image_size, image_size), "pixels")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes), "probabilities")]),
    )


def process_alive(pid: int) -> bool:
    """True when a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def now_stamp() -> str:
    """Wall-clock seconds, as the heartbeat tag holds them."""
    return f"{time.time():.0f}"
