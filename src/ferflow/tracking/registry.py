"""One registered model (`register.model_name`) on one MLflow client: its versions, aliases
and tags, and the promotion lock every alias move holds.

Every successful pipeline run registers its model as a new version; the gate
(ferflow.evaluation.gate) decides whether `champion` moves to it. The aliases:

- `champion`: what serving loads (`models:/NAME@champion`);
- `challenger`: the latest registered version;
- `previous-champion`: the rollback target.

Aliases move only inside the promotion lock (`Registry.locked`, ferflow.tracking.lock).
`connect(params)` opens `register.model_name` on a tracking session: one client for the
runs and the registry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

from ferflow.config import Params
from ferflow.evaluation import vocabulary as terms
from ferflow.tracking.lock import Claim, promotion_lock
from ferflow.tracking.models import MISSING, RegistryError, version_uri
from ferflow.tracking.session import Session
from ferflow.tracking.session import connect as connect_session

log = logging.getLogger(__name__)

# which alias a version's `ferflow.alias` tag names when it holds several
ALIAS_ORDER = (terms.CHAMPION, terms.PREVIOUS, terms.CHALLENGER)
# The reason of a decision taken by a registration cut short before it wrote one (versions
# registered before reasons were written first): never an empty reason.
UNRECORDED_REASON = "the gate's reason was not recorded: the registration that decided was cut short"
MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # on a logged model: its registered versions
AWAIT_READY_S = 300  # as long as mlflow.register_model waits for a new version

Drift = list[tuple[str, str | None, str | None, str | None]]


def connect(params: Params) -> Registry:
    """`register.model_name` on a new tracking session (`ferflow.tracking.connect`)."""
    return Registry(connect_session(params), params.registry.model_name, params.registry.lock_timeout_s)


class Registry:
    """The registered model `name` through the client of `session`; alias moves wait at most
    `lock_timeout_s` for the promotion lock."""

    def __init__(self, session: Session, name: str, lock_timeout_s: float) -> None:
        self.session = session
        self.client = session.client
        self.name = name
        self.lock_timeout_s = lock_timeout_s

    def version_uri(self, version: str) -> str:
        return version_uri(self.name, version)

    @contextlib.contextmanager
    def locked(self) -> Iterator[Claim]:
        """The promotion lock of this model, held for the `with` block."""
        with promotion_lock(self.client, self.name, self.lock_timeout_s) as claim:
            yield claim

    # --- versions ------------------------------------------------------------------------

    def register(self, model_uri: str, run_id: str, tags: Mapping[str, str]) -> str:
        """Register `model_uri` (logged from `run_id`) as a new READY version; its number.

        As `mlflow.register_model` (MLflow 3 `_register_model`) does, minus its stderr lines
        ("Successfully registered model", "Created version", its wait's "Waiting up to 300 s").
        """
        from mlflow.exceptions import MlflowException

        name, tracker = self.name, self.client
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

    def delete(self, version: str) -> None:
        self.client.delete_model_version(self.name, version)

    def versions_of_run(self, run_id: str) -> list[tuple[str, dict[str, str]]]:
        """(version, tags) of every version registered from `run_id`, oldest first."""
        found = self.client.search_model_versions(f"name='{self.name}' and run_id='{run_id}'")
        return sorted(((str(v.version), dict(v.tags or {})) for v in found), key=lambda item: int(item[0]))

    def require_version(self, version: str) -> str:
        """`version` when the model has it, else a RegistryError listing the versions that exist."""
        version = str(version).strip()
        found = self.client.search_model_versions(f"name='{self.name}'")
        existing = sorted((str(v.version) for v in found), key=int)
        if version in existing:
            return version
        listed = ", ".join(existing) if existing else "none yet (run the pipeline first)"
        raise RegistryError(
            f"registered model {self.name!r} has no version {version!r}; its versions: {listed}"
        )

    def describe(self, version: str, run_id: str, card: str, summary: str, model_description: str) -> None:
        """model_card.md on the run, its summary as the version's description."""
        self.client.log_text(run_id, card, "model_card.md")
        self.client.update_model_version(self.name, version, summary)
        self.client.update_registered_model(self.name, model_description)

    # --- aliases -------------------------------------------------------------------------

    def alias(self, alias: str) -> str | None:
        """The version `alias` points at, or None when unset or no such model (a refusal raises)."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(self.name, alias).version)
        except MlflowException as err:
            if err.error_code in MISSING:
                return None
            raise

    def aliases(self) -> dict[str, str | None]:
        """Which version each alias points at (None when unset)."""
        return {alias: self.alias(alias) for alias in terms.ALIASES}

    def move_aliases(self, version: str, promoted: bool) -> str | None:
        """Set challenger (and, when promoted, previous-champion then champion); returns the
        old champion. Call it inside `locked()`."""
        old = self.alias(terms.CHAMPION)
        if promoted:
            if old is not None and old != version:
                self.client.set_registered_model_alias(self.name, terms.PREVIOUS, old)
            self.client.set_registered_model_alias(self.name, terms.CHAMPION, version)
        self.client.set_registered_model_alias(self.name, terms.CHALLENGER, version)
        self.sync_alias_tags()
        return old

    def alias_tag_drift(self) -> Drift:
        """(version, its run, `ferflow.alias` tag it has, the one the aliases give it) for every
        version whose tag says something else than the aliases: the tag names the most
        important alias the version holds (champion, previous-champion, challenger), none if
        it holds none."""
        held = self.client.get_registered_model(self.name).aliases or {}
        wanted = {str(held[alias]): alias for alias in reversed(ALIAS_ORDER) if alias in held}
        drift = []
        for found in self.client.search_model_versions(f"name='{self.name}'"):
            version, have = str(found.version), (found.tags or {}).get(terms.ALIAS_TAG)
            if have != wanted.get(version):
                drift.append((version, found.run_id, have, wanted.get(version)))
        return sorted(drift, key=lambda item: int(item[0]))

    def sync_alias_tags(self) -> Drift:
        """Make the `ferflow.alias` tags of the versions (and their runs) say what the aliases
        say: derived after every alias move, never written ahead of one. Returns what changed."""
        drift = self.alias_tag_drift()
        tracker = self.client
        for version, run_id, _, wanted in drift:
            if wanted is None:
                tracker.delete_model_version_tag(self.name, version, terms.ALIAS_TAG)
            else:
                tracker.set_model_version_tag(self.name, version, terms.ALIAS_TAG, wanted)
            if run_id:
                with contextlib.suppress(Exception):  # the run may be deleted, or hold several versions
                    if wanted is None:
                        tracker.delete_tag(run_id, terms.ALIAS_TAG)
                    else:
                        tracker.set_tag(run_id, terms.ALIAS_TAG, wanted)
        return drift

    # --- decisions -----------------------------------------------------------------------

    def tag_decision(self, version: str, run_id: str, decision: Mapping[str, Any]) -> None:
        """The gate's decision and reason on the version and on its run: written before any
        alias moves, so an interrupted registration is completed, not repeated, by a rerun."""
        champion = decision.get("champion") or {}
        before = str(champion.get("version") or "")
        self.client.set_model_version_tag(self.name, version, terms.CHAMPION_BEFORE_TAG, before)
        # The reason first: the decision tag marks the version decided, so a decided version
        # always has its reason (the `ferflow.alias` tags follow the aliases: sync_alias_tags).
        reason = decision["reason"][:5000] or "-"
        for key, value in ((terms.REASON_TAG, reason), (terms.DECISION_TAG, decision["decision"])):
            self.client.set_model_version_tag(self.name, version, key, value)
            self.client.set_tag(run_id, key, value)

    def complete_decision_tags(self, version: str, run_id: str, tags: Mapping[str, str]) -> str:
        """A decided version found again (a registration cut short, rerun): give it the reason
        tag it may lack and alias tags that follow the aliases; returns its reason."""
        reason = tags.get(terms.REASON_TAG) or UNRECORDED_REASON
        if not tags.get(terms.REASON_TAG):
            self.client.set_model_version_tag(self.name, version, terms.REASON_TAG, reason)
            with contextlib.suppress(Exception):
                self.client.set_tag(run_id, terms.REASON_TAG, reason)
        self.sync_alias_tags()
        return reason

    # --- manual moves --------------------------------------------------------------------

    def rollback(self) -> dict[str, Any]:
        """Make `previous-champion` the champion again, in one step.

        The two aliases swap, so a second rollback undoes the first.
        """
        nothing = f"{self.name!r} has no {terms.PREVIOUS!r} alias: there is nothing to roll back to"
        if self.alias(terms.PREVIOUS) is None:  # at once, without waiting for the lock
            raise RegistryError(nothing)
        with self.locked() as claim:
            current, previous = self.alias(terms.CHAMPION), self.alias(terms.PREVIOUS)
            if previous is None:  # another process rolled back while this one waited
                raise RegistryError(nothing)
            claim.confirm()
            self.client.set_registered_model_alias(self.name, terms.CHAMPION, previous)
            if current is not None:
                self.client.set_registered_model_alias(self.name, terms.PREVIOUS, current)
            reason = f"rollback: champion {current} -> {previous}"
            self._tag_manual_move(previous, "rollback", reason)
        log.info("%s: %s", self.name, reason)
        return {"model_name": self.name, "champion": previous, terms.PREVIOUS: current, "reason": reason}

    def promote(self, version: str) -> dict[str, Any]:
        """Make `version` the champion by hand (no gate); the old one becomes previous-champion."""
        version = self.require_version(version)
        with self.locked() as claim:
            claim.confirm()
            old = self.move_aliases(version, promoted=True)
            reason = f"promoted by hand (ferflow promote --version {version}); previous champion {old}"
            self._tag_manual_move(version, "promoted-by-hand", reason)
        return {"model_name": self.name, "champion": version, terms.PREVIOUS: old, "reason": reason}

    def _tag_manual_move(self, champion: str, move: str, reason: str) -> None:
        """A manual move's own tags on the new champion: the gate's stay as the gate decided."""
        self.client.set_model_version_tag(self.name, champion, terms.MANUAL_MOVE_TAG, move)
        self.client.set_model_version_tag(self.name, champion, terms.MANUAL_REASON_TAG, reason)
        self.sync_alias_tags()
