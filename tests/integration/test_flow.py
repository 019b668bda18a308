"""The retraining flow end to end in Prefect's local mode, on tiny synthetic data.

One workspace for the module (training is the slow part): the first test trains and
registers, the next ones reuse it. Prefect state lives in the workspace's .prefect/,
MLflow in its own SQLite store.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import PARAMS_FILE, TINY_PIPELINE

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(3600)]

TINY = [
    "data.raw=raw",
    *TINY_PIPELINE,
    "register.model_name=fer-flow-test",
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder with params.yaml and tiny synthetic raw data; Prefect and MLflow local to it."""
    from ferflow.commands.data import synthesize
    from ferflow.config import load_params

    root = tmp_path_factory.mktemp("flow")
    shutil.copy(PARAMS_FILE, root / "params.yaml")
    synthesize(load_params(root / "params.yaml", TINY), root / "raw")
    saved = dict(os.environ)
    os.environ.update(
        PREFECT_HOME=str(root / ".prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="600",
        MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
    )
    os.environ.pop("PREFECT_API_URL", None)
    yield root
    os.environ.clear()
    os.environ.update(saved)


def run_flow(root: Path, *extra: str, **options):
    from flows.retrain import retrain

    return retrain(params_file="params.yaml", overrides=[*TINY, *extra], root=str(root), **options)


def mlflow_client(root: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_flow_trains_registers_and_promotes(workspace):
    decision = run_flow(workspace)

    promotion = json.loads((workspace / "reports" / "promotion.json").read_text())
    assert decision["decision"] == "promoted"  # the first model has no champion to beat
    assert promotion["version"] == decision["version"]
    champion = mlflow_client(workspace).get_model_version_by_alias("fer-flow-test", "champion")
    assert str(champion.version) == decision["version"]


def test_unchanged_rerun_skips_cached_stages_and_registers_nothing(workspace):
    model = workspace / "models" / "model.keras"
    before = (model.stat().st_mtime_ns, (workspace / "models" / "head.keras").stat().st_mtime_ns)

    decision = run_flow(workspace)

    after = (model.stat().st_mtime_ns, (workspace / "models" / "head.keras").stat().st_mtime_ns)
    assert after == before  # neither training phase ran again
    versions = mlflow_client(workspace).search_model_versions("name='fer-flow-test'")
    assert [str(v.version) for v in versions] == [decision["version"]]


def test_failure_after_training_marks_the_mlflow_run_failed(workspace, monkeypatch):
    def broken_evaluation(*_args, **_kwargs):
        raise RuntimeError("evaluation exploded")

    monkeypatch.setattr("ferflow.stages.evaluation.evaluate", broken_evaluation)

    with pytest.raises(RuntimeError, match="evaluation exploded"):
        run_flow(workspace, "finetune.epochs=2")  # finetune runs again in this flow run

    run_id = json.loads((workspace / "models" / "run.json").read_text())["run_id"]
    assert mlflow_client(workspace).get_run(run_id).info.status == "FAILED"


def test_contract_failure_stops_before_training_with_the_report_attached(workspace):
    from prefect import get_client

    from ferflow.stages import DataContractError

    shutil.rmtree(workspace / "models")

    with pytest.raises(DataContractError):
        run_flow(workspace, "validate.min_rows={train: 100000, val: 10, test: 10}")

    assert not (workspace / "models").exists()
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
    assert "data-contract-failure" in {a.key for a in artifact}
