"""dvc.yaml with the real DVC CLI, in a temporary git + DVC copy of the repository.

Tiny synthetic data and tiny params written into the copy's params.yaml (so that
`dvc exp run -S` edits them like a user would). One copy for the module: the first test
runs the whole pipeline, the next ones check what DVC reruns.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import PARAMS_FILE, REPO, TINY_PIPELINE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

TINY = [
    "data.raw=data/raw/synthetic",
    *TINY_PIPELINE,
    "register.model_name=fer-dvc-test",
]


def venv_env() -> dict[str, str]:
    """dvc.yaml calls `ferflow`: put this venv's bin/ first on PATH, as an activated venv does."""
    bin_dir = str(Path(sys.executable).parent)
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1"}


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the real DVC CLI in `repo`; fail the test with its output when it fails."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args],
        cwd=repo,
        capture_output=True,
        text=True,
        env=venv_env(),
        timeout=3600,
    )
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    from ferflow.commands.data import synthesize
    from ferflow.config import apply_overrides, load_params, read_yaml

    root = tmp_path_factory.mktemp("dvc") / "repo"
    root.mkdir()
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    tiny = apply_overrides(read_yaml(PARAMS_FILE.read_text()), TINY)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))
    (root / ".gitignore").write_text("/mlflow/\n/data/prepared/\n/models/\n/reports/\n")
    synthesize(load_params(root / "params.yaml"), root / "data/raw/synthetic")
    git(root, "init", "-q")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "test")
    dvc(root, "init", "-q")
    dvc(root, "add", "-q", "data/raw/synthetic")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "tiny pipeline")
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    (root / "mlflow").mkdir()
    yield root
    if saved is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved


def ran(output: str) -> set[str]:
    """Names of the stages `dvc repro` / `dvc exp run` executed."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def test_dvc_repro_runs_the_pipeline_end_to_end(repo):
    result = dvc(repo, "repro")

    assert ran(result.stdout) == {"ingest", "validate", "train", "finetune", "evaluate", "register"}
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert json.loads((repo / "reports" / "promotion.json").read_text())["decision"] == "promoted"


def test_second_repro_with_nothing_changed_does_nothing(repo):
    started = time.perf_counter()
    result = dvc(repo, "repro")
    elapsed = time.perf_counter() - started

    assert ran(result.stdout) == set()
    print(f"no-op dvc repro: {elapsed:.1f} s")


def test_a_training_param_reruns_training_and_what_follows_only(repo):
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first run")

    result = dvc(repo, "exp", "run", "-S", "train.epochs=2")

    assert ran(result.stdout) == {"train", "finetune", "evaluate", "register"}
    rows = list(csv.DictReader(io.StringIO(dvc(repo, "exp", "show", "--csv").stdout)))
    epochs = next(column for column in rows[0] if column.endswith("train.epochs"))
    assert {"1", "2"} <= {row[epochs] for row in rows}  # the baseline and the experiment, side by side
    assert any(column.endswith("accuracy") for column in rows[0])


def test_register_replay_never_registers_a_decided_model_again(repo):
    before = json.loads((repo / "reports" / "promotion.json").read_text())

    result = subprocess.run(
        [str(Path(sys.executable).parent / "ferflow"), "run", "--stage", "register"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=900,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["version"] == before["version"]
    assert "already decided" in result.stderr
