"""`ferflow runs check`: does the registry's metadata say what its aliases say?

The aliases of a registered model are the truth (serving loads `@champion`); the
`ferflow.alias` tags of versions and runs, the gate's reason tags and reports/promotion.json
are records of them that a crash, an older ferflow or a hand edit can leave behind. Each
check below names what differs; `repair=True` makes the records follow the truth:

- `ferflow.alias` tags that are not what the aliases give (`Registry.alias_tag_drift`);
- a decided version without its gate reason;
- promotion.json naming a version the registry does not hold, or a decision or reason
  other than that version's tags (an empty reason included);
- promotion claims whose owner is provably gone (`lock.Owner.gone`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ferflow.evaluation import vocabulary as terms
from ferflow.tracking import lock, models
from ferflow.tracking.registry import UNRECORDED_REASON, Registry


@dataclass(frozen=True)
class Finding:
    """One difference, as a line, and whether it was repaired."""

    line: str
    repaired: bool


def check(
    registry: Registry, promotion: dict[str, Any] | None, repair: bool
) -> tuple[list[Finding], dict[str, Any] | None]:
    """The findings, and promotion.json as it should read when `repair` changed it (else None)."""
    from mlflow.exceptions import MlflowException

    tracker, name = registry.client, registry.name
    try:
        tracker.get_registered_model(name)
    except MlflowException as err:
        raise models.RegistryError(
            f"there is no registered model {name!r} to check ({models.registered_models(tracker)}); "
            "pass --model-name"
        ) from err
    findings = [*_alias_tags(registry, repair), *_reasons(tracker, name, repair)]
    found, fixed = _promotion_file(tracker, name, promotion, repair)
    return [*findings, *found, *_claims(tracker, name, repair)], fixed


def _alias_tags(registry: Registry, repair: bool) -> list[Finding]:
    drift = registry.sync_alias_tags() if repair else registry.alias_tag_drift()
    return [
        Finding(
            f"version {version}: tag {terms.ALIAS_TAG} says {have or 'nothing'}, "
            f"the aliases say {wanted or 'none'}",
            repair,
        )
        for version, _, have, wanted in drift
    ]


def _reasons(tracker: Any, name: str, repair: bool) -> list[Finding]:
    findings = []
    for found in tracker.search_model_versions(f"name='{name}'"):
        tags = found.tags or {}
        if terms.DECISION_TAG in tags and not tags.get(terms.REASON_TAG):
            if repair:
                reason = UNRECORDED_REASON
                tracker.set_model_version_tag(name, found.version, terms.REASON_TAG, reason)
            findings.append(
                Finding(
                    f"version {found.version}: decided ({tags[terms.DECISION_TAG]}) without a "
                    f"gate reason ({terms.REASON_TAG})",
                    repair,
                )
            )
    return findings


def _promotion_file(
    tracker: Any, name: str, promotion: dict[str, Any] | None, repair: bool
) -> tuple[list[Finding], dict[str, Any] | None]:
    if promotion is None or promotion.get("model_name", name) != name:
        return [], None
    from mlflow.exceptions import MlflowException

    version = str(promotion.get("version"))
    try:
        tags = tracker.get_model_version(name, version).tags or {}
    except MlflowException:
        line = f"promotion.json names version {version}, which {name!r} does not hold: rerun register"
        return [Finding(line, False)], None
    recorded = {
        "decision": tags.get(terms.DECISION_TAG),
        "reason": tags.get(terms.REASON_TAG) or UNRECORDED_REASON,
    }
    if recorded["decision"] is None:
        line = f"promotion.json names version {version}, which has no gate decision tag: rerun register"
        return [Finding(line, False)], None
    findings = [
        Finding(
            f"promotion.json: {key} {promotion.get(key)!r}, version {version} says {recorded[key]!r}",
            repair,
        )
        for key in ("decision", "reason")
        if promotion.get(key) != recorded[key]
    ]
    return findings, ({**promotion, **recorded} if repair and findings else None)


def _claims(tracker: Any, name: str, repair: bool) -> list[Finding]:
    now, findings = time.time(), []
    for owner in lock.claims(tracker, name):
        if owner.gone(now):
            if repair:
                tracker.delete_registered_model_tag(name, owner.key)
            line = f"promotion claim {owner.key}: its owner (process {owner.pid} on {owner.host}) is gone"
            findings.append(Finding(line, repair))
    return findings
