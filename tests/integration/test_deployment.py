"""The scheduled deployment with every real part, as processes on 127.0.0.1.

A Prefect server (SQLite), an MLflow server whose artifacts go to a moto S3 bucket, a
DVC remote in another bucket of the same S3, `infra/deploy.sh` (work pools +
`prefect deploy --all`) and a process worker. Two runs of the deployment are triggered
at once: they must not overlap (concurrency limit 1), both complete, the data goes to the
DVC remote, a model is registered and promoted, and the buckets hold the MLflow
artifacts and the DVC objects.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PARAMS_FILE, REPO, TINY_PIPELINE
from tests.servers import (
    DUMMY_AWS_ENV,
    aws_test_credentials,
    create_bucket,
    free_port,
    mlflow_server,
    moto_s3_server,
    prefect_env,
    prefect_server,
    prefect_worker,
)

TINY = [
    "data.raw=data/raw/synthetic",
    *TINY_PIPELINE,
    "register.model_name=fer-deploy-test",
]
DVC_BUCKET = "ferflow-data"
MLFLOW_BUCKET = "mlflow"
RUN_TIMEOUT_S = 3600


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def make_workspace(root: Path) -> Path:
    """A git + DVC repository with the flow code, prefect.yaml and tiny synthetic data."""
    from ferflow.commands.data import synthesize
    from ferflow.config import load_params
    from ferflow.data.versioning import add_dataset

    repo = root / "repo"
    repo.mkdir()
    for folder in ("flows", "tasks", "infra"):
        shutil.copytree(REPO / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("prefect.yaml",):
        shutil.copy(REPO / name, repo / name)
    shutil.copy(PARAMS_FILE, repo / "params.yaml")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([bin_path("dvc"), "init", "-q"], cwd=repo, check=True)
    params = load_params(repo / "params.yaml", TINY)
    faces = synthesize(params, root / "faces")
    add_dataset(faces, params, dest=repo / "data/raw/synthetic", repo_root=repo)
    return repo


def wait_for_runs(client, run_ids, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = [client.read_flow_run(run_id) for run_id in run_ids]
        if all(run.state and run.state.is_final() for run in runs):
            return runs
        time.sleep(5)
    raise TimeoutError(f"flow runs {run_ids} did not finish within {timeout_s} s")


def s3_keys(endpoint: str, bucket: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 1200)
def test_deployment_runs_on_a_worker_registers_and_never_overlaps(tmp_path):
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from ferflow.config import load_params

    defaults = load_params(PARAMS_FILE)
    repo = make_workspace(tmp_path)
    home = tmp_path / "prefect-home"
    with (
        aws_test_credentials(),
        moto_s3_server() as s3,
        mlflow_server(tmp_path / "mlflow", s3, bucket=MLFLOW_BUCKET) as mlflow_uri,
        prefect_server(home) as api_url,
    ):
        create_bucket(s3, DVC_BUCKET)
        env = {
            **DUMMY_AWS_ENV,
            **prefect_env(home, api_url),
            "MLFLOW_TRACKING_URI": mlflow_uri,
            "AWS_ENDPOINT_URL": s3,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PREFECT": bin_path("prefect"),
        }
        subprocess.run(["bash", "infra/deploy.sh"], cwd=repo, env={**os.environ, **env}, check=True)

        with (
            prefect_worker(defaults.flow.work_pool, home, api_url, env=env),
            temporary_settings({PREFECT_API_URL: api_url}),
            get_client(sync_client=True) as client,
        ):
            deployment = client.read_deployment_by_name(f"ferflow-retrain/{defaults.flow.deployment}")
            assert deployment.schedules[0].schedule.cron == defaults.flow.schedule_cron
            run_ids = [
                client.create_flow_run_from_deployment(
                    deployment.id,
                    parameters={"overrides": TINY, "pull_data": pull, "push_data": True},
                ).id
                for pull in (False, True)
            ]
            runs = wait_for_runs(client, run_ids, RUN_TIMEOUT_S)

        assert [run.state.type.value for run in runs] == ["COMPLETED", "COMPLETED"]
        first, second = sorted(runs, key=lambda run: run.start_time)
        assert first.end_time <= second.start_time  # never two retrainings at once
        champion = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri).get_model_version_by_alias(
            "fer-deploy-test", "champion"
        )
        assert str(champion.version) == "1"  # the second run reused the cache: nothing new to register
        assert any(key.startswith("dvc/") for key in s3_keys(s3, DVC_BUCKET))
        assert any(key.startswith("mlflow/") for key in s3_keys(s3, MLFLOW_BUCKET))


@pytest.mark.integration
def test_unreachable_prefect_server_fails_clearly_and_trains_nothing(tmp_path):
    shutil.copy(PARAMS_FILE, tmp_path / "params.yaml")
    dead = f"http://127.0.0.1:{free_port()}/api"

    result = subprocess.run(
        [bin_path("ferflow"), "run"],
        cwd=tmp_path,
        env={**os.environ, "PREFECT_API_URL": dead, "PREFECT_HOME": str(tmp_path / ".prefect")},
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 2
    assert f"Prefect server at PREFECT_API_URL={dead} is unreachable" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "models").exists() and not (tmp_path / "mlflow").exists()
