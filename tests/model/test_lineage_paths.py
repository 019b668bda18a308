"""Issue #24: the three paths that promoted a model its run did not train, replayed from
the outside (`ferflow` processes in a workspace, a local SQLite store, synthetic faces,
DenseNet121 at 32 px):

(a) a diverging `finetune` (rc 2, no model), then `register`: the previous model.keras was
    registered under the failed run, which flipped FAILED -> FINISHED;
(b) a `finetune` killed at epoch N, then one with other params: it resumed the killed
    run's backup and those weights became champion;
(c) params.yaml edited between `train` and `finetune`: the run logged one architecture
    while the model was another.

After each, nothing wrong is registered; every registered version is byte for byte the
model.keras its run trained, and its run logged the params that model was trained with.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

mlflow = pytest.importorskip("mlflow")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

NAME = "fer-lineage"
WORKSPACE_PARAMS = f"""\
extends: {REPO / "params.yaml"}
model: {{backbone: densenet121, weights: none, input_size: 32, head_units: [16], dropout: [0.1]}}
train: {{epochs: 1, batch_size: 32}}
finetune: {{epochs: 1}}
synth: {{per_class: 12, test_per_class: 4}}
register: {{model_name: {NAME}, min_accuracy_over_majority: null, min_macro_f1: 0.0, refuse_one_class: false}}
"""


class Workspace:
    """A project folder driven through the `ferflow` command line, as an operator would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": self.uri,
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
        }
        self.client = mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        self.trained: dict[str, str] = {}  # run id -> sha256 of the model.keras it wrote

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ferflow.cli", *args]

    def ferflow(self, *args: str, rc: int = 0) -> subprocess.CompletedProcess:
        done = subprocess.run(
            self.command(*args), cwd=self.root, env=self.env, capture_output=True, text=True, timeout=1800
        )
        assert done.returncode == rc, f"ferflow {' '.join(args)}: rc {done.returncode}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        return done

    def finetune(self, *sets: str) -> str:
        """A successful `ferflow finetune`; returns its run id and remembers its model file."""
        self.ferflow("finetune", *(f"--set={s}" for s in sets))
        run_id = self.run_json()["run_id"]
        self.trained[run_id] = sha256(self.root / "models" / "model.keras")
        return run_id

    def _finetune_killed_when(self, ready, what: str, sets: tuple[str, ...]) -> None:
        """A `ferflow finetune` sent SIGTERM once `ready(backup state file)` holds; checks it
        ended as a SIGTERM ends a command."""
        backup = self.root / "models" / "backup" / "finetune" / "state.npz"
        killed = subprocess.Popen(
            self.command("finetune", *(f"--set={s}" for s in sets)),
            cwd=self.root,
            env=self.env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 1200
            while not ready(backup) and killed.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert ready(backup), f"the finetune ({', '.join(sets)}) wrote no {what}"
            killed.send_signal(signal.SIGTERM)
            _, stderr = killed.communicate(timeout=300)
        finally:
            killed.kill()
        assert killed.returncode == 128 + signal.SIGTERM, stderr[-3000:]

    def finetune_killed_after_backup(self, *sets: str) -> None:
        """A `ferflow finetune` killed once its backup holds an epoch."""
        self._finetune_killed_when(Path.exists, "backup", sets)

    def finetune_killed_mid_epoch(self, *sets: str) -> tuple[int, int]:
        """A `ferflow finetune` killed once its backup sits inside its second epoch or later
        (batches done > 0); returns the last backup's (epoch, batch)."""

        def inside_a_later_epoch(path: Path) -> bool:
            epoch, batch = _backup_position(path)
            return epoch >= 1 and batch > 0

        self._finetune_killed_when(inside_a_later_epoch, "mid-epoch backup", sets)
        return _backup_position(self.root / "models" / "backup" / "finetune" / "state.npz")

    def run_json(self) -> dict:
        return json.loads((self.root / "models" / "run.json").read_text())

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def versions(self) -> dict[str, str]:
        """version -> run id of every registered version."""
        return {str(v.version): v.run_id for v in self.client.search_model_versions(f"name='{NAME}'")}

    def runs(self) -> int:
        return len(self.client.search_runs([self.run_json()["experiment_id"]]))

    def registered_file(self, version: str) -> Path:
        folder = Path(tempfile.mkdtemp(dir=self.root))
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}/{version}", dst_path=str(folder)))
        (found,) = local.rglob("*.keras")
        return found


def _backup_position(path: Path) -> tuple[int, int]:
    """(epoch, batches done) of a backup's state.npz; (0, 0) while there is none."""
    import numpy as np

    try:
        with np.load(path) as state:
            return int(state["epoch"]), int(state["batch"])
    except (OSError, ValueError, KeyError):
        return 0, 0


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dense_units(model_file: Path) -> list[int]:
    """The units of the Dense layers in a .keras file's config (no Keras needed)."""
    with zipfile.ZipFile(model_file) as archive:
        config = json.loads(archive.read("config.json"))
    found: list[int] = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("class_name") == "Dense":
                found.append(node["config"]["units"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def last_line(done: subprocess.CompletedProcess) -> str:
    return done.stderr.strip().splitlines()[-1]


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Workspace:
    """Synthetic faces ingested into data/prepared, params.yaml extending the project's."""
    from ferflow.commands.data import synthesize
    from ferflow.config import load_params
    from ferflow.stages import Layout, ingest

    (tmp_path / "params.yaml").write_text(WORKSPACE_PARAMS)
    params = load_params(tmp_path / "params.yaml")
    layout = Layout.from_params(params, tmp_path)
    synthesize(params, layout.raw)
    ingest(params, layout)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return Workspace(tmp_path)


def test_no_failed_stale_or_foreign_model_is_registered(workspace):
    ws = workspace
    # given a trained, evaluated and registered model (run A, version 1)
    ws.ferflow("train")
    run_a = ws.finetune()
    ws.ferflow("evaluate")
    ws.ferflow("register")
    assert ws.versions() == {"1": run_a}

    # (a) a diverging finetune fails (rc 2) in a new run B and writes no model ...
    diverged = ws.ferflow("finetune", "--set=finetune.learning_rate=1.0e+12", rc=2)
    assert "NaN" in last_line(diverged) or "diverged" in last_line(diverged)
    run_b = ws.run_json()["run_id"]
    assert run_b != run_a and ws.status(run_b) == "FAILED"
    # ... and the next register refuses A's model.keras under B, in one line
    refused = ws.ferflow("register", rc=2)
    assert f"run {run_b}" in last_line(refused) and "is FAILED" in last_line(refused)
    assert "nothing was registered" in last_line(refused)
    assert ws.versions() == {"1": run_a}
    assert ws.status(run_b) == "FAILED"  # never flipped to FINISHED

    # (b) a long finetune is killed once its backup holds an epoch ...
    backup = ws.root / "models" / "backup" / "finetune" / "state.npz"
    ws.finetune_killed_after_backup("finetune.epochs=30")
    run_k = ws.run_json()["run_id"]
    assert run_k not in (run_a, run_b) and ws.status(run_k) == "KILLED"
    # ... and a finetune with other params sets its backup aside (one line) and starts afresh
    started = time.monotonic()
    run_c = ws.finetune()
    assert run_c not in (run_a, run_b, run_k)
    assert ws.status(run_k) == "KILLED" and ws.status(run_b) == "FAILED"
    assert len(list(backup.parent.parent.glob("finetune.set-aside-*"))) == 1
    assert ws.client.get_run(run_c).data.metrics["finetune.epochs"] == 1
    ws.ferflow("evaluate")
    ws.ferflow("register")
    assert ws.versions() == {"1": run_a, "2": run_c}
    print(f"finetune after the kill: {time.monotonic() - started:.0f} s")

    # (c) params.yaml edited between train and finetune: finetune refuses head.keras in one line
    params_file = ws.root / "params.yaml"
    params_file.write_text(params_file.read_text().replace("head_units: [16]", "head_units: [32]"))
    runs_before = ws.runs()
    refused = ws.ferflow("finetune", rc=2)
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "model.head_units: 16 -> 32" in last_line(refused) and "run `ferflow train`" in last_line(refused)
    assert ws.runs() == runs_before  # no run was started
    # ... and the operator's next step trains the new architecture in a run of its own
    ws.ferflow("train")
    run_d = ws.finetune()
    ws.ferflow("evaluate")
    ws.ferflow("register")
    assert ws.versions() == {"1": run_a, "2": run_c, "3": run_d}

    # then every registered version is its run's model.keras, byte for byte, with its params
    for version, run_id in ws.versions().items():
        registered = ws.registered_file(version)
        assert sha256(registered) == ws.trained[run_id], f"version {version}"
        logged = ws.client.get_run(run_id).data.params
        units = "32" if run_id == run_d else "16"
        assert logged["model.head_units"] == units, f"version {version}"
        assert units in map(str, dense_units(registered)), f"version {version}: {dense_units(registered)}"
        assert logged["finetune.epochs"] == "1", f"version {version}"
    champion = ws.client.get_model_version_by_alias(NAME, "champion")
    assert champion.run_id in (run_a, run_c, run_d)


def test_a_finetune_killed_then_rerun_continues_its_runs(workspace):
    # given phase 1 done and a 12-epoch finetune killed once its backup holds an epoch
    ws = workspace
    ws.ferflow("train")
    ws.finetune_killed_after_backup("finetune.epochs=12")
    run_k = ws.run_json()["run_id"]
    (phase_k,) = ws.client.search_runs(
        [ws.run_json()["experiment_id"]], f"tags.mlflow.parentRunId = '{run_k}' and run_name = 'finetune'"
    )
    assert ws.status(run_k) == "KILLED" and phase_k.info.status == "KILLED"

    # when the same finetune runs again
    run_again = ws.finetune("finetune.epochs=12")

    # then it resumed the backup inside the killed runs: one parent, one finetune run, both
    # FINISHED, each of the 12 epochs logged once on the global axis (phase 1 had 1)
    assert run_again == run_k and ws.status(run_k) == "FINISHED"
    phases = ws.client.search_runs(
        [ws.run_json()["experiment_id"]], f"tags.mlflow.parentRunId = '{run_k}' and run_name = 'finetune'"
    )
    assert [p.info.run_id for p in phases] == [phase_k.info.run_id]
    assert phases[0].info.status == "FINISHED"
    steps = [m.step for m in ws.client.get_metric_history(phase_k.info.run_id, "val_accuracy")]
    assert sorted(steps) == list(range(1, 13))
    # and the model registered is that run's model.keras
    ws.ferflow("evaluate")
    ws.ferflow("register")
    assert ws.versions() == {"1": run_k}
    assert sha256(ws.registered_file("1")) == ws.trained[run_k]


def test_a_finetune_killed_mid_epoch_resumes_after_its_last_backed_up_batch(workspace):
    # given phase 1 done, and a finetune backing up before every batch (84 rows, batch 8:
    # 11 batches an epoch) killed inside its second epoch or later
    ws = workspace
    sets = ("finetune.epochs=4", "train.batch_size=8", "finetune.backup_every_s=1e-9")
    ws.ferflow("train", "--set=train.batch_size=8")
    epoch, batch = ws.finetune_killed_mid_epoch(*sets)
    run_k = ws.run_json()["run_id"]
    # when the same finetune runs again
    done = ws.ferflow("finetune", *(f"--set={s}" for s in sets))
    # then it said where it resumed, inside that epoch, and finished the killed run with
    # each of the 4 epochs logged once (phase 1 had 1: global steps 1-4)
    said = f"in epoch {epoch + 1}, after its batch {batch}" if batch else f"at epoch {epoch + 1}"
    assert "resuming from models/backup/finetune/state.npz" in done.stderr, done.stderr[-3000:]
    assert said in done.stderr, done.stderr[-3000:]
    assert ws.run_json()["run_id"] == run_k and ws.status(run_k) == "FINISHED"
    (phase,) = ws.client.search_runs(
        [ws.run_json()["experiment_id"]], f"tags.mlflow.parentRunId = '{run_k}' and run_name = 'finetune'"
    )
    steps = [m.step for m in ws.client.get_metric_history(phase.info.run_id, "loss")]
    assert sorted(steps) == list(range(1, 5))
