"""The MLflow model registry: registration, the promotion gate, aliases and rollback.

Every successful pipeline run registers its model as a new version of
`register.model_name` and points the `challenger` alias at it. The gate (like TFX's
Evaluator "blessing") makes it `champion` only if:

a. it clears the floors in params (`register.min_accuracy`, `min_macro_f1`,
   `min_class_recall`);
b. when a champion exists, the champion, evaluated on the same test data in the same run,
   is beaten by at least `register.margin` on `register.metric`;
c. the version loaded back from the registry by its `models:/name/version` URI predicts a
   smoke batch with shape (n, 7), and the same probabilities as the evaluated model file.

Aliases move only at the very end, inside a promotion lock, so a failed or crashed run
never moves one. MLflow has no compare-and-set on aliases, so the lock is built from
registered-model tags (see `promotion_lock`): each contender writes its own claim tag,
waits long enough for any earlier claim to become visible, and proceeds only if its claim
is the oldest. Inside the lock the champion alias is read again; if it moved since this
run evaluated it, the new champion is evaluated before deciding. Two racing runs therefore
decide one after the other and end with exactly one, correct, champion.

This module and tracking.py are the only ones that import mlflow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ferflow import evaluate as ev
from ferflow.config import Params, Register
from ferflow.errors import FerflowError

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
PROMOTION_FILE = "promotion.json"
MODEL_CARD_FILE = "model_card.md"
RUN_FILE = "run.json"
SMOKE_SIZE = 8
# How long a claim waits before reading the others: longer than one tag write takes to
# land, so any contender that stamped its claim earlier is visible by then.
CLAIM_SETTLE_S = 0.5
LOCK_PREFIX = "ferflow.promotion_claim."
GATE_METRICS = ("accuracy", "macro_f1", "weighted_f1", "macro_auc")


class RegistryError(FerflowError, RuntimeError):
    """The registry is not in a state this command can work with; the message says why."""


# --- connection ------------------------------------------------------------------------


def tracking_uri(params: Params) -> str:
    """MLFLOW_TRACKING_URI if set, else tracking.tracking_uri (the same rule as tracking.py)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.tracking_uri


def _client(uri: str) -> Any:
    import mlflow
    from mlflow import MlflowClient

    if uri.startswith("sqlite:///"):
        # The local default store lives under mlflow/; make sure the folder exists.
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def read_run_info(model_dir: Path) -> dict[str, Any] | None:
    """models/run.json (written by training), or None when training did not use MLflow."""
    path = Path(model_dir) / RUN_FILE
    if not path.exists():
        return None
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RegistryError(f"{path} is not valid JSON ({err}); re-run `ferflow train`") from err
    if not isinstance(info, dict) or not info.get("run_id"):
        raise RegistryError(f"{path} has no `run_id`; re-run `ferflow train`")
    return info


def _model_uri_of(run: dict[str, Any] | None) -> str | None:
    run = run or {}
    return run.get("model_uri") or run.get("logged_model_uri")


# --- loading models --------------------------------------------------------------------


def load_predict_fn(model: str, params: Params, batch_size: int | None = None) -> ev.PredictFn:
    """A `predict_fn(batch (n,S,S) float32) -> (n,7)` for a local .keras path or an MLflow URI.

    MLflow URIs (`models:/name@alias`, `models:/name/3`, `runs:/id/model`) load the Keras
    flavour when there is one (fast batched predict), else the generic pyfunc flavour.
    """
    batch_size = batch_size or params.evaluate.batch_size
    is_uri = model.startswith(("models:/", "runs:/")) or "://" in model
    if not is_uri:
        return ev.load_keras_predict_fn(Path(model), batch_size)
    import mlflow

    _client(tracking_uri(params))
    try:
        keras_model = mlflow.keras.load_model(model)
    except Exception as keras_err:  # not a Keras-flavour model: fall back to pyfunc
        log.debug("no keras flavour for %s (%s); loading pyfunc", model, keras_err)
        try:
            pyfunc = mlflow.pyfunc.load_model(model)
        except Exception as err:
            raise RegistryError(
                f"cannot load model {model!r} from {tracking_uri(params)}: {err}. Check the URI "
                "(`models:/NAME@champion`, `models:/NAME/VERSION`, `runs:/RUN_ID/model`) and "
                "MLFLOW_TRACKING_URI"
            ) from err
        return lambda batch: np.asarray(pyfunc.predict(batch))
    return lambda batch: np.asarray(keras_model.predict(batch, batch_size=batch_size, verbose=0))


# --- logging the evaluation ------------------------------------------------------------


def log_evaluation(params: Params, run: dict[str, Any], metrics: dict[str, float], report_dir: Path) -> None:
    """Log `test.*` metrics and the evaluation files to the training run."""
    from mlflow.entities import Metric

    client = _client(tracking_uri(params))
    now = int(time.time() * 1000)
    client.log_batch(run["run_id"], metrics=[Metric(k, v, now, 0) for k, v in sorted(metrics.items())])
    for name in (ev.METRICS_FILE, ev.CONFUSION_JSON, ev.EVALUATION_FILE):
        if (report_dir / name).exists():
            client.log_artifact(run["run_id"], str(report_dir / name), "evaluation")
    if (report_dir / ev.PLOTS_DIR).is_dir():
        client.log_artifacts(run["run_id"], str(report_dir / ev.PLOTS_DIR), "evaluation")
    log.info("logged %d test metrics to MLflow run %s", len(metrics), run["run_id"])


def log_keras_model(params: Params, model_path: Path, run_id: str | None = None) -> tuple[str, str]:
    """Log a .keras file as an MLflow Keras model; returns (model URI, run id).

    Used when training did not log the model itself (no `model_uri` in run.json). The
    signature documents the serving input: float32 (n, S, S) grayscale pixels 0..255.
    """
    import keras
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    size, k = params.base.image_size, len(params.base.classes)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, size, size), "pixels")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, k), "probabilities")]),
    )
    _client(tracking_uri(params))
    model = keras.saving.load_model(model_path, compile=False)
    if run_id is None:
        mlflow.set_experiment(params.tracking.experiment)
    with mlflow.start_run(run_id=run_id) as active:
        info = mlflow.keras.log_model(model, name="model", signature=signature)
    return info.model_uri, active.info.run_id


# --- the gate --------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    promoted: bool
    reason: str


def majority_share(metrics: dict[str, Any]) -> float:
    """The accuracy of always answering the test set's most common class."""
    support = [row["support"] for row in metrics["per_class"].values()]
    return max(support) / max(1, sum(support))


def check_floors(metrics: dict[str, Any], floors: Register) -> list[str]:
    """The floors `metrics` misses, as readable sentences (empty when all are met)."""
    misses = []
    if metrics["accuracy"] < floors.min_accuracy:
        misses.append(f"accuracy {metrics['accuracy']:.4f} < register.min_accuracy {floors.min_accuracy}")
    if floors.min_accuracy_over_majority is not None:
        majority = majority_share(metrics)
        needed = majority + floors.min_accuracy_over_majority
        if metrics["accuracy"] < needed:
            misses.append(
                f"accuracy {metrics['accuracy']:.4f} < {needed:.4f} (majority-class share {majority:.4f} "
                f"+ register.min_accuracy_over_majority {floors.min_accuracy_over_majority}): "
                "no better than always answering the most common class"
            )
    if metrics["macro_f1"] < floors.min_macro_f1:
        misses.append(f"macro_f1 {metrics['macro_f1']:.4f} < register.min_macro_f1 {floors.min_macro_f1}")
    if floors.min_class_recall is not None:
        for name, row in metrics["per_class"].items():
            if row["recall"] < floors.min_class_recall:
                misses.append(
                    f"recall of {name} {row['recall']:.4f} < "
                    f"register.min_class_recall {floors.min_class_recall}"
                )
    return misses


def decide(
    challenger: dict[str, Any],
    champion: dict[str, Any] | None,
    rules: Register,
    smoke_problem: str | None = None,
) -> Verdict:
    """The gate: floors, then the comparison with the champion, then the smoke test."""
    misses = check_floors(challenger, rules)
    if misses:
        return Verdict(False, "below floor: " + "; ".join(misses))
    if smoke_problem:
        return Verdict(False, f"smoke test failed: {smoke_problem}")
    if champion is None:
        return Verdict(True, "no champion yet and every floor is met")
    metric = rules.metric
    gain = challenger[metric] - champion[metric]
    # "beats by at least margin": strictly better, and by margin or more (1e-12: float noise)
    if gain > 1e-12 and gain >= rules.margin - 1e-12:
        return Verdict(
            True, f"{metric} {challenger[metric]:.4f} beats champion {champion[metric]:.4f} by {gain:+.4f}"
        )
    return Verdict(
        False,
        f"{metric} {challenger[metric]:.4f} vs champion {champion[metric]:.4f} ({gain:+.4f}); "
        f"needs to be better by at least register.margin={rules.margin}",
    )


def smoke_test(model_uri: str, params: Params, batch: np.ndarray, expected: np.ndarray | None) -> str | None:
    """Load `model_uri` the way serving does (stock pyfunc) and predict `batch`.

    Returns None when it works, else what went wrong. `expected` are the probabilities
    the evaluated model file gives for `batch`: the registered copy must agree.
    """
    import mlflow

    _client(tracking_uri(params))
    try:
        probs = np.asarray(mlflow.pyfunc.load_model(model_uri).predict(batch.astype(np.float32)))
    except Exception as err:
        return f"{model_uri} cannot be loaded or run with mlflow.pyfunc: {type(err).__name__}: {err}"
    want = (len(batch), len(params.base.classes))
    if probs.shape != want:
        return f"{model_uri} returned shape {probs.shape}, expected {want}"
    if not np.all(np.isfinite(probs)):
        return f"{model_uri} returned NaN or infinite probabilities"
    if expected is not None and not np.allclose(probs, expected, atol=1e-4):
        return (
            f"{model_uri} predicts differently from the evaluated model file (max difference "
            f"{np.abs(probs - expected).max():.3g}): the registered artifact is not the evaluated model"
        )
    return None


# --- the promotion lock ----------------------------------------------------------------


@contextlib.contextmanager
def promotion_lock(client: Any, name: str, timeout_s: float) -> Iterator[None]:
    """Mutual exclusion between runs promoting versions of `name`.

    Each contender writes its own tag `ferflow.promotion_claim.<token>` = wall-clock time,
    sleeps CLAIM_SETTLE_S, then reads all claims: the oldest (time, token) goes ahead, the
    others withdraw and retry. Distinct tag keys mean no claim overwrites another; the
    settle wait means a claim stamped earlier but written slightly later is still seen.
    Claims older than `timeout_s` (a crashed holder) are ignored.
    """
    token = uuid.uuid4().hex
    key = LOCK_PREFIX + token
    deadline = time.monotonic() + timeout_s
    while True:
        stamp = time.time()
        client.set_registered_model_tag(name, key, f"{stamp:.6f}")
        time.sleep(CLAIM_SETTLE_S)
        claims = _live_claims(client, name, timeout_s)
        if min(claims, default=(stamp, token)) == (stamp, token):
            break
        client.delete_registered_model_tag(name, key)
        if time.monotonic() > deadline:
            raise RegistryError(
                f"could not take the promotion lock of {name!r} within register.lock_timeout_s="
                f"{timeout_s}: another run is promoting; retry, or delete stale "
                f"`{LOCK_PREFIX}*` tags on the registered model"
            )
        time.sleep(random.uniform(0.1, 0.5))
    try:
        yield
    finally:
        client.delete_registered_model_tag(name, key)


def _live_claims(client: Any, name: str, timeout_s: float) -> list[tuple[float, str]]:
    tags = client.get_registered_model(name).tags
    now = time.time()
    claims = []
    for key, value in tags.items():
        if key.startswith(LOCK_PREFIX):
            with contextlib.suppress(ValueError):
                stamp = float(value)
                if now - stamp < timeout_s:
                    claims.append((stamp, key.removeprefix(LOCK_PREFIX)))
    return claims


def _alias_version(client: Any, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _move_aliases(client: Any, name: str, version: str, promoted: bool) -> str | None:
    """Set challenger (and, when promoted, previous-champion then champion); returns the old champion."""
    old = _alias_version(client, name, CHAMPION)
    if promoted:
        if old is not None and old != version:
            client.set_registered_model_alias(name, PREVIOUS, old)
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_registered_model_alias(name, CHALLENGER, version)
    return old


# --- the register stage ----------------------------------------------------------------


def register_stage(
    params: Params, model_dir: Path, report_dir: Path, data_dir: Path | None = None
) -> dict[str, Any]:
    """Register models/model.keras, run the gate, move aliases; returns the decision.

    Needs `ferflow evaluate` to have written report_dir/metrics.json for this exact model
    file and data (checked by sha256). `data_dir` (default `data.prepared`) provides the
    test split the champion is evaluated on and the smoke batch. The decision is written
    to report_dir/promotion.json and tagged on the version and the run.
    """
    model_dir, report_dir = Path(model_dir), Path(report_dir)
    data_dir = Path(data_dir or params.data.prepared)
    name = params.registry.model_name
    metrics = _fresh_metrics(model_dir, report_dir, data_dir)
    images, labels = ev.test_split(data_dir)
    local_fn = ev.load_keras_predict_fn(model_dir / "model.keras", params.evaluate.batch_size)
    smoke_batch = images[:SMOKE_SIZE].astype(np.float32)
    expected = local_fn(smoke_batch)

    run_info = read_run_info(model_dir)
    client = _client(tracking_uri(params))
    model_uri = _model_uri_of(run_info)
    if model_uri is None:
        # Training did not log the model (or ran without MLflow): log model.keras now.
        parent = run_info["run_id"] if run_info else None
        model_uri, run_id = log_keras_model(params, model_dir / "model.keras", parent)
    else:
        run_id = run_info["run_id"]  # type: ignore[index]  # a model_uri implies run.json
    run = {"run_id": run_id, "model_uri": model_uri}
    provenance = _provenance(client, params, run, data_dir)
    version = _register_version(client, name, model_uri, run_id, metrics, provenance)
    try:
        _publish_model_card(client, params, version, run["run_id"], metrics, provenance, data_dir, report_dir)
        decision = _gate_and_promote(client, params, version, metrics, images, labels, smoke_batch, expected)
    except BaseException:
        # Nothing half-done stays behind: the aliases have not moved, drop the version.
        log.error("registration of %s version %s failed; deleting the version", name, version)
        with contextlib.suppress(Exception):
            client.delete_model_version(name, version)
        raise
    decision.update(model_uri=model_uri, run_id=run["run_id"], **provenance)
    _write_json(report_dir / PROMOTION_FILE, decision)
    _log_decision_to_run(client, run["run_id"], report_dir, decision)
    log.info("%s version %s: %s (%s)", name, version, decision["decision"], decision["reason"])
    return decision


def _fresh_metrics(model_dir: Path, report_dir: Path, data_dir: Path) -> dict[str, Any]:
    """metrics.json, after checking it belongs to this model file and this data."""
    from ferflow.data.dataset import manifest_digest

    metrics_path, provenance_path = report_dir / ev.METRICS_FILE, report_dir / ev.EVALUATION_FILE
    if not metrics_path.exists() or not provenance_path.exists():
        raise RegistryError(f"{metrics_path} is missing; run `ferflow evaluate` before `ferflow register`")
    provenance = json.loads(provenance_path.read_text())
    if provenance.get("model_sha256") != ev.file_sha256(model_dir / "model.keras"):
        raise RegistryError(
            f"{metrics_path} was computed for another model file than {model_dir / 'model.keras'}; "
            "run `ferflow evaluate` again"
        )
    if provenance.get("manifest_digest") != manifest_digest(data_dir):
        raise RegistryError(
            f"{metrics_path} was computed on other data than {data_dir}; run `ferflow evaluate` again"
        )
    return json.loads(metrics_path.read_text())


def _provenance(client: Any, params: Params, run: dict[str, Any], data_dir: Path) -> dict[str, str]:
    from ferflow.data.dataset import manifest_digest

    tags = client.get_run(run["run_id"]).data.tags
    digest = manifest_digest(data_dir)
    return {
        "data_version": tags.get("ferflow.data_version") or digest,
        "manifest_digest": digest,
        "params_digest": params.digest(),
        "git_commit": git_commit(),
    }


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _register_version(
    client: Any, name: str, model_uri: str, run_id: str, metrics: dict[str, Any], provenance: dict[str, str]
) -> str:
    import mlflow

    tags = {f"test.{k}": f"{metrics[k]:.6f}" for k in GATE_METRICS}
    tags.update({f"ferflow.{k}": v for k, v in provenance.items()})
    tags["ferflow.run_id"] = run_id
    version = mlflow.register_model(model_uri, name, tags=tags)
    log.info("registered %s as %s version %s", model_uri, name, version.version)
    return str(version.version)


def _gate_and_promote(
    client: Any,
    params: Params,
    version: str,
    metrics: dict[str, Any],
    images: np.ndarray,
    labels: np.ndarray,
    smoke_batch: np.ndarray,
    expected: np.ndarray,
) -> dict[str, Any]:
    name, rules = params.registry.model_name, params.registry
    smoke_problem = smoke_test(f"models:/{name}/{version}", params, smoke_batch, expected)
    # Evaluate the champion before taking the lock (slow); re-check inside it.
    champion = _alias_version(client, name, CHAMPION)
    champion_metrics = _evaluate_version(params, champion, images, labels)
    with promotion_lock(client, name, rules.lock_timeout_s):
        now_champion = _alias_version(client, name, CHAMPION)
        if now_champion != champion:
            log.info("champion moved to version %s while this run evaluated; comparing again", now_champion)
            champion, champion_metrics = now_champion, _evaluate_version(params, now_champion, images, labels)
        verdict = decide(metrics, champion_metrics, rules, smoke_problem)
        decision = _decision_record(
            name, version, metrics, champion, champion_metrics, verdict, smoke_problem
        )
        _tag_version(client, name, version, decision)
        _move_aliases(client, name, version, verdict.promoted)
    return decision


def _publish_model_card(
    client: Any,
    params: Params,
    version: str,
    run_id: str,
    metrics: dict[str, Any],
    provenance: dict[str, str],
    data_dir: Path,
    report_dir: Path,
) -> None:
    """model_card.md in reports/ and on the run; its summary as the version description."""
    from ferflow import model_card
    from ferflow.data.dataset import load_prepared

    card = model_card.build_model_card(
        params,
        metrics,
        version=version,
        data_version=provenance["data_version"],
        counts=model_card.split_counts(load_prepared(data_dir, mmap=True).manifest),
        validation=model_card.read_validation(report_dir),
        git_commit=provenance["git_commit"],
    )
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / MODEL_CARD_FILE).write_text(card)
    client.log_text(run_id, card, MODEL_CARD_FILE)
    client.update_model_version(params.registry.model_name, version, model_card.card_summary(params, metrics))
    client.update_registered_model(params.registry.model_name, REGISTERED_MODEL_DESCRIPTION)


REGISTERED_MODEL_DESCRIPTION = (
    "Facial emotion recognition (FER2013, 7 classes) trained by ferflow: a Keras DenseNet with a "
    "dense head, trained frozen then fine-tuned. Input: a batch of 48x48 grayscale images as "
    "float32 (n, 48, 48) with values 0-255; output: (n, 7) probabilities in the order Anger, "
    "Disgust, Fear, Happy, Neutral, Sadness, Surprise. Aliases: `champion` (serving), `challenger` "
    "(latest run), `previous-champion` (rollback target). Each version's description and "
    "model_card.md hold its data version, metrics and the promotion decision. Not for decisions "
    "about people."
)


def _evaluate_version(
    params: Params, version: str | None, images: np.ndarray, labels: np.ndarray
) -> dict[str, Any] | None:
    if version is None:
        return None
    uri = f"models:/{params.registry.model_name}/{version}"
    log.info("evaluating the champion %s on the same test split", uri)
    return ev.evaluate_model(load_predict_fn(uri, params), images, labels, params).metrics


def _decision_record(
    name: str,
    version: str,
    metrics: dict[str, Any],
    champion: str | None,
    champion_metrics: dict[str, Any] | None,
    verdict: Verdict,
    smoke_problem: str | None,
) -> dict[str, Any]:
    return {
        "decision": "promoted" if verdict.promoted else "not-promoted",
        "reason": verdict.reason,
        "model_name": name,
        "version": version,
        "challenger": {"version": version, "metrics": metrics},
        "champion": None if champion is None else {"version": champion, "metrics": champion_metrics},
        "smoke_test": smoke_problem or "passed",
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _tag_version(client: Any, name: str, version: str, decision: dict[str, Any]) -> None:
    client.set_model_version_tag(name, version, "ferflow.gate.decision", decision["decision"])
    client.set_model_version_tag(name, version, "ferflow.gate.reason", decision["reason"][:5000])
    alias = CHAMPION if decision["decision"] == "promoted" else CHALLENGER
    client.set_model_version_tag(name, version, "ferflow.alias", alias)


def _log_decision_to_run(client: Any, run_id: str, report_dir: Path, decision: dict[str, Any]) -> None:
    client.set_tag(run_id, "ferflow.gate.decision", decision["decision"])
    client.set_tag(run_id, "ferflow.gate.reason", decision["reason"][:5000])
    client.set_tag(run_id, "ferflow.alias", CHAMPION if decision["decision"] == "promoted" else CHALLENGER)
    client.log_artifact(run_id, str(report_dir / PROMOTION_FILE), "evaluation")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


# --- manual moves ----------------------------------------------------------------------


def rollback(params: Params) -> dict[str, Any]:
    """Make `previous-champion` the champion again, in one step.

    The two aliases swap, so a second rollback undoes the first.
    """
    client = _client(tracking_uri(params))
    name = params.registry.model_name
    with promotion_lock(client, name, params.registry.lock_timeout_s):
        current, previous = _alias_version(client, name, CHAMPION), _alias_version(client, name, PREVIOUS)
        if previous is None:
            raise RegistryError(f"{name!r} has no {PREVIOUS!r} alias: there is nothing to roll back to")
        client.set_registered_model_alias(name, CHAMPION, previous)
        if current is not None:
            client.set_registered_model_alias(name, PREVIOUS, current)
        reason = f"rollback: champion {current} -> {previous}"
        client.set_model_version_tag(name, previous, "ferflow.gate.reason", reason)
    log.info("%s: %s", name, reason)
    return {"model_name": name, "champion": previous, PREVIOUS: current, "reason": reason}


def promote_version(params: Params, version: str) -> dict[str, Any]:
    """Make `version` the champion by hand (no gate); the old one becomes previous-champion."""
    client = _client(tracking_uri(params))
    name = params.registry.model_name
    with promotion_lock(client, name, params.registry.lock_timeout_s):
        old = _move_aliases(client, name, str(version), promoted=True)
        reason = f"promoted by hand (ferflow promote --version {version}); previous champion {old}"
        client.set_model_version_tag(name, str(version), "ferflow.gate.reason", reason)
    return {"model_name": name, "champion": str(version), PREVIOUS: old, "reason": reason}


def aliases(params: Params) -> dict[str, str | None]:
    """Which version each alias points at (None when unset)."""
    client = _client(tracking_uri(params))
    name = params.registry.model_name
    return {alias: _alias_version(client, name, alias) for alias in (CHAMPION, CHALLENGER, PREVIOUS)}
