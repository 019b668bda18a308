"""What `ferflow compare` reads from MLflow: a run, or the run behind a model version.

A reference is a run id, `models:/<name>/<version>`, `models:/<name>@<alias>` or a bare
alias of `register.model_name`. Read-only; the comparison itself is ferflow.evaluation.compare.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

from ferflow.evaluation.compare import CONFUSION_ARTIFACT, CompareError, Confusion, Side, parse_confusion
from ferflow.files import PER_CLASS_ARTIFACT
from ferflow.tracking.models import MISSING, RegistryError, registered_models
from ferflow.tracking.store import client, run_params

log = logging.getLogger(__name__)

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
# models:/NAME@ALIAS and models:/NAME/VERSION: what the registry can answer before a model loads
_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def require_registered(model_uri: str, tracker: Any) -> None:
    """Fail in a second, naming what the registry holds, when `model_uri` names a model,
    alias or version it does not have: before MLflow (and TensorFlow) load anything."""
    from mlflow.exceptions import MlflowException

    match = _REGISTRY_URI.match(model_uri)
    if match is None:
        return
    try:
        if match["alias"]:
            tracker.get_model_version_by_alias(match["name"], match["alias"])
        else:
            tracker.get_model_version(match["name"], match["version"])
    except MlflowException as err:
        if err.error_code not in MISSING:
            raise
        said = (str(err.message).strip().splitlines() or ["not in the registry"])[0].rstrip(".")
        listing = registered_models(tracker)
        raise RegistryError(f"{model_uri}: {said}" + (f". {listing}" if listing else "")) from None


def read_sides(a: str, b: str, uri: str, model_name: str) -> tuple[Side, Side]:
    """Both sides of a comparison, from the tracking server and registry at `uri`."""
    tracker = client(uri)
    return read_side(a, tracker, model_name), read_side(b, tracker, model_name)


def read_side_if_any(reference: str, uri: str, model_name: str) -> Side | None:
    """`read_side`, or None when `reference` (say an alias nobody set) names nothing."""
    try:
        return read_side(reference, client(uri), model_name)
    except CompareError:
        return None


def _is_missing(err: Exception) -> bool:
    """True for MLflow's 'does not exist' errors (as opposed to a server that is down)."""
    code = getattr(err, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND") or (
        "not found" in str(err).lower() or "does not exist" in str(err).lower()
    )


def read_side(reference: str, client: Any, model_name: str) -> Side:
    """Resolve a run id, `models:/name/version`, `models:/name@alias` or a bare alias to a Side."""
    from mlflow.exceptions import MlflowException

    reference = reference.strip()
    version = None
    try:
        if _RUN_ID.match(reference):
            run_id = reference
        else:
            version = _model_version(reference, client, model_name)
            if not version.run_id:
                raise CompareError(
                    f"model version {version.name} v{version.version} ({reference!r}) has no source "
                    "run to read params and metrics from; compare the runs by id instead"
                )
            run_id = version.run_id
        run = client.get_run(run_id)
    except MlflowException as err:
        if not _is_missing(err):
            raise CompareError(f"cannot read {reference!r} from MLflow: {err}") from err
        raise CompareError(f"{_missing_message(reference, model_name)}. {registered_models(client)}") from err
    return Side(
        reference=reference,
        run_id=run.info.run_id,
        run_name=run.info.run_name or run.info.run_id,
        experiment_id=run.info.experiment_id,
        model_version=_describe_version(version),
        params=run_params(client, run),
        metrics=dict(run.data.metrics),
        tags=_tags(run, version),
        confusion=_read_confusion(client, run.info.run_id),
        per_class=_read_per_class(client, run.info.run_id),
    )


def _tags(run: Any, version: Any) -> dict[str, str]:
    """The run's `ferflow.*` tags, and the version's `ferflow.manual.*` ones (a rollback or
    a promotion by hand tags the version, not the run)."""
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    manual = (version.tags or {}) if version is not None else {}
    return tags | {k: v for k, v in manual.items() if k.startswith("ferflow.manual.")}


def _model_version(reference: str, client: Any, model_name: str) -> Any:
    """The ModelVersion a `models:/` URI or a bare alias names."""
    if reference.startswith("models:/"):
        target = reference.removeprefix("models:/")
        name, sep, alias = target.partition("@")
        if sep:
            return client.get_model_version_by_alias(name, alias)
        name, sep, number = target.rpartition("/")
        if not sep or not number.isdigit():
            raise CompareError(
                f"{reference!r} is neither models:/<name>/<version> nor models:/<name>@<alias>"
            )
        return client.get_model_version(name, number)
    return client.get_model_version_by_alias(model_name, reference)


def _describe_version(version: Any) -> str | None:
    if version is None:
        return None
    aliases = ", ".join(getattr(version, "aliases", []) or [])
    return f"{version.name} v{version.version}" + (f" ({aliases})" if aliases else "")


def _missing_message(reference: str, model_name: str) -> str:
    if _RUN_ID.match(reference):
        return f"run {reference} not found in the tracking store; check the id and MLFLOW_TRACKING_URI"
    if reference.startswith("models:/"):
        return (
            f"{reference} not found in the model registry; list versions with "
            f"`mlflow models` or the UI's Models page"
        )
    return (
        f"{reference!r} is not a run id and registered model {model_name!r} has no alias "
        f"{reference!r}; pass a run id, models:/{model_name}/<version>, or an alias that "
        "`ferflow register` set (champion, challenger, previous-champion), or choose the model "
        "with --model-name"
    )


def _read_confusion(client: Any, run_id: str) -> Confusion | None:
    """The run's confusion matrix artifact, or None when the run has none (not evaluated)."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="ferflow-compare-") as tmp:
        try:
            local = client.download_artifacts(run_id, CONFUSION_ARTIFACT, tmp)
        except (MlflowException, OSError) as err:
            log.debug("run %s has no %s: %s", run_id, CONFUSION_ARTIFACT, err)
            return None
        return parse_confusion(Path(local))


def _read_per_class(client: Any, run_id: str) -> dict[str, dict[str, float]]:
    """The run's per-class table (`log_table`'s `{"columns": [...], "data": [[...]]}`) as
    class -> {column: value}; {} when the run has none (older runs: per-class metrics)."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="ferflow-compare-") as tmp:
        try:
            local = Path(client.download_artifacts(run_id, PER_CLASS_ARTIFACT, tmp))
        except (MlflowException, OSError) as err:
            log.debug("run %s has no %s: %s", run_id, PER_CLASS_ARTIFACT, err)
            return {}
        try:
            table = json.loads(local.read_text())
            at = table["columns"].index("class")
            return {
                str(row[at]): {
                    str(column): float(value)
                    for column, value in zip(table["columns"], row, strict=True)
                    if column != "class" and value is not None
                }
                for row in table["data"]
            }
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise CompareError(
                f"{PER_CLASS_ARTIFACT} of run {run_id} is not a per-class table ({err}); expected "
                '{"columns": ["class", "precision", ...], "data": [[...]]} as the evaluate stage logs it'
            ) from err
