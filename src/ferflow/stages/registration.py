"""The `register` stage.

`register`: register models/model.keras as a new version of `register.model_name`, run the
gate (ferflow.evaluation.gate) and move the aliases (ferflow.tracking.models), once per trained
model. In order:

0. model.keras must be the file run.json's run made, and that run FINISHED, with the
   params and data it logged (ferflow.stages.lineage): never a failed run's leftovers;
1. metrics.json must belong to this model file and this data (sha256 and manifest digest);
2. the model is registered (logged first when training did not log it), tagged with its
   metrics and provenance, described by its model card;
3. gather: the registered copy is loaded the way serving loads it and must predict like
   the evaluated file (the smoke test): a `Candidate`; the champion is evaluated on the
   same test split: a `Champion`;
4. decide and publish: inside the promotion lock the champion is read again (re-evaluated
   if it moved), `gate.decide` decides (a pure function), the decision is tagged and the
   aliases move, last.

A failure anywhere before the aliases move deletes the new version: nothing half-done
stays behind and no alias moves. The decision goes to reports/promotion.json, on the
version and on the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferflow.config import Params
from ferflow.errors import FerflowError
from ferflow.evaluation import evaluate as ev
from ferflow.evaluation import gate
from ferflow.evaluation import vocabulary as terms
from ferflow.files import file_sha256, write_json
from ferflow.stages import lineage
from ferflow.stages.layout import Layout

if TYPE_CHECKING:  # imported when a command talks to MLflow, not with the stage table
    from ferflow.tracking.registry import Registry
    from ferflow.tracking.session import Session

log = logging.getLogger(__name__)

SMOKE_SIZE = 8


class PromotionError(FerflowError, RuntimeError):
    """The inputs of the register stage do not belong together; the message says what to rerun."""


def register(params: Params, layout: Layout) -> dict[str, Any]:
    """Register the model and run the promotion gate, once per trained model.

    Registration moves aliases, a side effect no cache may replay: when
    reports/promotion.json already holds the decision for the MLflow run in
    models/run.json, that decision is returned and nothing is registered again. Both
    `ferflow register` and the flow's register task come through here.
    """
    previous = decided_promotion(layout)
    if previous is not None:
        log.info(
            "run %s was already decided (%s, version %s): not registering it again",
            previous.get("run_id"),
            previous.get("decision"),
            previous.get("version"),
        )
        return previous
    return _register_new_version(params, layout)


def decided_promotion(layout: Layout) -> dict[str, Any] | None:
    """The promotion decision already taken for the current model's MLflow run, if any."""
    from ferflow.tracking import store

    if not layout.promotion_file.exists():
        return None
    run = store.read_run_info(layout.run_file)
    decision = read_json(layout.promotion_file)
    return decision if run is not None and decision.get("run_id") == run.run_id else None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or a FerflowError naming the file."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise FerflowError(f"cannot read {path}: {err}; rerun the stage that writes it") from err
    if not isinstance(value, dict):
        raise FerflowError(f"{path} does not hold a JSON object; rerun the stage that writes it")
    return value


@dataclass(frozen=True)
class Candidate:
    """What the gate judges of the new version: the run that trained it, its test metrics
    and what the smoke test found (None: it passed)."""

    version: str
    run_id: str
    metrics: dict[str, Any]
    smoke: str | None


@dataclass(frozen=True)
class Champion:
    """The version `champion` points at (None: no champion yet) and its metrics on the
    candidate's test split."""

    version: str | None
    metrics: dict[str, Any] | None


def _register_new_version(params: Params, layout: Layout) -> dict[str, Any]:
    """Steps 1-4 of the module docstring; returns the decision (also in promotion.json)."""
    from ferflow.tracking import registry as registries
    from ferflow.tracking import runs, store

    registry = registries.connect(params)  # fails fast when the server is down
    session = registry.session
    session.sweep_stale()
    run_info = store.read_run_info(layout.run_file)
    state = runs.run_state(store.run_uri(run_info), run_info.run_id) if run_info else None
    lineage.check_registrable(layout, run_info.run_id if run_info else None, state)
    metrics = fresh_metrics(layout)
    test = ev.test_split(layout.prepared)
    smoke_rows = gate.smoke_batch_indices(test[1], SMOKE_SIZE)
    smoke = test[0][smoke_rows].astype(np.float32), test[1][smoke_rows]
    expected = ev.load_keras_predict_fn(layout.model_file, params.evaluate.batch_size)(smoke[0])

    model_uri, run_id = _logged_model(session, params, layout, run_info)
    provenance = _provenance(params, session.run_tags(run_id), layout)
    earlier = registry.versions_of_run(run_id)
    recorded = [(v, tags) for v, tags in earlier if terms.DECISION_TAG in tags]
    if recorded:  # interrupted after the gate decided (promotion.json lost): complete it
        return _complete_recorded(registry, layout, *recorded[-1], run_id, model_uri)
    if earlier:  # interrupted before the gate decided (kill -9): reuse that version
        version = earlier[-1][0]
        log.info(
            "reusing %s version %s, registered from run %s before an interruption",
            registry.name,
            version,
            run_id,
        )
    else:
        version = registry.register(model_uri, run_id, gate.version_tags(metrics, provenance, run_id))
    try:
        _publish_model_card(params, layout, registry, version, run_id, metrics, provenance)
        candidate = _gather_candidate(params, registry, version, run_id, metrics, smoke, expected)
        decision = _decide_and_publish(params, registry, candidate, test)
    except BaseException:
        # Nothing half-done stays behind: the aliases have not moved, drop the version.
        log.error("registration of %s version %s failed; deleting the version", registry.name, version)
        with contextlib.suppress(Exception):
            registry.delete(version)
        raise
    decision.update(model_uri=model_uri, run_id=run_id, **provenance)
    write_json(layout.promotion_file, decision)
    session.log_file(run_id, layout.promotion_file, "evaluation")
    log.info("%s version %s: %s (%s)", registry.name, version, decision["decision"], decision["reason"])
    return decision


def _logged_model(session: Session, params: Params, layout: Layout, run_info: Any) -> tuple[str, str]:
    """(model URI, run id) of the model to register: the one training logged, else
    model.keras logged now (training ran without MLflow, or did not log it)."""
    from ferflow.tracking import models

    if run_info is not None and run_info.model_uri:
        return run_info.model_uri, run_info.run_id
    return models.log_model_file(
        session.uri,
        layout.model_file,
        params.tracking.experiment,
        params.base.image_size,
        len(params.base.classes),
        run_info.run_id if run_info else None,
    )


# --- gather -> decide -> publish ----------------------------------------------------------


def _gather_candidate(
    params: Params,
    registry: Registry,
    version: str,
    run_id: str,
    metrics: dict[str, Any],
    smoke: tuple[np.ndarray, np.ndarray],
    expected: np.ndarray,
) -> Candidate:
    """The registered copy, loaded the way serving loads it, must predict the smoke batch
    like the evaluated file did (and, when asked, not as one class)."""
    from ferflow.tracking import models

    batch, labels = smoke
    served = registry.version_uri(version)
    problem = gate.smoke_problem(
        served,
        models.serve_predict(served, registry.session.uri, batch),
        len(batch),
        len(params.base.classes),
        expected,
        labels if params.registry.refuse_one_class else None,
    )
    return Candidate(version, run_id, metrics, problem)


def _read_champion(
    params: Params, registry: Registry, test: tuple[np.ndarray, np.ndarray], known: Champion | None = None
) -> Champion:
    """The champion now, evaluated on the same test split (unless it is still `known`)."""
    version = registry.alias(terms.CHAMPION)
    if known is not None and known.version == version:
        return known
    if known is not None:
        log.info("champion moved to version %s while this run evaluated; comparing again", version)
    return Champion(version, _evaluate_version(params, registry, version, *test))


def _decide_and_publish(
    params: Params, registry: Registry, candidate: Candidate, test: tuple[np.ndarray, np.ndarray]
) -> dict[str, Any]:
    """Gather the champion, let the gate decide, publish the decision (tags, then aliases).

    The champion is evaluated before the lock (slow) and read again inside it; the decision
    is tagged before any alias moves, so a rerun completes an interrupted move."""
    champion = _read_champion(params, registry, test)
    with registry.locked() as claim:
        champion = _read_champion(params, registry, test, known=champion)
        verdict = gate.decide(candidate.metrics, champion.metrics, params.registry, candidate.smoke)
        decision = gate.decision_record(
            registry.name,
            candidate.version,
            candidate.metrics,
            champion.version,
            champion.metrics,
            verdict,
            candidate.smoke,
        )
        claim.confirm()
        registry.tag_decision(candidate.version, candidate.run_id, decision)
        registry.move_aliases(candidate.version, verdict.promoted)
    return decision


def _complete_recorded(
    registry: Registry, layout: Layout, version: str, tags: dict[str, str], run_id: str, model_uri: str
) -> dict[str, Any]:
    """A decision the registry holds for this run but promotion.json does not: finish its
    alias moves if nothing happened since (the champion is still the one it was compared
    with), write promotion.json, register nothing."""
    promoted = tags[terms.DECISION_TAG] == gate.PROMOTED
    with registry.locked() as claim:
        claim.confirm()
        if (registry.alias(terms.CHAMPION) or "") == tags.get(terms.CHAMPION_BEFORE_TAG, ""):
            registry.move_aliases(version, promoted)
        reason = registry.complete_decision_tags(version, run_id, tags)
    decision = {
        "decision": tags[terms.DECISION_TAG],
        "reason": reason,
        "model_name": registry.name,
        "version": version,
        "run_id": run_id,
        "model_uri": model_uri,
        "recovered_from_registry": True,
    }
    write_json(layout.promotion_file, decision)
    log.info(
        "%s version %s was already decided (%s): recorded it again",
        registry.name,
        version,
        decision["decision"],
    )
    return decision


def fresh_metrics(layout: Layout) -> dict[str, Any]:
    """metrics.json, after checking it belongs to this model file and this data."""
    from ferflow.data.dataset import manifest_digest

    if not layout.metrics_file.exists() or not layout.evaluation_file.exists():
        raise PromotionError(
            f"{layout.metrics_file} is missing; run `ferflow evaluate` before `ferflow register`"
        )
    provenance = read_json(layout.evaluation_file)
    if provenance.get("model_sha256") != file_sha256(layout.model_file):
        raise PromotionError(
            f"{layout.metrics_file} was computed for another model file than {layout.model_file}; "
            "run `ferflow evaluate` again"
        )
    if provenance.get("manifest_digest") != manifest_digest(layout.prepared):
        raise PromotionError(
            f"{layout.metrics_file} was computed on other data than {layout.prepared}; "
            "run `ferflow evaluate` again"
        )
    return read_json(layout.metrics_file)


def _provenance(params: Params, run_tags: dict[str, str], layout: Layout) -> dict[str, str]:
    from ferflow.data.dataset import manifest_digest
    from ferflow.tracking import store

    digest = manifest_digest(layout.prepared)
    return {
        "data_version": run_tags.get("ferflow.data_version") or digest,
        "manifest_digest": digest,
        # the params the model was trained with (its run's), not those of this command
        "params_digest": run_tags.get("ferflow.params_digest") or params.digest(),
        "git_commit": store.git_commit(),
    }


def _publish_model_card(
    params: Params,
    layout: Layout,
    registry: Registry,
    version: str,
    run_id: str,
    metrics: dict[str, Any],
    provenance: dict[str, str],
) -> None:
    """model_card.md in reports/ and on the run; its summary as the version description."""
    from ferflow.data.dataset import load_prepared
    from ferflow.evaluation import model_card

    card = model_card.build_model_card(
        params,
        metrics,
        version=version,
        data_version=provenance["data_version"],
        counts=model_card.split_counts(load_prepared(layout.prepared, mmap=True).manifest),
        validation=model_card.read_validation(layout.validation_file),
        git_commit=provenance["git_commit"],
    )
    layout.reports.mkdir(parents=True, exist_ok=True)
    layout.model_card_file.write_text(card)
    registry.describe(
        version,
        run_id,
        card,
        model_card.card_summary(params, metrics),
        model_card.REGISTERED_MODEL_DESCRIPTION,
    )


def _evaluate_version(
    params: Params, registry: Registry, version: str | None, images: np.ndarray, labels: np.ndarray
) -> dict[str, Any] | None:
    from ferflow.stages.evaluation import load_predict_fn

    if version is None:
        return None
    model_uri = registry.version_uri(version)
    log.info("evaluating the champion %s on the same test split", model_uri)
    predict_fn = load_predict_fn(model_uri, params, uri=registry.session.uri)
    return ev.evaluate_model(predict_fn, images, labels, params).metrics
