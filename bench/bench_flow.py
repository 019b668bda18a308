"""Orchestration overhead: the Prefect flow vs the same stage functions called directly.

Same tiny synthetic data and params, one run each, measured in this process:

1. baseline: `ferflow.stages` ingest -> validate -> train -> finetune -> evaluate -> register
   called directly (no Prefect), in workspace A;
2. the Prefect flow on the same data and params in workspace B (local mode; the start of
   Prefect's temporary server is timed separately);
3. the same flow again, unchanged: every expensive stage is a cache hit;
4. `dvc repro` of dvc.yaml in a git + DVC copy, then a no-op `dvc repro`.

Prints each time, the ratio to the baseline and the fixed overhead (flow - baseline).
Run: `.venv/bin/python bench/bench_flow.py` (add `--skip-dvc` to leave out step 4).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import TINY_PIPELINE  # noqa: E402 (after the path insert)

TINY = [
    "data.raw=data/raw/synthetic",
    *TINY_PIPELINE,
    "register.model_name=fer-bench",
]


def workspace(base: Path, name: str) -> Path:
    """A folder with params.yaml (tiny params written in) and synthetic raw data."""
    from ferflow.commands.data import synthesize
    from ferflow.config import apply_overrides, load_params, read_yaml

    root = base / name
    root.mkdir()
    tiny = apply_overrides(read_yaml((REPO / "params.yaml").read_text()), TINY)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))
    synthesize(load_params(root / "params.yaml"), root / "data/raw/synthetic")
    (root / "mlflow").mkdir()
    return root


def use_mlflow_store(root: Path) -> None:
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"


def timed(label: str, action) -> float:
    started = time.perf_counter()
    action()
    elapsed = time.perf_counter() - started
    print(f"{label:<44} {elapsed:8.1f} s", flush=True)
    return elapsed


def direct_stages(root: Path) -> None:
    import contextlib

    from ferflow import stages
    from ferflow.config import load_params

    params = load_params(root / "params.yaml")
    paths = stages.Layout.from_params(params, root)
    with contextlib.chdir(root):
        stages.ingest(params, paths)
        stages.require_valid(stages.validate(params, paths))
        stages.train(params, paths)
        stages.finetune(params, paths)
        stages.evaluate(params, paths)
        stages.register(params, paths)


def warm_imports() -> None:
    """Import the heavy libraries once, so neither side pays for them (they cost tens of seconds)."""
    import great_expectations  # noqa: F401
    import keras  # noqa: F401
    import mlflow  # noqa: F401
    import prefect  # noqa: F401


def trivial_flow() -> None:
    from prefect import flow

    @flow(name="bench-warm-up")
    def warm_up() -> int:
        return 1

    warm_up()


def run_flow(root: Path) -> None:
    from flows.retrain import retrain

    retrain(params_file="params.yaml", root=str(root))


def dvc_repro(root: Path) -> None:
    bin_dir = str(Path(sys.executable).parent)  # dvc.yaml calls `ferflow`, as in an activated venv
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    dvc = str(Path(bin_dir) / "dvc")
    subprocess.run([dvc, "repro", "-q"], cwd=root, env=env, check=True)


def dvc_workspace(base: Path) -> Path:
    root = workspace(base, "dvc")
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    dvc = str(Path(sys.executable).parent / "dvc")
    for command in (["git", "init", "-q"], [dvc, "init", "-q"], [dvc, "add", "-q", "data/raw/synthetic"]):
        subprocess.run(command, cwd=root, check=True)
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-dvc", action="store_true", help="leave out the dvc repro timings")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-flow-") as tmp:
        base = Path(tmp)
        os.environ.update(
            PREFECT_HOME=str(base / ".prefect"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="600",
            TF_CPP_MIN_LOG_LEVEL="3",
        )
        os.environ.pop("PREFECT_API_URL", None)
        direct_root, flow_root = workspace(base, "direct"), workspace(base, "flow")

        timed("warm-up: import keras, GX, mlflow, prefect", warm_imports)
        use_mlflow_store(direct_root)
        baseline = timed("baseline: stage functions called directly", lambda: direct_stages(direct_root))
        use_mlflow_store(flow_root)
        server = timed("Prefect local server start (once per process)", trivial_flow)
        first = timed("Prefect flow, first run", lambda: run_flow(flow_root))
        cached = timed("Prefect flow, unchanged rerun (cached)", lambda: run_flow(flow_root))
        print(f"flow / baseline ratio:                        {first / baseline:8.2f}x")
        print(f"fixed flow overhead (flow - baseline):        {first - baseline:8.1f} s")
        print(f"cached rerun / first run ratio:               {cached / first:8.2f}x")
        print(f"server start + first run / baseline:          {(server + first) / baseline:8.2f}x")
        if not args.skip_dvc:
            dvc_root = dvc_workspace(base)
            use_mlflow_store(dvc_root)
            full = timed("dvc repro, first run", lambda: dvc_repro(dvc_root))
            noop = timed("dvc repro, nothing changed", lambda: dvc_repro(dvc_root))
            print(f"no-op dvc repro / first dvc repro ratio:      {noop / full:8.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
