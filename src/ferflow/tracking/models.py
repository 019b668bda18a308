"""Models in MLflow: logging, loading, registered versions, aliases and the promotion lock.

Every successful pipeline run registers its model as a new version of
`register.model_name`; the gate (ferflow.evaluation.gate) decides whether `champion` moves to it.
The aliases:

- `champion`: what serving loads (`models:/NAME@champion`);
- `challenger`: the latest registered version;
- `previous-champion`: the rollback target.

Aliases move only inside the promotion lock (ferflow.tracking.lock).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ferflow.errors import FerflowError
from ferflow.evaluation import vocabulary as terms
from ferflow.tracking.lock import promotion_lock
from ferflow.tracking.store import client, experiment_id, model_signature, redact

log = logging.getLogger(__name__)

# which alias a version's `ferflow.alias` tag names when it holds several
ALIAS_ORDER = (terms.CHAMPION, terms.PREVIOUS, terms.CHALLENGER)
# The reason of a decision taken by a registration cut short before it wrote one (versions
# registered before reasons were written first): never an empty reason.
UNRECORDED_REASON = "the gate's reason was not recorded: the registration that decided was cut short"
MODEL_ARTIFACT = "model"
MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # on a logged model: its registered versions
AWAIT_READY_S = 300  # as long as mlflow.register_model waits for a new version

PredictFn = Callable[[np.ndarray], np.ndarray]


class RegistryError(FerflowError, RuntimeError):
    """The registry is not in a state this command can work with; the message says why."""


def is_model_uri(model: str) -> bool:
    """True for `models:/...`, `runs:/...` and other URIs; False for a local file path."""
    return model.startswith(("models:/", "runs:/")) or "://" in model


MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # no such model/version; alias


def version_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


# --- logging models ----------------------------------------------------------------------


def log_model(model: Any, image_size: int, num_classes: int, example: np.ndarray) -> str:
    """Log the Keras model once on the active run, with a signature (and an example .npy).

    Loadable with stock `mlflow.pyfunc.load_model(uri).predict(batch)` for a float32
    `(n, S, S)` batch, returning `(n, num_classes)` probabilities. Returns the model URI.
    """
    import mlflow

    # No `input_example=`: MLflow 3.17's Keras flavour writes it before creating the model
    # folder (FileNotFoundError). The example goes next to the model as a .npy instead.
    info = mlflow.keras.log_model(
        model, name=MODEL_ARTIFACT, signature=model_signature(image_size, num_classes)
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "input_example.npy"
        np.save(path, example.astype(np.float32), allow_pickle=False)
        mlflow.log_artifact(str(path), "model_example")
    return str(info.model_uri)


def log_model_file(
    uri: str, model_path: Path, experiment: str, image_size: int, num_classes: int, run_id: str | None
) -> tuple[str, str]:
    """Log a .keras file as an MLflow Keras model; returns (model URI, run id).

    Used when training did not log the model itself (no `model_uri` in run.json): into
    `run_id` when given, else a new run of `experiment`.
    """
    import keras
    import mlflow

    tracker = client(uri)
    model = keras.saving.load_model(model_path, compile=False)
    experiment_ref = None if run_id else experiment_id(tracker, experiment, uri)
    with mlflow.start_run(run_id=run_id, experiment_id=experiment_ref) as active:
        info = mlflow.keras.log_model(
            model, name=MODEL_ARTIFACT, signature=model_signature(image_size, num_classes)
        )
    return str(info.model_uri), active.info.run_id


def fetch_model_file(model_uri: str, destination: Path) -> Path:
    """The .keras file MLflow holds for the logged model `model_uri`, copied to `destination`
    (written aside, then renamed): the local model file is then byte for byte the one its
    registered versions serve."""
    import os
    import shutil

    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder))
        found = sorted(local.rglob("*.keras"))
        if len(found) != 1:
            raise RegistryError(
                f"{model_uri} holds {len(found)} .keras files, not one: see the run's artifacts"
            )
        partial = destination.with_name(f".partial-{destination.name}")
        shutil.copyfile(found[0], partial)
        os.replace(partial, destination)
    return destination


# --- loading models ----------------------------------------------------------------------


def load_predict_fn(model_uri: str, uri: str, batch_size: int) -> PredictFn:
    """A `predict_fn(batch (n,S,S) float32) -> (n,k)` for an MLflow model URI.

    `models:/name@alias`, `models:/name/3`, `runs:/id/model` load the Keras flavour when
    there is one (fast batched predict), else the generic pyfunc flavour.
    """
    import mlflow

    client(uri)
    try:
        keras_model = mlflow.keras.load_model(model_uri)
    except Exception as keras_err:  # not a Keras-flavour model: fall back to pyfunc
        log.debug("no keras flavour for %s (%s); loading pyfunc", model_uri, keras_err)
        try:
            pyfunc = mlflow.pyfunc.load_model(model_uri)
        except Exception as err:
            raise RegistryError(
                f"cannot load model {model_uri!r} from {redact(uri)}: {str(err).splitlines()[0]}. Check "
                "the URI (`models:/NAME@champion`, `models:/NAME/VERSION`, `runs:/RUN_ID/model`), "
                f"--model-name and MLFLOW_TRACKING_URI. {registered_models(client(uri))}"
            ) from err

        def predict(batch: np.ndarray) -> np.ndarray:
            with contextlib.redirect_stdout(io.StringIO()):  # Keras' progress bar
                return np.asarray(pyfunc.predict(batch))

        return predict
    return lambda batch: np.asarray(keras_model.predict(batch, batch_size=batch_size, verbose=0))


def serve_predict(model_uri: str, uri: str, batch: np.ndarray) -> np.ndarray | str:
    """Predict `batch` the way serving does (stock pyfunc); the probabilities, or what went
    wrong as a sentence."""
    import mlflow

    client(uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
        # The Keras flavour predicts with Keras' default progress bar on stdout: not ours to show.
        with contextlib.redirect_stdout(io.StringIO()):
            return np.asarray(model.predict(batch.astype(np.float32)))
    except Exception as err:
        return f"{model_uri} cannot be loaded or run with mlflow.pyfunc: {type(err).__name__}: {err}"


# --- versions and aliases ----------------------------------------------------------------


def register_version(uri: str, name: str, model_uri: str, run_id: str, tags: Mapping[str, str]) -> str:
    """Register `model_uri` (logged from `run_id`) as a new READY version of `name`; its number.

    As `mlflow.register_model` (MLflow 3 `_register_model`) does, minus its stderr lines
    ("Successfully registered model", "Created version", its wait's "Waiting up to 300 s").
    """
    from mlflow.exceptions import MlflowException

    tracker = client(uri)
    try:
        tracker.create_registered_model(name)
    except MlflowException as err:  # it exists (or a concurrent run created it a moment ago)
        if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    path = model_uri.removeprefix("models:/")
    model_id = path if path != model_uri and not {"/", "@"} & set(path) else None  # `models:/<id>`
    created = tracker.create_model_version(
        name, model_uri, run_id, dict(tags), await_creation_for=0, model_id=model_id
    )
    deadline = time.monotonic() + AWAIT_READY_S
    while created.status == "PENDING_REGISTRATION" and time.monotonic() < deadline:
        time.sleep(1)
        created = tracker.get_model_version(name, created.version)
    if created.status != "READY":
        raise RegistryError(f"{name} version {created.version} is {created.status}: see the server's log")
    # The logged model lists its versions: a server adds this one itself, a local store does not.
    if model_id is not None:
        listed = json.loads(tracker.get_logged_model(model_id).tags.get(MODEL_VERSIONS_TAG) or "[]")
        if (name, str(created.version)) not in {(item["name"], str(item["version"])) for item in listed}:
            listed.append({"name": name, "version": created.version})
            tracker.set_logged_model_tags(model_id, {MODEL_VERSIONS_TAG: json.dumps(listed)})
    log.info("registered %s (run %s) as %s version %s", model_uri, run_id, name, created.version)
    return str(created.version)


def delete_version(uri: str, name: str, version: str) -> None:
    client(uri).delete_model_version(name, version)


def alias_version(uri: str, name: str, alias: str) -> str | None:
    """The version `alias` points at, or None when unset or no such model (a refusal raises)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client(uri).get_model_version_by_alias(name, alias).version)
    except MlflowException as err:
        if err.error_code in MISSING:
            return None
        raise


def aliases(uri: str, name: str) -> dict[str, str | None]:
    """Which version each alias points at (None when unset)."""
    return {alias: alias_version(uri, name, alias) for alias in terms.ALIASES}


def move_aliases(uri: str, name: str, version: str, promoted: bool) -> str | None:
    """Set challenger (and, when promoted, previous-champion then champion); returns the old champion."""
    tracker = client(uri)
    old = alias_version(uri, name, terms.CHAMPION)
    if promoted:
        if old is not None and old != version:
            tracker.set_registered_model_alias(name, terms.PREVIOUS, old)
        tracker.set_registered_model_alias(name, terms.CHAMPION, version)
    tracker.set_registered_model_alias(name, terms.CHALLENGER, version)
    sync_alias_tags(tracker, name)
    return old


def alias_tag_drift(tracker: Any, name: str) -> list[tuple[str, str | None, str | None, str | None]]:
    """(version, its run, `ferflow.alias` tag it has, the one the aliases give it) for every
    version whose tag says something else than the aliases: the tag names the most important
    alias the version holds (champion, previous-champion, challenger), none if it holds none."""
    held = tracker.get_registered_model(name).aliases or {}
    wanted = {str(held[alias]): alias for alias in reversed(ALIAS_ORDER) if alias in held}
    drift = []
    for found in tracker.search_model_versions(f"name='{name}'"):
        version, have = str(found.version), (found.tags or {}).get(terms.ALIAS_TAG)
        if have != wanted.get(version):
            drift.append((version, found.run_id, have, wanted.get(version)))
    return sorted(drift, key=lambda item: int(item[0]))


def sync_alias_tags(tracker: Any, name: str) -> list[tuple[str, str | None, str | None, str | None]]:
    """Make the `ferflow.alias` tags of the versions (and their runs) say what the aliases
    say: derived after every alias move, never written ahead of one. Returns what changed."""
    drift = alias_tag_drift(tracker, name)
    for version, run_id, _, wanted in drift:
        if wanted is None:
            tracker.delete_model_version_tag(name, version, terms.ALIAS_TAG)
        else:
            tracker.set_model_version_tag(name, version, terms.ALIAS_TAG, wanted)
        if run_id:
            with contextlib.suppress(Exception):  # the run may be deleted, or hold several versions
                if wanted is None:
                    tracker.delete_tag(run_id, terms.ALIAS_TAG)
                else:
                    tracker.set_tag(run_id, terms.ALIAS_TAG, wanted)
    return drift


def versions_of_run(uri: str, name: str, run_id: str) -> list[tuple[str, dict[str, str]]]:
    """(version, tags) of every version of `name` registered from `run_id`, oldest first."""
    found = client(uri).search_model_versions(f"name='{name}' and run_id='{run_id}'")
    return sorted(((str(v.version), dict(v.tags or {})) for v in found), key=lambda item: int(item[0]))


def tag_decision(uri: str, name: str, version: str, run_id: str, decision: Mapping[str, Any]) -> None:
    """The gate's decision and reason on the version and on its run: written before any
    alias moves, so an interrupted registration is completed, not repeated, by a rerun."""
    tracker = client(uri)
    champion = decision.get("champion") or {}
    before = str(champion.get("version") or "")
    tracker.set_model_version_tag(name, version, terms.CHAMPION_BEFORE_TAG, before)
    # The reason first: the decision tag marks the version decided, so a decided version
    # always has its reason (the `ferflow.alias` tags follow the aliases: sync_alias_tags).
    reason = decision["reason"][:5000] or "-"
    for key, value in ((terms.REASON_TAG, reason), (terms.DECISION_TAG, decision["decision"])):
        tracker.set_model_version_tag(name, version, key, value)
        tracker.set_tag(run_id, key, value)


def complete_decision_tags(uri: str, name: str, version: str, run_id: str, tags: Mapping[str, str]) -> str:
    """A decided version found again (a registration cut short, rerun): give it the reason
    tag it may lack and alias tags that follow the aliases; returns its reason."""
    tracker = client(uri)
    reason = tags.get(terms.REASON_TAG) or UNRECORDED_REASON
    if not tags.get(terms.REASON_TAG):
        tracker.set_model_version_tag(name, version, terms.REASON_TAG, reason)
        with contextlib.suppress(Exception):
            tracker.set_tag(run_id, terms.REASON_TAG, reason)
    sync_alias_tags(tracker, name)
    return reason


def log_file(uri: str, run_id: str, path: Path, folder: str) -> None:
    client(uri).log_artifact(run_id, str(path), folder)


def describe(
    uri: str, name: str, version: str, run_id: str, card: str, summary: str, model_description: str
) -> None:
    """model_card.md on the run, its summary as the version's description."""
    tracker = client(uri)
    tracker.log_text(run_id, card, "model_card.md")
    tracker.update_model_version(name, version, summary)
    tracker.update_registered_model(name, model_description)


# --- manual moves ------------------------------------------------------------------------


def rollback(uri: str, name: str, lock_timeout_s: float) -> dict[str, Any]:
    """Make `previous-champion` the champion again, in one step.

    The two aliases swap, so a second rollback undoes the first.
    """
    tracker = client(uri)
    nothing = f"{name!r} has no {terms.PREVIOUS!r} alias: there is nothing to roll back to"
    if alias_version(uri, name, terms.PREVIOUS) is None:  # at once, without waiting for the lock
        raise RegistryError(nothing)
    with promotion_lock(tracker, name, lock_timeout_s) as claim:
        current, previous = alias_version(uri, name, terms.CHAMPION), alias_version(uri, name, terms.PREVIOUS)
        if previous is None:  # another process rolled back while this one waited
            raise RegistryError(nothing)
        claim.confirm()
        tracker.set_registered_model_alias(name, terms.CHAMPION, previous)
        if current is not None:
            tracker.set_registered_model_alias(name, terms.PREVIOUS, current)
        reason = f"rollback: champion {current} -> {previous}"
        _tag_manual_move(tracker, name, previous, "rollback", reason)
    log.info("%s: %s", name, reason)
    return {"model_name": name, "champion": previous, terms.PREVIOUS: current, "reason": reason}


def promote_version(uri: str, name: str, version: str, lock_timeout_s: float) -> dict[str, Any]:
    """Make `version` the champion by hand (no gate); the old one becomes previous-champion."""
    tracker = client(uri)
    version = require_version(uri, name, version)
    with promotion_lock(tracker, name, lock_timeout_s) as claim:
        claim.confirm()
        old = move_aliases(uri, name, version, promoted=True)
        reason = f"promoted by hand (ferflow promote --version {version}); previous champion {old}"
        _tag_manual_move(tracker, name, version, "promoted-by-hand", reason)
    return {"model_name": name, "champion": version, terms.PREVIOUS: old, "reason": reason}


def require_version(uri: str, name: str, version: str) -> str:
    """`version` when `name` has it, else a RegistryError listing the versions that exist."""
    version = str(version).strip()
    existing = sorted((str(v.version) for v in client(uri).search_model_versions(f"name='{name}'")), key=int)
    if version in existing:
        return version
    listed = ", ".join(existing) if existing else "none yet (run the pipeline first)"
    raise RegistryError(f"registered model {name!r} has no version {version!r}; its versions: {listed}")


def _tag_manual_move(tracker: Any, name: str, champion: str, move: str, reason: str) -> None:
    """A manual move's own tags on the new champion: the gate's stay as the gate decided."""
    tracker.set_model_version_tag(name, champion, terms.MANUAL_MOVE_TAG, move)
    tracker.set_model_version_tag(name, champion, terms.MANUAL_REASON_TAG, reason)
    sync_alias_tags(tracker, name)


def registered_models(client: Any) -> str:
    """What the registry holds, as one sentence: names and where their aliases point."""
    try:
        found = client.search_registered_models(max_results=20)
    except Exception as err:  # a listing is a courtesy: never hide the real error
        log.debug("cannot list registered models: %s", err)
        return ""
    if not found:
        return "The registry holds no model yet: run the pipeline first (`make demo`'s model: run in demo/)"
    described = []
    for model in found:
        aliases = ", ".join(
            f"{alias}: v{version}" for alias, version in sorted((model.aliases or {}).items())
        )
        described.append(f"{model.name} ({aliases or 'no aliases'})")
    return "Registered models: " + "; ".join(described)
