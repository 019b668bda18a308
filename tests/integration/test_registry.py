"""Registration and the promotion gate against a real MLflow server with S3 artifacts.

A session-scoped `mlflow server` (SQLite backend store in a temporary folder) proxies its
artifacts to a bucket on moto's S3 server, so every model upload and download goes
through boto3 and the artifact proxy exactly as in production. Each test uses its own
registered model name, so the tests share the server without seeing each other's aliases.

The "pipeline runs" here use `centre_model` (tests/unit/test_evaluate.py): a tiny Keras
model whose accuracy on the constant-brightness dataset is known by construction.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from ferflow.commands import models as model_commands
from ferflow.evaluation import evaluate as ev
from ferflow.stages import Layout, registration
from ferflow.stages.evaluation import evaluate
from ferflow.tracking import models, store
from ferflow.tracking.registry import Registry
from tests.conftest import NO_FLOORS, small_params
from tests.servers import (
    LOCALHOST,
    background_server,
    free_port,
    mlflow_server,
    moto_s3_server,
    stop_process_group,
)
from tests.unit.test_evaluate import CENTRES, centre_model, write_constant_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PERFECT = CENTRES
SWAPPED = (CENTRES[1], CENTRES[0], *CENTRES[2:])  # confuses angry and disgust: accuracy 5/7


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    with moto_s3_server() as s3, mlflow_server(root, s3, bucket="ferflow-mlflow") as uri:
        yield uri


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return write_constant_dataset(tmp_path_factory.mktemp("data") / "prepared")


@pytest.fixture
def params(mlflow_uri, monkeypatch):
    """The test params with a registered model name of this test's own."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    return small_params(f"register.model_name=fer-test-{uuid.uuid4().hex[:8]}")


def layout_of(root: Path, data_dir: Path) -> Layout:
    return Layout(raw=data_dir, prepared=data_dir, models=root / "models", reports=root / "reports")


def pipeline_run(params, root: Path, data_dir: Path, centres) -> tuple[Path, Path]:
    """What train + evaluate leave behind: model.keras, run.json (model logged), reports."""
    where = layout_of(root, data_dir)
    centre_model(centres, where.model_file)
    uri = store.tracking_uri(params)
    model_uri, run_id = models.log_model_file(
        uri, where.model_file, params.tracking.experiment, 48, len(params.base.classes), None
    )
    experiment = store.client(uri).get_run(run_id).info.experiment_id
    store.write_run_info(where.run_file, store.RunInfo(run_id, experiment, uri, model_uri))
    evaluate(params, where)
    return where.models, where.reports


def register(params, root: Path, data_dir: Path, centres) -> dict:
    pipeline_run(params, root, data_dir, centres)
    return registration.register(params, layout_of(root, data_dir))


def test_the_first_run_meeting_the_floors_becomes_champion(params, tmp_path, data_dir):
    decision = register(params, tmp_path, data_dir, SWAPPED)

    assert decision["decision"] == "promoted"
    assert model_commands.aliases(params)["champion"] == decision["version"]
    assert json.loads((tmp_path / "reports" / "promotion.json").read_text())["version"] == decision["version"]


def test_the_decision_is_tagged_on_the_version_and_the_run(params, tmp_path, data_dir):
    from mlflow import MlflowClient

    decision = register(params, tmp_path, data_dir, SWAPPED)

    client = MlflowClient()
    version = client.get_model_version(params.registry.model_name, decision["version"])
    assert version.tags["ferflow.gate.decision"] == "promoted"
    assert version.tags["ferflow.params_digest"] == params.digest()
    assert "accuracy" in version.description
    assert client.get_run(decision["run_id"]).data.tags["ferflow.gate.reason"] == decision["reason"]
    assert client.get_run(decision["run_id"]).data.metrics["test.accuracy"] == pytest.approx(5 / 7)


def test_a_worse_challenger_leaves_the_champion_alone(params, tmp_path, data_dir):
    first = register(params, tmp_path / "a", data_dir, PERFECT)

    second = register(params, tmp_path / "b", data_dir, SWAPPED)

    assert second["decision"] == "not-promoted"
    assert second["champion"]["version"] == first["version"]
    assert model_commands.aliases(params) == {
        "champion": first["version"],
        "challenger": second["version"],
        "previous-champion": None,
    }


def test_a_challenger_under_a_floor_is_not_promoted_without_a_champion(
    mlflow_uri, monkeypatch, tmp_path, data_dir
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    params = small_params(f"register.model_name=fer-test-{uuid.uuid4().hex[:8]}", "register.min_accuracy=0.9")

    decision = register(params, tmp_path, data_dir, SWAPPED)

    assert decision["decision"] == "not-promoted"
    assert "register.min_accuracy" in decision["reason"]
    assert model_commands.aliases(params)["champion"] is None


def test_ferflow_register_twice_on_the_same_model_registers_it_once(
    params, tmp_path, data_dir, capsys, monkeypatch, mlflow_uri
):
    from mlflow import MlflowClient

    from ferflow.cli import main

    # given a trained and evaluated model, and a tracking URI with a password in it
    model_dir, report_dir = pipeline_run(params, tmp_path, data_dir, SWAPPED)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri.replace("http://", "http://bob:hunter2@"))
    name = params.registry.model_name
    args = [
        "register",
        "--models",
        str(model_dir),
        "--reports",
        str(report_dir),
        "--data",
        str(data_dir),
    ]
    args += [f"--set=register.model_name={name}", *(f"--set={override}" for override in NO_FLOORS)]
    # when `ferflow register` runs twice
    assert main(args) == 0
    assert main(args) == 0
    # then one version exists, both runs report it, and the password was printed nowhere
    assert len(MlflowClient(mlflow_uri).search_model_versions(f"name='{name}'")) == 1
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert out[0] == out[1] and out[0].startswith(f"{name} version 1:")
    assert "hunter2" not in captured.out + captured.err
    assert "View run" not in captured.out


# What MLflow itself prints when it registers a model or waits for a version (not ferflow's).
MLFLOW_REGISTRY_LINES = ("Successfully registered", "Created version", "already exists", "Waiting up to")


def mlflow_lines(stderr: str) -> list[str]:
    """The lines of `stderr` MLflow wrote: its registration lines, its loggers' lines."""
    lines = stderr.splitlines()
    return [line for line in lines if " mlflow." in line or any(s in line for s in MLFLOW_REGISTRY_LINES)]


def ferflow_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`ferflow ARGS` in a process of its own: its stdout and stderr as a person sees them."""
    command = [sys.executable, "-m", "ferflow.cli", *args]
    return subprocess.run(command, env=dict(os.environ), capture_output=True, text=True, timeout=600)


def test_ferflow_register_prints_no_mlflow_lines_and_links_the_version(params, tmp_path, data_dir):
    from mlflow import MlflowClient

    # given a trained and evaluated model whose registered model does not exist yet
    model_dir, report_dir = pipeline_run(params, tmp_path, data_dir, SWAPPED)
    run = store.read_run_info(model_dir / "run.json")
    name = params.registry.model_name
    # when `ferflow register` runs
    done = ferflow_cli(
        "register",
        *("--models", str(model_dir), "--reports", str(report_dir), "--data", str(data_dir)),
        f"--set=register.model_name={name}",
        *(f"--set={override}" for override in NO_FLOORS),
    )
    # then MLflow printed none of its registration lines, ferflow one line of its own
    assert done.returncode == 0, done.stderr
    assert mlflow_lines(done.stderr) == [], done.stderr
    assert f"registered {run.model_uri} (run {run.run_id}) as {name} version 1" in done.stderr
    # and the version is READY, linked to the run and to the logged model, as before
    client = MlflowClient()
    version = client.get_model_version(name, "1")
    assert (version.status, version.run_id, version.source) == ("READY", run.run_id, run.model_uri)
    logged = client.get_logged_model(run.model_uri.removeprefix("models:/"))
    listed = json.loads(logged.tags["mlflow.modelVersions"])
    assert [(item["name"], str(item["version"])) for item in listed] == [(name, "1")]


def test_ferflow_promote_and_rollback_print_no_mlflow_lines(params):
    from mlflow import MlflowClient

    # given a registered model with two versions (of a run's artifacts)
    name, client = params.registry.model_name, MlflowClient()
    run = client.create_run(client.create_experiment(f"{name}-moves"))
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
    # when version 1 then version 2 are promoted by hand, and then rolled back
    moves = [("promote", "--version", "1"), ("promote", "--version", "2"), ("promote", "--rollback")]
    done = [ferflow_cli(*move, f"--set=register.model_name={name}") for move in moves]
    # then each printed its one line and MLflow printed nothing
    assert [(d.returncode, mlflow_lines(d.stderr), len(d.stdout.splitlines())) for d in done] == [
        (0, [], 1)
    ] * 3
    assert model_commands.aliases(params) == {"champion": "1", "challenger": "2", "previous-champion": "2"}


def test_rollback_restores_the_previous_champion(params, tmp_path, data_dir):
    first = register(params, tmp_path / "a", data_dir, SWAPPED)
    second = register(params, tmp_path / "b", data_dir, PERFECT)
    assert model_commands.aliases(params)["champion"] == second["version"]

    model_commands.rollback(params)

    assert model_commands.aliases(params)["champion"] == first["version"]
    assert model_commands.aliases(params)["previous-champion"] == second["version"]


def test_a_crash_during_registration_moves_no_alias(params, tmp_path, data_dir, monkeypatch):
    first = register(params, tmp_path / "a", data_dir, SWAPPED)
    before = model_commands.aliases(params)

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash while tagging")

    monkeypatch.setattr(Registry, "tag_decision", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        register(params, tmp_path / "b", data_dir, PERFECT)

    assert model_commands.aliases(params) == before
    assert before["champion"] == first["version"]


def test_a_crash_while_evaluating_the_champion_moves_no_alias(params, tmp_path, data_dir, monkeypatch):
    register(params, tmp_path / "a", data_dir, SWAPPED)
    model_dir, report_dir = pipeline_run(params, tmp_path / "b", data_dir, PERFECT)
    before = model_commands.aliases(params)

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash in evaluation")

    monkeypatch.setattr(ev, "evaluate_model", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        registration.register(params, Layout(data_dir, data_dir, model_dir, report_dir))

    assert model_commands.aliases(params) == before


def test_two_racing_promotions_end_with_exactly_one_champion(params, tmp_path, data_dir):
    # given: a champion, and two equally good challengers ready at the same time
    register(params, tmp_path / "base", data_dir, SWAPPED)
    ready = [pipeline_run(params, tmp_path / name, data_dir, PERFECT) for name in ("x", "y")]
    decisions: list[dict] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def promote(model_dir: Path, report_dir: Path) -> None:
        start.wait()
        try:
            decisions.append(registration.register(params, Layout(data_dir, data_dir, model_dir, report_dir)))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=promote, args=paths) for paths in ready]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    # then: one wins; the other was compared with the winner, and ties do not promote
    assert errors == []
    promoted = [d for d in decisions if d["decision"] == "promoted"]
    refused = [d for d in decisions if d["decision"] == "not-promoted"]
    assert len(promoted) == 1 and len(refused) == 1
    assert model_commands.aliases(params)["champion"] == promoted[0]["version"]
    assert refused[0]["champion"]["version"] == promoted[0]["version"]


def test_an_artifact_upload_failure_registers_nothing(tmp_path, data_dir, monkeypatch):
    from mlflow import MlflowClient

    # given: a server of its own whose S3 endpoint dies before the model is logged
    port = free_port()
    s3 = f"http://{LOCALHOST}:{port}"
    moto = [sys.executable, "-m", "moto.server", "-H", LOCALHOST, "-p", str(port)]
    with background_server(moto, s3) as s3_process, mlflow_server(tmp_path / "server", s3, "doomed") as uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        params = small_params("register.model_name=fer-doomed")
        model_dir, report_dir = tmp_path / "models", tmp_path / "reports"
        centre_model(PERFECT, model_dir / "model.keras")
        evaluate(params, Layout(data_dir, data_dir, model_dir, report_dir))
        stop_process_group(s3_process)

        with pytest.raises(Exception):  # noqa: B017 - whatever the transport raises
            registration.register(params, Layout(data_dir, data_dir, model_dir, report_dir))

        assert MlflowClient(uri).search_model_versions("name='fer-doomed'") == []
        assert not (report_dir / "promotion.json").exists()


def test_the_champion_serves_through_stock_pyfunc_and_ferflow_predict(params, tmp_path, data_dir):
    import mlflow
    import numpy as np
    from PIL import Image

    from ferflow.commands.models import predict

    register(params, tmp_path, data_dir, PERFECT)
    uri = f"models:/{params.registry.model_name}@champion"
    happy = CENTRES[3]
    Image.new("RGB", (96, 96), (int(happy),) * 3).save(tmp_path / "happy.jpg")

    probs = mlflow.pyfunc.load_model(uri).predict(np.full((3, 48, 48), happy, np.float32))
    (prediction,) = predict([tmp_path / "happy.jpg"], params)  # default model: the champion

    assert probs.shape == (3, 7)
    assert probs.argmax(axis=1).tolist() == [3, 3, 3]
    assert (prediction.class_name, prediction.emoji) == ("happy", "😊")
