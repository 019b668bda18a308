"""`make demo` (`python -m flows.demo`): the whole workflow on synthetic faces, offline.

The demo has a workspace of its own, demo/, so it never mixes with the project's real
data, models and MLflow store. On a fresh clone, with no server and no internet, this:

1. makes demo/ a git and DVC project of its own (`git init`, `dvc init`; demo/ is ignored
   by the project's git, so DVC's experiments and diffs work there without touching the
   project's history) and writes demo/params.yaml (profiles/cpu.yaml shrunk for a laptop CPU by
   `DEMO_OVERRIDES`, resolved into one file) and demo/dvc.yaml (the project's stages, code
   paths pointing back at the repository),
2. draws synthetic faces into demo/data/raw/synthetic (`ferflow synth`),
3. versions them with DVC (`ferflow data add`),
4. runs the Prefect retraining flow end to end in Prefect's local mode (state under
   demo/.prefect/): ingest, data contract, two training phases, evaluation, registration
   and promotion in the workspace's MLflow store demo/mlflow/mlflow.db,
5. records in demo/dvc.lock what the flow's stages read and wrote (`dvc commit`: the flow
   and dvc.yaml run the same stage functions on the same params), so `dvc status` and
   `dvc repro` in demo/ work on the demo's data and rerun only what changes, and commits
   the run in demo/'s git (params, dvc.lock, the .dvc pointers, the small reports), so
   `dvc exp run -S`, `dvc exp show`, `dvc params diff`, `dvc metrics diff` and
   `dvc plots diff` compare against it,
6. prints what to open next. In demo/ every `ferflow` command reads the demo's params, so
   `ferflow compare` and `ferflow predict` find the demo's model with no flags.

Running it again rewrites demo/params.yaml and reuses the cached stages.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ferflow.config import Params, apply_overrides, load_params, parse_params, read_params_file
from ferflow.console import configure_logging
from ferflow.errors import FerflowError
from ferflow.files import RUN_FILE
from ferflow.tracking.store import TrackingError, read_run_info, run_page_url
from flows.local import configure_local_prefect

log = logging.getLogger(__name__)

DEMO_DIR = "demo"  # the demo's workspace, relative to the repository root
DEMO_RAW = "data/raw/synthetic"  # relative to the workspace
DEMO_MODEL_NAME = "fer-densenet-demo"

DEMO_PARAMS = "profiles/cpu.yaml"

MLFLOW_UI_URL = "http://127.0.0.1:5000"
# A lighter `mlflow ui`: one web worker and no background job runner (MLflow 3.17 starts
# several uvicorn and huey processes by default: a minute or more on a laptop CPU)
MLFLOW_UI_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true"

# A few minutes on 2 CPU cores: the CPU profile (no ImageNet download, one phase,
# augmentation in the training step, densenet-bc-cpu: 0.66 on the demo's faces where the
# from-scratch profile's DenseNet121 reached 0.44), reading faces at 32 px, 8 epochs on a
# small synthetic set. A separate registered model, so the demo never becomes the
# champion of the real one. It must clear the default gate floors (chance is refused).
DEMO_REMOTE = "dvc-remote"  # the workspace's own DVC remote, a folder: `ferflow data push` works offline

DEMO_OVERRIDES = (
    f"data.raw={DEMO_RAW}",
    f"data.remote.url={DEMO_REMOTE}",
    "model.input_size=32",
    "synth.per_class=200",
    "synth.test_per_class=15",
    "train.batch_size=16",
    "finetune.epochs=8",
    "evaluate.batch_size=64",
    f"register.model_name={DEMO_MODEL_NAME}",
)


def run_demo(root: Path, params_file: str = DEMO_PARAMS, extra: Sequence[str] = ()) -> dict:
    """Write the workspace, synthesize, version, run the flow, record it for DVC; returns
    the promotion decision."""
    workspace = root / DEMO_DIR
    _step(1, f"writing the demo's workspace {DEMO_DIR}/ (params.yaml, dvc.yaml)")
    params = write_workspace(root, workspace, root / params_file, [*DEMO_OVERRIDES, *extra])
    configure_local_prefect(workspace)

    from ferflow.commands.data import add_data, synthesize
    from ferflow.data.versioning import configure_remote

    raw = workspace / DEMO_RAW
    _step(2, f"drawing synthetic faces into {DEMO_DIR}/{DEMO_RAW}")
    # Same seed, same bytes: a rerun leaves the folder (and its DVC version) unchanged.
    synthesize(params, raw)
    _step(3, f"versioning {DEMO_DIR}/{DEMO_RAW} with DVC")
    add_data(params, raw, dest=raw, root=workspace)
    configure_remote(params, workspace)  # its own folder remote (DEMO_REMOTE): push works offline

    _step(4, "running the Prefect retraining flow (local mode; first start takes a while)")
    from flows.retrain import retrain

    started = time.perf_counter()
    decision = retrain(params_file="params.yaml", overrides=[], root=str(workspace))
    log.info("flow finished in %.0f s", time.perf_counter() - started)
    _step(5, f"recording the stages' inputs and outputs in {DEMO_DIR}/dvc.lock and its git")
    record_for_dvc(workspace)
    commit_workspace(workspace, f"demo run: {decision.get('decision')} (version {decision.get('version')})")
    print(next_steps(workspace, params, decision))
    return decision


def write_workspace(root: Path, workspace: Path, params_file: Path, overrides: Sequence[str]) -> Params:
    """demo/params.yaml: the profile and overrides resolved into one file (DVC reads the
    params a stage depends on from the file itself: no `extends`); demo/dvc.yaml: the
    project's dvc.yaml with its code dependencies pointing back at the repository.
    Returns the demo's params; a bad override fails before anything is written."""
    raw = apply_overrides(read_params_file(params_file), overrides)
    expected = parse_params(raw, f"{params_file} with {list(overrides)}")
    workspace.mkdir(exist_ok=True)
    # A git and DVC project of its own: `dvc status` there lists only the demo's stages,
    # DVC's experiments and diffs have a history to compare with, and no file of the
    # project's git is touched (the project's git ignores demo/).
    if not (workspace / ".git").exists():
        _git(workspace, "init", "--quiet")
    if not (workspace / ".dvc").is_dir():
        _dvc(workspace, "init", "--quiet")
    elif "no_scm" in (workspace / ".dvc" / "config").read_text():
        _dvc(workspace, "config", "--unset", "core.no_scm")  # a workspace from before it had git
    (workspace / ".gitignore").write_text(WORKSPACE_GITIGNORE)
    header = (
        f"# The demo's params: {params_file.relative_to(root)} with flows/demo.py's overrides, resolved.\n"
        "# Written by `make demo` (every run rewrites it). Edit it and run `dvc repro` in this\n"
        "# folder to train the demo again with other values.\n"
    )
    target = workspace / "params.yaml"
    target.write_text(header + yaml.safe_dump(raw, sort_keys=False, default_flow_style=False, width=100))
    written = load_params(target)
    if written.digest() != expected.digest():  # the file says what the demo runs
        raise RuntimeError(f"{target} does not read back as the demo's params")
    stages = workspace_stages(yaml.safe_load((root / "dvc.yaml").read_text()), root, workspace)
    (workspace / "dvc.yaml").write_text(
        "# The project's dvc.yaml (../dvc.yaml) for the demo's workspace, written by `make demo`:\n"
        "# the same stages and commands, reading ./params.yaml, code paths pointing back at the repository.\n"
        + yaml.safe_dump(stages, sort_keys=False, width=100)
    )
    return written


def workspace_stages(pipeline: dict[str, Any], root: Path, workspace: Path) -> dict[str, Any]:
    """`pipeline` (dvc.yaml's mapping) for a workspace below `root`: a dependency that is
    code (not templated from params, not an output of a stage) is made relative to it."""
    outs = {
        next(iter(out)) if isinstance(out, dict) else out
        for stage in pipeline["stages"].values()
        for section in ("outs", "metrics")
        for out in stage.get(section, [])
    }
    up = Path(os.path.relpath(root, workspace))
    converted = dict(pipeline)

    def moved(dep: str) -> str:
        return dep if "${" in dep or dep in outs else (up / dep).as_posix()

    converted["stages"] = {
        name: {**stage, "deps": [moved(dep) for dep in stage.get("deps", [])]}
        for name, stage in pipeline["stages"].items()
    }
    return converted


def record_for_dvc(workspace: Path) -> None:
    """`dvc commit --force dvc.yaml` in the workspace: demo/dvc.lock records what the flow's
    stages read and wrote, and their outputs go to the DVC cache."""
    _dvc(workspace, "commit", "--force", "--quiet", "dvc.yaml")


# What the demo's git leaves out (DVC adds the data and models it caches beside them).
WORKSPACE_GITIGNORE = f"""\
# Written by `make demo`. The demo's git holds what DVC compares (params.yaml, dvc.yaml,
# dvc.lock, the .dvc pointers, the small reports); not the stores:
/mlflow/
/.prefect/
/{DEMO_REMOTE}/
/reports/data_docs/
/models/backup/
/models/training.lock
"""


def commit_workspace(workspace: Path, message: str) -> None:
    """Commit the workspace's files to its own git (nothing when nothing changed). An author
    is named for this commit only where git has none configured."""
    _git(workspace, "add", "--all")
    if not _git(workspace, "status", "--porcelain"):
        return
    identity: list[str] = []
    if not _git(workspace, "config", "user.email", check=False):
        identity = ["-c", "user.name=ferflow demo", "-c", "user.email=demo@ferflow.invalid"]
    _git(workspace, *identity, "commit", "--quiet", "--message", message)


def _git(workspace: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run(["git", *args], cwd=workspace, capture_output=True, text=True)
    if check and done.returncode != 0:
        why = done.stderr.strip() or done.stdout.strip()
        raise RuntimeError(f"`git {' '.join(args)}` in {workspace} failed: {why}")
    return done.stdout.strip()


def _dvc(workspace: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=workspace, capture_output=True, text=True)
    if done.returncode != 0:
        why = done.stderr.strip() or done.stdout.strip()
        raise RuntimeError(f"`dvc {' '.join(args)}` in {workspace} failed: {why}")


def next_steps(workspace: Path, params: Params, decision: dict) -> str:
    """What to open next: MLflow UI, reports, Data Docs, a prediction, DVC; all from the
    workspace, where every command reads the demo's params."""
    uri, name = params.tracking.tracking_uri, params.registry.model_name
    docs = sorted((workspace / "reports").glob("**/data_docs/**/index.html")) or sorted(
        (workspace / "reports").glob("**/index.html")
    )
    sample = next(iter(sorted((workspace / DEMO_RAW / "test").glob("*/*.jpg"))), None)
    lines = [
        "",
        "Demo done.",
        f"  decision:   {decision.get('decision')} - {decision.get('reason')}",
        f"  registered: {name} version {decision.get('version')}",
        f"  champion:   models:/{name}@champion (version {champion_version(decision)})",
        "",
        f"Open next, from the demo's workspace (`cd {DEMO_DIR}`; `source ../.venv/bin/activate`):",
        f"  MLflow UI:  {MLFLOW_UI_ENV} mlflow ui --workers 1 --backend-store-uri {uri}",
        f"              then {ui_link(workspace)}",
        "  metrics:    reports/metrics.json, plots in reports/plots/",
        f"  Data Docs:  {docs[0].relative_to(workspace) if docs else 'reports/validation.json'}",
        "  Prefect:    PREFECT_HOME=.prefect prefect server start   (runs and artifacts)",
    ]
    if sample is not None:
        lines.append(f"  predict:    ferflow predict {sample.relative_to(workspace)}")
    lines += [
        "  compare:    ferflow compare   (champion vs challenger)",
        "  DVC:        dvc status; dvc repro (nothing to do); dvc metrics show",
        "              dvc exp run -S finetune.epochs=12   (a second version, registered and",
        "              compared with the champion), then dvc exp show --only-changed;",
        "              dvc params diff; dvc metrics diff; dvc plots diff",
        f"              ferflow data push   (to the workspace's own remote, {DEMO_REMOTE}/)",
    ]
    return "\n".join(lines) + "\n"


def ui_link(workspace: Path) -> str:
    """The demo run in the MLflow UI, in its model-training view (MLflow 3.17 opens an
    experiment on GenAI traces unless the URL or the sidebar switch says otherwise)."""
    try:
        run = read_run_info(workspace / "models" / RUN_FILE)
    except TrackingError:
        run = None
    if run is None:
        return f"{MLFLOW_UI_URL}  (click 'Model training' in the sidebar once)"
    return run_page_url(MLFLOW_UI_URL, run.experiment_id, run.run_id)


def champion_version(decision: dict) -> str | None:
    """The champion after this run: this version if promoted, else the one that stayed."""
    if decision.get("decision") == "promoted":
        return decision.get("version")
    champion = decision.get("champion")
    return champion.get("version") if isinstance(champion, dict) else None


def _step(number: int, text: str) -> None:
    print(f"[demo {number}/5] {text}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra override")
    args = parser.parse_args(argv)
    # ferflow's progress and the Prefect runs' lines at INFO; other libraries only when they warn
    configure_logging("INFO", also=("prefect.flow_runs", "prefect.task_runs"))
    root = Path.cwd()
    if not (root / "params.yaml").exists():
        print("ferflow demo: error: run it from the repository root (no params.yaml here)", file=sys.stderr)
        return 2
    try:
        run_demo(root, extra=args.overrides)
    except FerflowError as err:
        print(f"ferflow demo: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
