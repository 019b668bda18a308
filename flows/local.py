"""Running the retraining flow from a terminal: `ferflow run` and the demo come here.

The one entry point the core's CLI may import from the orchestration side (an explicit
exception in the import-linter contracts of pyproject.toml). Prefect is configured before
it is imported: a quiet local mode unless the user chose a server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ferflow.console import redact_log_records
from ferflow.errors import FerflowError
from ferflow.native_stderr import quiet_tensorflow_import

# A quiet run: no Prefect telemetry, a local-server start-up timeout that tolerates a busy
# laptop, library chatter only when it matters. Values the user set win.
QUIET_ENVIRONMENT = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
    "PREFECT_LOGGING_LOG_PRINTS": "true",
    # ferflow's log lines (epochs, metrics, the gate's decision) in the flow run's Logs tab,
    # beside the console; none are sent from outside a run (prefect.yaml sets the same for
    # the deployments' workers)
    "PREFECT_LOGGING_EXTRA_LOGGERS": "ferflow,flows,tasks",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "PREFECT_UI_ENABLED": "false",
    # MLflow's own handler: only errors (its INFO/WARNING lines about pip and conda specs
    # are not for a demo user)
    "MLFLOW_LOGGING_LEVEL": "ERROR",
    # TensorFlow C++ messages (level 2 still lets harmless graph "errors" through)
    "TF_CPP_MIN_LOG_LEVEL": "3",
}


class PrefectUnreachableError(FerflowError):
    """PREFECT_API_URL is set but no Prefect server answers there."""


def quiet_prefect_defaults() -> None:
    """Set QUIET_ENVIRONMENT where the user has not; call before importing prefect."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    redact_log_records()  # ferflow's lines go to the Prefect API too: masked there as well
    quiet_tensorflow_import()  # absl's lines before TF_CPP_MIN_LOG_LEVEL applies (oneDNN's)


def configure_local_prefect(root: Path) -> None:
    """Point Prefect at .prefect/ under `root` unless the user chose a home or a server."""
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
    quiet_prefect_defaults()


def check_prefect_api(timeout_s: float = 5.0) -> None:
    """Fail fast, before anything runs, when PREFECT_API_URL names a server that is down.

    Without PREFECT_API_URL the flow runs in Prefect's local mode and needs no server.
    """
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=timeout_s).raise_for_status()
    except httpx.HTTPError as err:
        raise PrefectUnreachableError(
            f"the Prefect server at PREFECT_API_URL={url} is unreachable ({err}); nothing was run. "
            "Start it (`prefect server start`, or `docker compose -f infra/docker-compose.yml up`) "
            "or unset PREFECT_API_URL to run in Prefect's local mode"
        ) from err


def run_flow(
    params_file: str, overrides: list[str], pull_data: bool | None = None, push_data: bool | None = None
) -> dict[str, Any]:
    """`ferflow run`: the retraining flow in this process; returns the promotion decision."""
    quiet_prefect_defaults()
    from flows.retrain import retrain

    check_prefect_api()
    return retrain(params_file=params_file, overrides=overrides, pull_data=pull_data, push_data=push_data)
