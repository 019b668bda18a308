"""Issue #24, item 4: the registry's metadata says what its aliases say.

`ferflow.alias` tags follow the aliases (set after each move, dropped when a version holds
none), a decided version always has its gate reason (promotion.json never says reason ""),
and `ferflow runs check` reports drift and `--repair` removes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ferflow.commands import models as model_commands
from ferflow.evaluation import vocabulary as terms
from ferflow.stages import registration
from ferflow.tracking import models, reader, store
from ferflow.tracking import registry as registries
from ferflow.tracking.registry import UNRECORDED_REASON, Registry
from ferflow.tracking.session import Session
from tests.conftest import REPO, small_params, sqlite_registry
from tests.unit.test_operator_faults import evaluated_model  # noqa: F401 (a fixture)

mlflow = pytest.importorskip("mlflow")

NAME = "fer-meta"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A SQLite registry with four versions of fer-meta, version 2 champion."""
    return sqlite_registry(tmp_path, monkeypatch, NAME, 4)


def alias_tags(client) -> dict[str, str | None]:
    return {
        str(v.version): (v.tags or {}).get(terms.ALIAS_TAG)
        for v in client.search_model_versions(f"name='{NAME}'")
    }


def test_alias_tags_follow_the_aliases_through_promotions_and_rollbacks(registry):
    _, client = registry
    params = small_params(f"register.model_name={NAME}")
    # given stale tags, as older registrations left them: versions 1 and 3 say champion
    for version in ("1", "3"):
        client.set_model_version_tag(NAME, version, terms.ALIAS_TAG, "champion")
    # when versions are promoted by hand, then rolled back
    model_commands.promote(params, "3")
    assert alias_tags(client) == {"1": None, "2": "previous-champion", "3": "champion", "4": None}
    model_commands.promote(params, "4")
    assert alias_tags(client) == {"1": None, "2": None, "3": "previous-champion", "4": "champion"}
    model_commands.rollback(params)
    # then only the versions holding an alias are tagged, with that alias
    assert alias_tags(client) == {"1": None, "2": None, "3": "champion", "4": "previous-champion"}


def _ferflow(tmp_path, uri: str, *argv: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "ferflow.cli", "runs", "check", *argv]
    command += ["--model-name", NAME, "--params", str(REPO / "params.yaml")]
    command += ["--reports", str(tmp_path / "reports")]
    env = {**ENV, "MLFLOW_TRACKING_URI": uri}
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # three CLI processes: 20-70 s on 2 busy cores
def test_runs_check_reports_drift_and_repair_removes_it(registry, tmp_path):
    uri, client = registry
    # given drift: a stale alias tag (v1), a champion without one (v2), a decision without
    # its reason (v3), and promotion.json with an empty reason and another decision for v3
    client.set_model_version_tag(NAME, "1", terms.ALIAS_TAG, "champion")
    client.set_model_version_tag(NAME, "3", terms.DECISION_TAG, "not-promoted")
    reports = tmp_path / "reports"
    reports.mkdir()
    stale = {"model_name": NAME, "version": "3", "decision": "promoted", "reason": "", "run_id": "r"}
    (reports / "promotion.json").write_text(json.dumps(stale))
    # when `ferflow runs check` runs
    checked = _ferflow(tmp_path, uri)
    # then it names each difference and exits 1, changing nothing
    assert checked.returncode == 1, checked.stderr
    drift = [line for line in checked.stdout.splitlines() if line.startswith("drift: ")]
    assert len(drift) == 5, checked.stdout
    assert "version 1: tag ferflow.alias says champion, the aliases say none" in checked.stdout
    assert "version 2: tag ferflow.alias says nothing, the aliases say champion" in checked.stdout
    assert "version 3: decided (not-promoted) without a gate reason" in checked.stdout
    assert "promotion.json: reason ''" in checked.stdout
    assert alias_tags(client)["1"] == "champion"
    # when it runs with --repair
    repaired = _ferflow(tmp_path, uri, "--repair")
    # then the records follow the aliases, and a second check finds nothing
    assert repaired.returncode == 0, repaired.stderr
    assert repaired.stdout.count("repaired: ") == 5
    assert alias_tags(client) == {"1": None, "2": "champion", "3": None, "4": None}
    assert client.get_model_version(NAME, "3").tags[terms.REASON_TAG] == UNRECORDED_REASON
    fixed = json.loads((reports / "promotion.json").read_text())
    assert (fixed["decision"], fixed["reason"]) == ("not-promoted", UNRECORDED_REASON)
    again = _ferflow(tmp_path, uri)
    assert again.returncode == 0 and "0 difference(s)" in again.stdout, again.stdout


def test_a_decision_written_without_its_reason_is_completed_with_one(evaluated_model):  # noqa: F811
    # given a registration killed between its decision tag and its reason tag (older order)
    params, layout, run_id = evaluated_model
    registry = registries.connect(params)
    model_uri = store.read_run_info(layout.run_file).model_uri
    version = registry.register(model_uri, run_id, {})
    registry.client.set_model_version_tag("fer-cut-short", version, terms.DECISION_TAG, "promoted")
    # when registration runs again
    decision = registration.register(params, layout)
    # then promotion.json and the version carry a reason, and the alias tag follows the alias
    recorded = json.loads(layout.promotion_file.read_text())
    assert recorded["reason"] == decision["reason"] == UNRECORDED_REASON
    tags = registry.client.get_model_version("fer-cut-short", version).tags
    assert tags[terms.REASON_TAG] == UNRECORDED_REASON
    assert tags[terms.ALIAS_TAG] == "champion"


def test_a_registration_records_its_reason_before_its_decision(registry, monkeypatch):
    # given a registry whose version-tag writes are recorded in order
    uri, client = registry
    tracker, written = store.client(uri), []
    record = tracker.set_model_version_tag
    monkeypatch.setattr(tracker, "set_model_version_tag", lambda *a: written.append(a[2]) or record(*a))
    run_id = client.create_run(client.create_experiment("x")).info.run_id
    # when the gate's decision is tagged
    registry = Registry(Session(uri, tracker, "x", 3600.0), NAME, 10)
    registry.tag_decision("4", run_id, {"decision": "promoted", "reason": "better"})
    # then the reason lands first: a version marked decided always has its reason
    assert written.index(terms.REASON_TAG) < written.index(terms.DECISION_TAG)


@pytest.mark.parametrize(
    ("reference", "said"),
    [
        ("models:/no-such-model@champion", "no-such-model"),
        ("models:/fer-test@no-such-alias", "no-such-alias"),
        ("models:/fer-test/9", "9"),
    ],
    ids=["model-name", "alias", "version"],
)
def test_a_reference_the_registry_lacks_fails_before_loading(reference, said, tmp_path, monkeypatch):
    # given a registry with versions 1-2 of fer-test
    _, client = sqlite_registry(tmp_path, monkeypatch, "fer-test", versions=2)
    # when a model the registry does not hold is asked for (a wrong --model-name, alias, version)
    with pytest.raises(models.RegistryError) as caught:
        reader.require_registered(reference, client)
    # then one message names the reference and what the registry does hold
    said_all = str(caught.value)
    assert said_all.startswith(reference) and said in said_all
    assert "Registered models: fer-test (champion: v2)" in said_all
    # and references it holds pass
    reader.require_registered("models:/fer-test@champion", client)
    reader.require_registered("models:/fer-test/1", client)
