"""The README's routes on a fresh copy of the repository.

The first hour, with synthetic data: a newcomer runs `make demo` (`python -m flows.demo`),
then, in the demo's workspace demo/: `dvc status` and `dvc repro` (nothing changed: nothing
runs), `ferflow compare` and `ferflow predict` with no model flags (the workspace's params
name the demo's model), `dvc metrics show` and `ferflow data push` to the workspace's own
remote, and then `dvc exp run -S` for a second version that `dvc exp show`, `dvc params
diff`, `dvc metrics diff`, `dvc plots diff` and `ferflow compare` set against the first.
The demo is shrunk by `--set` overrides (the real one takes minutes), its floors off so
that a tiny model registers.

The first day, with real data (FERFLOW_FER2013_ZIP): "Running it" on a small real subset,
offline, with the profile the README names.

The copy is made from the files git would hand out (tracked and new, not ignored),
committed into a fresh git repository.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import NO_FLOORS, REPO

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(3600)]

TINY_DEMO = (
    *NO_FLOORS,
    "synth.per_class=12",
    "synth.test_per_class=4",
    "finetune.epochs=1",
    "model.head_units=[16]",
    "model.dropout=[0.1]",
)


def fresh_copy(dest: Path) -> Path:
    """The repository as a clone of the working tree would have it, in a new git repo."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    for args in (("init", "-q"), ("add", "-A"), ("commit", "-q", "-m", "fresh copy")):
        subprocess.run(
            ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
            cwd=dest,
            check=True,
            capture_output=True,
        )
    return dest


def newcomer_env(repo: Path) -> dict[str, str]:
    """An activated venv running the copy's code, with nothing of the test session's
    MLflow or Prefect settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MLFLOW_", "PREFECT_")) and key != "PYTHONPATH"
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{repo / 'src'}{os.pathsep}{repo}"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run(cwd: Path, env: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=3000)
    output = f"{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, f"{' '.join(command)} failed ({done.returncode}):\n{output}"
    return done


def test_demo_then_dvc_then_compare_and_predict_with_no_model_flags(tmp_path):
    repo = fresh_copy(tmp_path / "repo")
    env = newcomer_env(repo)
    overrides = [arg for item in TINY_DEMO for arg in ("--set", item)]

    demo = run(repo, env, sys.executable, "-m", "flows.demo", *overrides)
    assert "Demo done." in demo.stdout and "cd demo" in demo.stdout
    workspace = repo / "demo"
    assert (workspace / "dvc.lock").exists() and (workspace / "mlflow" / "mlflow.db").exists()
    # the demo left the repository's own files alone: its workspace is git-ignored
    status = run(repo, env, "git", "status", "--porcelain")
    assert status.stdout.strip() == ""

    # nothing changed since the flow ran: DVC agrees and runs nothing
    assert "Data and pipelines are up to date" in run(workspace, env, "dvc", "status").stdout
    repro = run(workspace, env, "dvc", "repro")
    assert "Running stage" not in repro.stdout
    for stage in ("ingest", "validate", "train", "finetune", "evaluate", "register"):
        assert f"Stage '{stage}' didn't change, skipping" in repro.stdout

    # the workspace's params name the demo's model: no flag needed
    compare = run(workspace, env, "ferflow", "compare")
    assert "fer-densenet-demo" in compare.stdout
    sample = next(iter(sorted((workspace / "data/raw/synthetic/test").glob("*/*.jpg"))))
    image = str(sample.relative_to(workspace))
    predict = run(workspace, env, "ferflow", "predict", "--format", "json", image)
    assert '"class_name"' in predict.stdout

    # the demo's workspace is a git repository of its own, the run committed in it
    assert "demo run:" in run(workspace, env, "git", "log", "--oneline").stdout
    assert run(workspace, env, "git", "status", "--porcelain").stdout.strip() == ""
    shown = run(workspace, env, "dvc", "metrics", "show", "--json").stdout
    assert '"macro_f1"' in shown and '"per_class' not in shown  # one column per headline number
    # its data goes to the workspace's own remote (configured and committed by the demo), offline
    run(workspace, env, "ferflow", "data", "push")
    assert any((workspace / "dvc-remote").rglob("*"))
    assert run(workspace, env, "git", "status", "--porcelain").stdout.strip() == ""

    # DVC's route to a second version: an experiment reruns from finetune and registers v2
    second = run(workspace, env, "dvc", "exp", "run", "-S", "finetune.epochs=2")
    assert "Stage 'ingest' didn't change, skipping" in second.stdout
    assert "Running stage 'finetune'" in second.stdout and "Running stage 'register'" in second.stdout
    shown = run(workspace, env, "dvc", "exp", "show", "--only-changed", "--md", "--no-pager").stdout
    assert "finetune.epochs" in shown and "macro_f1" in shown
    params_diff = run(workspace, env, "dvc", "params", "diff", "--md").stdout
    assert "finetune.epochs" in params_diff and "| 1 " in params_diff and "| 2 " in params_diff
    assert "| accuracy " in run(workspace, env, "dvc", "metrics", "diff", "--all", "--md").stdout
    plots = run(workspace, env, "dvc", "plots", "diff", "-o", str(tmp_path / "plots")).stdout
    assert (tmp_path / "plots" / "index.html").exists(), plots
    compare = run(workspace, env, "ferflow", "compare")
    assert "v1" in compare.stdout and "v2" in compare.stdout
    assert "Data and pipelines are up to date" in run(workspace, env, "dvc", "status").stdout


@pytest.mark.realdata
def test_the_real_data_route_offline_on_a_small_real_subset(tmp_path, fer2013_zip):
    # given a fresh copy, a 5% real FER2013 subset named as the download is, and no way to
    # fetch ImageNet weights (every HTTP request goes to a dead proxy, an empty Keras cache)
    from scripts.search import subset_zip

    repo = fresh_copy(tmp_path / "repo")
    download = subset_zip(fer2013_zip, tmp_path / "download" / "fer2013.zip", 0.05, seed=0)
    env = newcomer_env(repo)
    dead = "http://127.0.0.1:9"
    env.update(HTTP_PROXY=dead, HTTPS_PROXY=dead, http_proxy=dead, https_proxy=dead)
    env.update(KERAS_HOME=str(tmp_path / "keras"), NO_PROXY="", no_proxy="")

    # when the README's "Running it" commands run
    run(repo, env, "ferflow", "data", "add", str(download))
    run(repo, env, "ferflow", "ingest", "data/raw/fer2013.zip", "--out", "data/prepared")
    run(repo, env, "ferflow", "validate", "data/prepared")
    offline = subprocess.run(["ferflow", "train"], cwd=repo, env=env, capture_output=True, text=True)

    # then the default train stops before any MLflow run and names the profile to run
    assert offline.returncode == 2, offline.stderr
    assert "profiles/cpu.yaml" in offline.stderr and "Traceback" not in offline.stderr
    store = repo / "mlflow" / "mlflow.db"  # the local store may exist (created empty), no run in it
    assert not store.exists() or _run_count(store) == 0

    # and the profile the README names trains, evaluates and registers, offline
    shrink = [*NO_FLOORS, "finetune.epochs=1", "finetune.time_budget_s=null"]
    profile = ["--params", "profiles/cpu.yaml", *(arg for item in shrink for arg in ("--set", item))]
    for stage in ("train", "finetune", "evaluate", "register"):
        run(repo, env, "ferflow", stage, *profile)
    scores = (repo / "reports" / "scores.json").read_text()
    assert '"macro_f1"' in scores
    assert '"version": "1"' in (repo / "reports" / "promotion.json").read_text()


def _run_count(store: Path) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(store)) as db:
        return int(db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
