"""Issue #13, faults an operator meets, injected from the outside: a tracking server that
is down, a bad version number, a rollback's tags, a stale promotion lock, a model file the
safe mode refuses, a damaged backup. Each: one clear line, nothing moved, no traceback.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time

import keras
import pytest

from ferflow.callbacks import EpochBackup
from ferflow.cli import main
from ferflow.stages import promotion
from ferflow.tracking import models
from tests.conftest import small_params

mlflow = pytest.importorskip("mlflow")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- a tracking server that is down ---------------------------------------------------------


@pytest.mark.parametrize("command", [["train"], ["compare"], ["promote", "--rollback"], ["register"]])
def test_a_tracking_server_that_is_down_fails_at_once_with_one_masked_line(command, monkeypatch, capsys):
    # given MLFLOW_TRACKING_URI with a password, pointing at a port nobody listens on
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

    import os

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

    promotion.rollback(params)

    champion = client.get_model_version_by_alias("fer-faults", "champion")
    assert str(champion.version) == "1"
    assert champion.tags["ferflow.gate.decision"] == "promoted"
    assert champion.tags["ferflow.alias"] == "champion"
    assert "rollback" in champion.tags["ferflow.gate.reason"]
    assert client.get_model_version("fer-faults", "2").tags["ferflow.alias"] == "previous-champion"


def test_a_stale_promotion_claim_of_a_dead_process_is_removed_not_waited_for(registry):
    params, client = registry
    # given a claim left by a process of this host that no longer exists
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    key = f"{models.LOCK_PREFIX}stale"
    client.set_registered_model_tag(
        "fer-faults", key, f"{time.time():.6f} {socket.gethostname()} {dead.stdout.strip()}"
    )
    # when a version is promoted by hand (lock timeout 120 s)
    started = time.monotonic()
    promotion.promote(params, "3")
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
        epoch = EpochBackup(tmp_path).restore(model)
    # then it starts at epoch 0 and the damaged file is kept aside, with a warning
    assert epoch == 0
    assert not (tmp_path / "state.npz").exists()
    assert len(list(tmp_path.glob("state.npz.corrupt-*"))) == 1
    assert "unreadable" in caplog.text
