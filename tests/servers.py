"""Start real servers for integration tests: free ports, readiness checks, clean shutdown.

Plain functions and context managers, no pytest: a test (or a fixture, or a script) calls
them and every server it starts is stopped on exit, also when the test fails.

    with aws_test_credentials(), moto_s3_server() as endpoint:
        create_bucket(endpoint, "ferflow-data")
        ...

`background_server` is the general building block (it works for mlflow / prefect too):
start a command in its own process group, wait until a URL answers, stop the group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

LOCALHOST = "127.0.0.1"
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_MAX_ATTEMPTS": "1",  # fail fast instead of retrying with back-off
    "DVC_NO_ANALYTICS": "1",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def answers_http(url: str, timeout: float = 1.0) -> bool:
    """True when `url` gives any HTTP response (an error status counts: the server is up)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def wait_for_http(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers; `TimeoutError` after `timeout` s or if `process` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers_http(url):
            return
        if process is not None and process.poll() is not None:
            raise TimeoutError(f"the server for {url} exited with status {process.returncode}")
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def console_script(name: str) -> Path | None:
    """A console script installed beside the running Python (the venv's bin/), if present."""
    path = Path(sys.executable).parent / name
    return path if path.is_file() else None


@contextmanager
def background_server(
    command: Sequence[str],
    ready_url: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Iterator[subprocess.Popen]:
    """Run `command` until the block ends; yields once `ready_url` answers.

    Output goes to a temporary log file (a pipe nobody reads would block the server when
    it fills); a server that fails to start raises with the end of that log.
    """
    with tempfile.TemporaryFile(mode="w+b") as server_log:
        process = subprocess.Popen(
            list(command),
            stdout=server_log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group: stopping it stops its workers
        )
        try:
            try:
                wait_for_http(ready_url, timeout, process)
            except TimeoutError as err:
                server_log.seek(0)
                tail = server_log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"{' '.join(command)} did not start: {err}\n{tail}") from None
            yield process
        finally:
            stop_process_group(process)


def stop_process_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def moto_s3_server(timeout: float = 60.0) -> Iterator[str]:
    """A moto S3 server on a free 127.0.0.1 port; yields its endpoint URL."""
    port = free_port()
    script = console_script("moto_server")
    program = [str(script)] if script else [sys.executable, "-m", "moto.server"]
    endpoint = f"http://{LOCALHOST}:{port}"
    with background_server([*program, "-H", LOCALHOST, "-p", str(port)], endpoint, timeout=timeout):
        yield endpoint


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block, restoring the previous values after."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def aws_test_credentials() -> Iterator[None]:
    """Dummy AWS credentials and fail-fast retries (`DUMMY_AWS_ENV`) for the block."""
    with environment(DUMMY_AWS_ENV):
        yield


def create_bucket(endpoint_url: str, bucket: str) -> None:
    """Create `bucket` on the S3 server at `endpoint_url` (credentials from the environment)."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)


# --- MLflow tracking server (evaluation/registry helper) -------------------------------


@contextmanager
def mlflow_server(
    root: Path, s3_endpoint: str, bucket: str = "mlflow", timeout: float = 300.0
) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1; yields its tracking URI (http://127.0.0.1:PORT).

    The backend store is SQLite under `root`; artifacts are proxied (`--artifacts-destination`)
    to `s3://<bucket>/mlflow` on the S3 server at `s3_endpoint` (moto's), so clients upload and
    download through the server and the server through boto3. The bucket is created first;
    the dummy AWS credentials and MLFLOW_S3_ENDPOINT_URL go into the server's environment only.
    Start-up takes a few seconds (tens on a busy machine): start one per session.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with environment(DUMMY_AWS_ENV):
        create_bucket(s3_endpoint, bucket)
    port = free_port()
    script = console_script("mlflow")
    program = [str(script)] if script else [sys.executable, "-m", "mlflow"]
    command = [
        *program, "server", "--host", LOCALHOST, "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", f"s3://{bucket}/mlflow",
    ]  # fmt: skip
    env = {
        **DUMMY_AWS_ENV,
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        # the server's background job runner is not needed and slows start-up
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    uri = f"http://{LOCALHOST}:{port}"
    with background_server(command, f"{uri}/health", env=env, timeout=timeout):
        yield uri


# --- Prefect server and worker (orchestration helper) -----------------------------------


def prefect_env(home: Path, api_url: str) -> dict[str, str]:
    """Environment of a Prefect process: its own PREFECT_HOME (SQLite), quiet, this API."""
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }


@contextmanager
def prefect_server(home: Path, timeout: float = 600.0) -> Iterator[str]:
    """A real `prefect server start` on 127.0.0.1 (SQLite under `home`); yields its API URL."""
    port = free_port()
    script = console_script("prefect")
    program = [str(script)] if script else [sys.executable, "-m", "prefect"]
    api_url = f"http://{LOCALHOST}:{port}/api"
    command = [*program, "server", "start", "--host", LOCALHOST, "--port", str(port)]
    with background_server(command, f"{api_url}/health", env=prefect_env(home, api_url), timeout=timeout):
        yield api_url


@contextmanager
def prefect_worker(
    pool: str, home: Path, api_url: str, env: Mapping[str, str] | None = None, timeout: float = 300.0
) -> Iterator[subprocess.Popen]:
    """A process worker polling `pool` every 2 s; ready when its health endpoint answers.

    Flow runs start in the directory of the deployment's pull step (`prefect deploy`'s).
    """
    port = free_port()
    script = console_script("prefect")
    program = [str(script)] if script else [sys.executable, "-m", "prefect"]
    command = [*program, "worker", "start", "--pool", pool, "--type", "process", "--with-healthcheck"]
    worker_env = {
        **prefect_env(home, api_url),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_WEBSERVER_HOST": LOCALHOST,
        "PREFECT_WORKER_WEBSERVER_PORT": str(port),
        **(env or {}),
    }
    ready_url = f"http://{LOCALHOST}:{port}/health"
    with background_server(command, ready_url, env=worker_env, timeout=timeout) as process:
        yield process
