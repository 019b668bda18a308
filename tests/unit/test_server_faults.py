"""Issue #24, item 5: every server, store and disk fault is one line, the password masked.

Injected from the outside on real `ferflow` processes: a wrong server answering 200 with a
web page, a server refusing the credentials (401/403), a SQLite store another process keeps
locked, a full disk and a read-only folder. Every test greps all the output for the
password. (The tracking server killed mid-finetune is in the slow suite, below.)
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ferflow.training.backup import EpochBackup
from tests.conftest import REPO

PASSWORD = "hunter2"
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
}
PARAMS = ("--params", str(REPO / "params.yaml"))
NO_STORE = "sqlite:///unused.db"  # ingest does not track


def ferflow(cwd: Path, uri: str, *argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """A real `ferflow` process on this checkout's source, tracking to `uri`."""
    return subprocess.run(
        [sys.executable, "-m", "ferflow.cli", *argv, *PARAMS],
        cwd=cwd,
        env={**ENV, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_masked_line(result: subprocess.CompletedProcess[str], said: str) -> str:
    """Exit 2, the last stderr line says `said`, no traceback, the password nowhere."""
    everything = result.stdout + result.stderr
    assert result.returncode == 2, everything
    assert "Traceback" not in everything, everything
    assert PASSWORD not in everything
    last = result.stderr.strip().splitlines()[-1]
    assert said in last, everything
    return last


# --- stub servers -----------------------------------------------------------------------------


@contextlib.contextmanager
def stub_server(health: tuple[int, str], api: tuple[int, str]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering /health and everything else as given; yields its
    URI with a user and the password."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            status, body = health if self.path.startswith("/health") else api
            payload = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://bob:{PASSWORD}@127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


PAGE = "<!DOCTYPE html><html><head><title>Sign in</title></head><body>Grafana</body></html>"


# Each fault on another command (all three commands met all four faults once: 12 processes
# are too many for the default suite on two cores).
@pytest.mark.parametrize(
    ("health", "api", "command", "said"),
    [
        ((200, PAGE), (200, PAGE), ["register"], "answers with a web page"),
        ((200, "OK"), (200, PAGE), ["runs", "sweep"], "answered with a web page, not the MLflow API"),
        ((200, "OK"), (401, "You are not authenticated."), ["promote", "--rollback"], "(401 Unauthorized)"),
        ((200, "OK"), (403, "Permission denied"), ["register"], "refused the credentials (403 Forbidden)"),
    ],
    ids=["html-everywhere", "html-api", "401", "403"],
)
def test_a_wrong_server_or_wrong_password_is_one_masked_line(health, api, said, command, tmp_path):
    # given MLFLOW_TRACKING_URI with a password, at a server that is not MLflow's or refuses it
    with stub_server(health, api) as uri:
        # when a command that talks to MLflow runs
        result = ferflow(tmp_path, uri, *command)
    # then one line says what is wrong, the password masked
    line = assert_one_masked_line(result, said)
    assert "bob:" not in line and "***@127.0.0.1" in line


# --- a SQLite store another process keeps locked ----------------------------------------------


@contextlib.contextmanager
def locked_store(db: Path, hold_s: float) -> Iterator[None]:
    """Another process holding an exclusive lock on the SQLite file for `hold_s` seconds."""
    code = (
        "import sqlite3, sys, time\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "db.execute('COMMIT')\n"
    )
    command = [sys.executable, "-c", code, str(db), str(hold_s)]
    locker = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        yield
    finally:
        locker.kill()
        locker.wait()


@pytest.fixture
def sqlite_store(tmp_path) -> tuple[Path, str]:
    mlflow = pytest.importorskip("mlflow")
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    mlflow.MlflowClient(tracking_uri=uri).search_experiments()  # create the tables
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.execute("PRAGMA journal_mode")  # a plain file store, as MLflow leaves it
    return db, uri


def test_a_store_locked_past_mlflows_wait_is_one_line(sqlite_store, tmp_path):
    db, uri = sqlite_store
    # given another process that keeps the store locked for longer than MLflow waits (20 s)
    with locked_store(db, 45):
        started = time.monotonic()
        # when a command reads it
        result = ferflow(tmp_path, uri, "runs", "sweep")
        elapsed = time.monotonic() - started
    # then it gives up with one line saying who to wait for and what to run next
    assert_one_masked_line(result, "stayed locked by another process")
    assert "ferflow runs sweep" in result.stderr
    assert elapsed < 45


def test_a_store_locked_for_a_moment_is_waited_for(sqlite_store, tmp_path):
    db, uri = sqlite_store
    # given another process that holds the lock for 3 s
    with locked_store(db, 3):
        # when a command reads the store
        result = ferflow(tmp_path, uri, "runs", "sweep")
    # then it waited (MLflow's SQLite sessions retry for up to 20 s) and succeeded
    assert result.returncode == 0, result.stderr
    assert "run(s) marked FAILED" in result.stdout


# --- the disk: full, read-only ----------------------------------------------------------------


@contextlib.contextmanager
def small_disk(path: Path, size: str, *options: str) -> Iterator[Path]:
    """A tmpfs of `size` at `path` (root only); skips the test where it cannot be mounted."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(path)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


@pytest.fixture
def faces(tmp_path) -> Path:
    """A small FER folder (98 images of 48x48, ~225 KB as images.npy)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 10), ("test", 4)):
        for name in ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"):
            folder = tmp_path / "raw" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(folder / f"{i}.png")
    return tmp_path / "raw"


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(faces, tmp_path):
    # given an output folder on a disk of 64 KiB
    with small_disk(tmp_path / "disk", "64k") as disk:
        # when ingest writes the prepared dataset there
        result = ferflow(tmp_path, NO_STORE, "ingest", str(faces), "--out", str(disk / "prepared"))
        left = sorted(p.name for p in (disk / "prepared").iterdir()) if (disk / "prepared").exists() else []
    # then one line says so, and no half-written file is left
    assert_one_masked_line(result, "no space left on the device writing")
    assert "df -h" in result.stderr
    assert left == [], left


def test_a_read_only_folder_is_one_line(faces, tmp_path):
    # given an output folder that cannot be written (a read-only mount: root ignores chmod)
    with small_disk(tmp_path / "disk", "1m", "ro") as disk:
        # when ingest writes there
        result = ferflow(tmp_path, NO_STORE, "ingest", str(faces), "--out", str(disk / "prepared"))
    # then one line says which folder and what to do
    line = assert_one_masked_line(result, "cannot write")
    assert str(disk) in line and "read-only" in line


def test_a_backup_cut_short_by_a_full_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    # given a disk that fills up while the epoch backup is written (an injected writer)
    import keras

    from ferflow.training import callbacks

    def full_disk(handle, **_arrays):
        handle.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(callbacks.np, "savez", full_disk)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    backup = EpochBackup(tmp_path)
    backup.set_model(model)
    # when an epoch ends
    backup.on_epoch_end(0)
    # then the failure surfaces, and neither a partial nor a backup file is left
    with pytest.raises(OSError, match="No space left"):
        backup.close()
    assert list(tmp_path.iterdir()) == []


# --- the tracking server killed mid-finetune -----------------------------------------------------


@pytest.mark.slow
@pytest.mark.integration
def test_the_tracking_server_killed_mid_finetune_is_one_masked_line(tmp_path):
    from ferflow.commands.data import synthesize
    from ferflow.stages import Layout, ingest
    from tests.conftest import small_params
    from tests.servers import background_server, console_script, free_port, stop_process_group
    from tests.unit.test_operator_faults import _wait_for_phase_run

    mlflow = pytest.importorskip("mlflow")
    # given a prepared dataset, a real MLflow server (a password in its URI) and phase 1 done
    params = small_params("model.input_size=32")
    layout = Layout.from_params(params, tmp_path).with_raw(tmp_path / "raw")
    synthesize(params, layout.raw)
    ingest(params, layout)
    port = free_port()
    program = [
        str(console_script("mlflow") or "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    program += ["--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"]
    program += ["--artifacts-destination", str(tmp_path / "artifacts")]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    uri = f"http://bob:{PASSWORD}@127.0.0.1:{port}"
    shrink = [f"--set={o}" for o in ("model.weights=none", "model.input_size=32", "train.epochs=1")]
    folders = ["--data", str(layout.prepared), "--models", str(layout.models)]
    with background_server(program, f"http://127.0.0.1:{port}/health", env=env, timeout=300) as server:
        trained = ferflow(tmp_path, uri, "train", *folders, *shrink, timeout=900)
        assert trained.returncode == 0, trained.stderr
        # when the server is killed while `ferflow finetune` trains
        command = [sys.executable, "-m", "ferflow.cli", "finetune", *folders, *shrink, *PARAMS]
        command += ["--set=finetune.epochs=500"]
        finetune = subprocess.Popen(
            command,
            cwd=tmp_path,
            env={**ENV, "MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            client = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
            _wait_for_phase_run(client, layout.run_file, "finetune", deadline=time.monotonic() + 600)
            time.sleep(3)  # into its epochs
            stop_process_group(server, grace=5)
            out, err = finetune.communicate(timeout=600)
        finally:
            finetune.kill()
    # then it ends with one line naming the server (password masked) and what to run next
    result = subprocess.CompletedProcess(command, finetune.returncode, out, err)
    assert_one_masked_line(result, "stopped answering")
    assert "ferflow runs sweep" in err
    assert PASSWORD not in layout.run_file.read_text()


# --- a tracking URI without a scheme (issue #23) ----------------------------------------------


@pytest.mark.parametrize(
    ("uri", "command"),
    [("127.0.0.1:5000", ["runs", "sweep"]), ("localhost:5000", ["promote", "--rollback"])],
    ids=["ip-port", "host-port"],
)
def test_a_tracking_uri_without_a_scheme_is_one_line_naming_the_fix(uri, command, tmp_path):
    # given MLFLOW_TRACKING_URI=host:port (no http://), as people type it from the UI's address bar
    # when a command that talks to MLflow runs
    result = ferflow(tmp_path, uri, *command, timeout=120)
    # then exit 2 and one line that names the variable and the URI to use
    line = assert_one_masked_line(result, f"MLFLOW_TRACKING_URI={uri} has no scheme")
    assert f"use http://{uri}" in line
    assert not (tmp_path / uri.split(":")[0]).exists()  # MLflow made no file store of it


def test_tracking_uri_checks_the_params_value_and_keeps_real_uris(monkeypatch):
    from ferflow.tracking.store import TrackingUriError, tracking_uri
    from tests.model.conftest import tiny_params

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(TrackingUriError, match=r"tracking.tracking_uri=mlflow.internal:443/ml has no scheme"):
        tracking_uri(tiny_params("tracking.tracking_uri=mlflow.internal:443/ml"))
    kept = (
        "http://127.0.0.1:5000",
        "sqlite:///mlflow/mlflow.db",
        "file:///tmp/mlruns",
        "./mlruns",
        "databricks",
    )
    for uri in kept:
        assert tracking_uri(tiny_params(f"tracking.tracking_uri={uri}")) == uri


def test_ferflow_log_records_are_masked_for_handlers_that_are_not_ours():
    # given a handler with a plain formatter (as Prefect's API handler has its own)
    import io
    import logging

    from ferflow.console import redact_log_records

    redact_log_records()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    log = logging.getLogger("ferflow.tracking.test_masking")
    log.addHandler(handler)
    log.setLevel("INFO")
    try:
        # when ferflow logs a URL with a password, in a message and in a traceback
        log.warning("server %s down", f"http://bob:{PASSWORD}@127.0.0.1:5000")
        try:
            raise ConnectionError(f"API request to http://bob:{PASSWORD}@127.0.0.1:5000/api failed")
        except ConnectionError:
            log.exception("register failed")
        logging.getLogger("somebody.else").warning("http://bob:%s@host", PASSWORD)  # not ours: as is
    finally:
        log.removeHandler(handler)
    # and records made from a dict (logging.makeLogRecord, as the demo's formatter does) still work
    copied = logging.makeLogRecord({"name": "ferflow.demo", "msg": "run %s", "args": ("a",)})
    assert copied.getMessage() == "run a"
    written = stream.getvalue()
    # then the password is nowhere in ferflow's lines
    assert PASSWORD not in written
    assert "http://***@127.0.0.1:5000" in written and "ConnectionError" in written
