"""One MLflow connection for one command: `connect(params)` checks the server answers, then
holds one client for the runs of `tracking.experiment`. Every stage and command that talks
to MLflow starts here, so the URI and the client are made once, not per call; the ones that
also register or move aliases open the registered model on the same session
(`ferflow.tracking.registry.connect`). Training never imports the registry: its code is
part of the training stages' DVC deps, so a registry change does not retrain.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferflow.config import Params
from ferflow.tracking import runs, store


@dataclass(frozen=True)
class Session:
    """The tracking URI, its client and the experiment of a command."""

    uri: str
    client: Any  # an MlflowClient for tracking and the registry at `uri`
    experiment: str
    stale_run_after_s: float

    def sweep_stale(self) -> list[tuple[str, str]]:
        """Mark FAILED the experiment's RUNNING runs whose process is gone (`runs.sweep`)."""
        return runs.sweep(self.client, self.experiment, self.stale_run_after_s)

    def run_tags(self, run_id: str) -> dict[str, str]:
        """The tags of a run (the provenance registration copies onto the version)."""
        return dict(self.client.get_run(run_id).data.tags)

    def log_file(self, run_id: str, path: Path, folder: str) -> None:
        self.client.log_artifact(run_id, str(path), folder)


def connect(params: Params) -> Session:
    """The session for `params`; a server that is down fails it in seconds, with one line
    (`store.connect`), before any work."""
    uri = store.connect(params)
    return Session(uri, store.client(uri), params.tracking.experiment, params.tracking.stale_run_after_s)
