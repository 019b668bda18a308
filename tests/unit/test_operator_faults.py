"""Issue #13, faults an operator meets, injected from the outside: a tracking server that
is down, a bad version number, a rollback's tags, a stale promotion lock, a model file the
safe mode refuses, a damaged backup. Each: one clear line, nothing moved, no traceback.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import pytest

from ferflow.cli import main
from ferflow.commands import models as model_commands
from ferflow.stages import registration
from ferflow.tracking import lock, models
from ferflow.tracking import registry as registry_module
from ferflow.training.backup import EpochBackup
from tests.conftest import REPO, small_params

mlflow = pytest.importorskip("mlflow")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- a tracking server that is down ---------------------------------------------------------


@pytest.mark.parametrize("command", [["train"], ["compare"], ["promote", "--rollback"], ["register"]])
def test_a_tracking_server_that_is_down_fails_at_once_with_one_masked_line(
    command, tmp_path, monkeypatch, capsys
):
    # given MLFLOW_TRACKING_URI with a password, pointing at a port nobody listens on
    if command == ["train"]:
        command = [*command, "--data", str(tmp_path)]  # an existing folder: the server is what fails
    port = closed_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://bob:hunter2@127.0.0.1:{port}")
    # when a command that talks to MLflow runs
    started = time.monotonic()
    code = main(command)
    elapsed = time.monotonic() - started
    # then it fails with one line naming the server, the password masked, nothing else run
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert f"127.0.0.1:{port} does not answer" in err[0] and "***" in err[0]
    assert "hunter2" not in err[0]
    assert elapsed < 30  # not minutes of retries (the figure is in docs/operations.md)


def test_mlflow_http_retries_come_from_params(monkeypatch):
    from ferflow.tracking import store

    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///unused.db")

    store.connect(small_params("tracking.http_retries=1", "tracking.http_timeout_s=7"))

    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"


# --- the registry: versions, rollback tags, stale locks -------------------------------------


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A SQLite registry with a model of three versions, version 2 champion, 1 previous."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = small_params("register.model_name=fer-faults", "register.lock_timeout_s=120")
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("fer-faults")
    for _ in range(3):
        client.create_model_version("fer-faults", source=str(tmp_path / "model"))
    client.set_registered_model_alias("fer-faults", "champion", "2")
    client.set_registered_model_alias("fer-faults", "previous-champion", "1")
    client.set_model_version_tag("fer-faults", "1", "ferflow.gate.decision", "not-promoted")
    return params, client


@pytest.mark.parametrize("version", ["99", "abc"])
def test_promoting_a_version_that_does_not_exist_is_one_clear_line(registry, version, capsys):
    _, client = registry

    code = main(["promote", "--version", version, "--set", "register.model_name=fer-faults"])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"has no version '{version}'; its versions: 1, 2, 3" in err[0]
    assert str(client.get_model_version_by_alias("fer-faults", "champion").version) == "2"  # nothing moved


def test_after_a_rollback_the_tags_say_what_the_aliases_say(registry):
    params, client = registry

    model_commands.rollback(params)

    champion = client.get_model_version_by_alias("fer-faults", "champion")
    assert str(champion.version) == "1"
    assert champion.tags["ferflow.alias"] == "champion"
    assert champion.tags["ferflow.manual.move"] == "rollback"
    assert champion.tags["ferflow.manual.reason"] == "rollback: champion 2 -> 1"
    # the gate's decision at registration stays as the gate wrote it (issue #23)
    assert champion.tags["ferflow.gate.decision"] == "not-promoted"
    assert client.get_model_version("fer-faults", "2").tags["ferflow.alias"] == "previous-champion"


def test_a_rollback_with_nothing_to_roll_back_to_does_not_take_the_lock(registry, monkeypatch):
    params, client = registry
    client.delete_registered_model_alias("fer-faults", "previous-champion")

    def no_lock(*args, **kwargs):
        raise AssertionError("the lock was taken for a rollback that cannot happen")

    monkeypatch.setattr(registry_module, "promotion_lock", no_lock)
    with pytest.raises(models.RegistryError, match="nothing to roll back to"):
        model_commands.rollback(params)


def test_a_stale_promotion_claim_of_a_dead_process_is_removed_not_waited_for(registry):
    params, client = registry
    # given a claim left by a process of this host that no longer exists
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    key = f"{lock.LOCK_PREFIX}stale"
    client.set_registered_model_tag(
        "fer-faults", key, f"{time.time():.6f} {socket.gethostname()} {dead.stdout.strip()}"
    )
    # when a version is promoted by hand (lock timeout 120 s)
    started = time.monotonic()
    model_commands.promote(params, "3")
    # then it went ahead at once and the stale claim is gone
    assert time.monotonic() - started < 30
    assert key not in client.get_registered_model("fer-faults").tags
    assert str(client.get_model_version_by_alias("fer-faults", "champion").version) == "3"


# --- model files and backups ------------------------------------------------------------------


def test_a_model_file_with_python_code_is_refused_in_one_line(tmp_path, capsys):
    # given a .keras file with a Lambda layer (arbitrary Python)
    inputs = keras.Input((48, 48))
    outputs = keras.layers.Lambda(lambda x: keras.ops.ones((keras.ops.shape(x)[0], 7)) / 7)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    (tmp_path / "faces").mkdir()
    from PIL import Image

    Image.new("L", (48, 48), 128).save(tmp_path / "faces" / "a.png")
    # when it is used to predict
    code = main(["predict", str(tmp_path / "faces"), "--model", str(path)])
    # then safe mode refuses it, as one line
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "Lambda layer" in err[0] and "safe mode" in err[0]


def test_an_unreadable_backup_is_moved_aside_and_the_phase_starts_afresh(tmp_path, caplog):
    # given a truncated backup
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    (tmp_path / "state.npz").write_bytes(b"PK\x03\x04 truncated")
    # when a phase restores it
    with caplog.at_level(logging.WARNING):
        start = EpochBackup(tmp_path).restore(model)
    # then it starts at epoch 0 and the damaged file is kept aside, with a warning
    assert start.epoch == 0 and start.batch == 0
    assert not (tmp_path / "state.npz").exists()
    assert len(list(tmp_path.glob("state.npz.corrupt-*"))) == 1
    assert "unreadable" in caplog.text


# --- crashes: runs left RUNNING, registrations cut short --------------------------------------


def test_the_sweeper_fails_runs_whose_process_is_gone_and_leaves_live_ones(tmp_path, monkeypatch, capsys):
    from ferflow.tracking import runs

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("ferflow")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    here, now = socket.gethostname(), time.time()
    liveness = {
        "killed here": (here, dead.stdout.strip(), now),
        "alive here": (here, str(os.getpid()), now),
        "silent elsewhere": ("other-host", "1", now - 7200),
        "beating elsewhere": ("other-host", "1", now - 60),
    }
    ids = {}
    for name, (host, pid, beat) in liveness.items():
        run = client.create_run(experiment, run_name=name)
        tags = {runs.HOST_TAG: host, runs.PID_TAG: pid, runs.HEARTBEAT_TAG: f"{beat:.0f}"}
        for key, value in tags.items():
            client.set_tag(run.info.run_id, key, value)
        ids[name] = run.info.run_id
    foreign = client.create_run(experiment, run_name="not ferflow's").info.run_id

    code = main(["runs", "sweep", "--set", "tracking.stale_run_after_s=3600"])

    status = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert code == 0
    assert status == {
        "killed here": "FAILED",
        "alive here": "RUNNING",
        "silent elsewhere": "FAILED",
        "beating elsewhere": "RUNNING",
    }
    assert client.get_run(foreign).info.status == "RUNNING"
    assert "2 run(s) marked FAILED" in capsys.readouterr().out


@pytest.fixture
def evaluated_model(tmp_path, monkeypatch):
    """A trained-and-evaluated workspace on a local SQLite store (the model logged to a run)."""
    from ferflow.stages import Layout
    from ferflow.stages.evaluation import evaluate
    from ferflow.tracking import store
    from tests.conftest import NO_FLOORS
    from tests.unit.test_evaluate import CENTRES, centre_model, write_constant_dataset

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    params = small_params(*NO_FLOORS, "register.model_name=fer-cut-short")
    data = write_constant_dataset(tmp_path / "prepared")
    layout = Layout(data, data, tmp_path / "models", tmp_path / "reports")
    centre_model(CENTRES, layout.model_file)
    uri = store.connect(params)
    model_uri, run_id = models.log_model_file(uri, layout.model_file, "ferflow", 48, 7, None)
    experiment = store.client(uri).get_run(run_id).info.experiment_id
    store.write_run_info(layout.run_file, store.RunInfo(run_id, experiment, uri, model_uri))
    evaluate(params, layout)
    return params, layout, run_id


def test_a_registration_killed_before_the_gate_reuses_its_version(evaluated_model):
    # given a version registered from this run with no gate decision (a kill -9 mid-registration)
    from ferflow.tracking import store

    params, layout, run_id = evaluated_model
    registry = registry_module.connect(params)
    model_uri = store.read_run_info(layout.run_file).model_uri
    registry.register(model_uri, run_id, {"ferflow.run_id": run_id})
    # when registration runs again
    decision = registration.register(params, layout)
    # then no second version: the first one got the decision and the aliases
    versions = registry.versions_of_run(run_id)
    assert [v for v, _ in versions] == ["1"]
    assert decision["version"] == "1" and decision["decision"] == "promoted"
    assert versions[0][1]["ferflow.gate.decision"] == "promoted"
    assert registry.alias("champion") == "1"


def test_a_decision_recorded_in_the_registry_is_not_taken_twice(evaluated_model):
    # given a registration that decided, then lost promotion.json (killed before writing it)

    params, layout, run_id = evaluated_model
    first = registration.register(params, layout)
    layout.promotion_file.unlink()
    # when registration runs again
    again = registration.register(params, layout)
    # then it registers nothing new and reports the recorded decision
    registry = registry_module.connect(params)
    assert [v for v, _ in registry.versions_of_run(run_id)] == [first["version"]]
    assert (again["decision"], again["version"]) == (first["decision"], first["version"])
    assert again["recovered_from_registry"] is True
    assert layout.promotion_file.exists()


def test_sigterm_during_training_marks_its_runs_killed(tmp_path):
    # given `ferflow train` running in its own process on tiny synthetic faces
    from ferflow.commands.data import synthesize
    from ferflow.stages import Layout, ingest

    params = small_params("model.input_size=32")
    layout = Layout.from_params(params, tmp_path).with_raw(tmp_path / "raw")
    synthesize(params, layout.raw)
    ingest(params, layout)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "ferflow.cli", "train", "--data", str(layout.prepared)]
    command += ["--models", str(layout.models), "--params", str(REPO / "params.yaml")]
    command += [f"--set={o}" for o in ("model.weights=none", "model.input_size=32", "train.epochs=500")]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        phase = _wait_for_phase_run(client, layout.run_file, "train", deadline=time.monotonic() + 240)
        time.sleep(2)  # into the model build / first epoch
        # when it is sent SIGTERM
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    # then it exits 143 with one line, and neither the parent nor the phase run is RUNNING
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert (
        stderr.strip().splitlines()[-1]
        == "ferflow train: interrupted by SIGTERM; its MLflow runs are marked KILLED"
    )
    assert "Traceback" not in stderr
    assert "ferflow: SIGTERM received: stopping" in stderr  # said at once, before the unwinding
    parent = json.loads(layout.run_file.read_text())["run_id"]
    assert client.get_run(parent).info.status == "KILLED"
    assert client.get_run(phase).info.status == "KILLED"
    assert not layout.head_model.exists()


def _wait_for_phase_run(client, run_file, name: str, deadline: float) -> str:
    """The id of the nested run `name` once it is RUNNING under the run of run.json."""
    while time.monotonic() < deadline:
        if run_file.exists():
            info = json.loads(run_file.read_text())
            found = client.search_runs(
                [info["experiment_id"]], f"tags.mlflow.parentRunId = '{info['run_id']}'"
            )
            running = [r for r in found if r.info.run_name == name and r.info.status == "RUNNING"]
            if running:
                return running[0].info.run_id
        time.sleep(0.5)
    raise AssertionError(f"no RUNNING {name!r} run appeared")


# --- finding the model a user just made (issue #14) -----------------------------------------


@pytest.mark.parametrize("command", [["compare"], ["compare", "--model-name", "fer-other"]])
def test_a_missing_model_name_lists_the_registered_models(registry, command, capsys):
    # given a registry holding only fer-faults; the default name is fer-densenet169
    code = main(command)

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--model-name" in err[0]
    assert "Registered models: fer-faults (champion: v2, previous-champion: v1)" in err[0]


def test_predict_with_an_unknown_model_lists_the_registered_models(registry, tmp_path, capsys):
    from PIL import Image

    Image.new("L", (48, 48), 100).save(tmp_path / "face.png")

    code = main(["predict", str(tmp_path / "face.png"), "--model-name", "fer-other"])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "models:/fer-other@champion" in err[0] and "fer-faults (champion: v2" in err[0]
