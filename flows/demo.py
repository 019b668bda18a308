"""`make demo` (`python -m flows.demo`): the whole workflow on synthetic faces, offline.

On a fresh clone, with no server and no internet, this:

1. draws synthetic faces (`ferflow synth`),
2. versions them with DVC (`ferflow data add`),
3. runs the Prefect retraining flow end to end in Prefect's local mode (state under
   .prefect/): ingest, data contract, two training phases, evaluation, registration and
   promotion in the local MLflow store under mlflow/,
4. prints what to open next.

The configuration is profiles/from-scratch.yaml shrunk for a laptop CPU (`DEMO_OVERRIDES`,
validated like any `--set`). Running it again reuses the cached stages.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from ferflow.config import Params, load_params
from ferflow.errors import FerflowError
from flows.local import configure_local_prefect

log = logging.getLogger(__name__)

DEMO_RAW = "data/raw/synthetic"
DEMO_MODEL_NAME = "fer-densenet-demo"

DEMO_PARAMS = "profiles/from-scratch.yaml"

# A few minutes on 2 CPU cores: the from-scratch profile (no ImageNet download, one phase,
# augmentation in the training step), its DenseNet121 reading faces at 32 px, a few epochs on
# a small synthetic set. A separate registered model, so the demo never becomes the
# champion of the real one. It must clear the default gate floors (chance is refused).
DEMO_OVERRIDES = (
    f"data.raw={DEMO_RAW}",
    "model.input_size=32",
    "synth.per_class=200",
    "synth.test_per_class=15",
    "train.batch_size=16",
    "finetune.epochs=8",
    "evaluate.batch_size=64",
    f"register.model_name={DEMO_MODEL_NAME}",
)


def run_demo(root: Path, params_file: str = DEMO_PARAMS, extra: Sequence[str] = ()) -> dict:
    """Synthesize, version, run the flow; returns the promotion decision."""
    overrides = [*DEMO_OVERRIDES, *extra]
    params = load_params(root / params_file, overrides)  # fail fast on a bad override
    configure_local_prefect(root)

    from ferflow.stages.data import add_data, synthesize

    raw = root / DEMO_RAW
    _step(1, f"drawing synthetic faces into {DEMO_RAW}")
    # Same seed, same bytes: a rerun leaves the folder (and its DVC version) unchanged.
    synthesize(params, raw)
    _step(2, f"versioning {DEMO_RAW} with DVC")
    add_data(params, raw, dest=raw, root=root)

    _step(3, "running the Prefect retraining flow (local mode; first start takes a while)")
    from flows.retrain import retrain

    started = time.perf_counter()
    decision = retrain(params_file=params_file, overrides=overrides, root=str(root))
    log.info("flow finished in %.0f s", time.perf_counter() - started)
    print(next_steps(root, params, decision))
    return decision


def next_steps(root: Path, params: Params, decision: dict) -> str:
    """What to open next: MLflow UI, reports, Data Docs, a prediction."""
    uri, name = params.tracking.tracking_uri, params.registry.model_name
    docs = sorted((root / "reports").glob("**/data_docs/**/index.html")) or sorted(
        (root / "reports").glob("**/index.html")
    )
    sample = next(iter(sorted((root / DEMO_RAW / "test").glob("*/*.jpg"))), None)
    lines = [
        "",
        "Demo done.",
        f"  decision:   {decision.get('decision')} - {decision.get('reason')}",
        f"  registered: {name} version {decision.get('version')}",
        f"  champion:   models:/{name}@champion (version {champion_version(decision)})",
        "",
        "Open next:",
        f"  MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {uri}   (then http://127.0.0.1:5000)",
        "  metrics:    reports/metrics.json, plots in reports/plots/",
        f"  Data Docs:  {docs[0] if docs else 'reports/ (see reports/validation.json)'}",
        "  Prefect:    PREFECT_HOME=.prefect .venv/bin/prefect server start   (runs and artifacts)",
    ]
    if sample is not None:
        lines.append(
            f"  predict:    .venv/bin/ferflow predict --model-name {name} {sample.relative_to(root)}"
        )
    lines.append(
        f"  compare:    .venv/bin/ferflow compare --model-name {name}   (champion vs challenger; "
        "a second version: .venv/bin/python -m flows.demo --set finetune.epochs=12)"
    )
    return "\n".join(lines) + "\n"


def champion_version(decision: dict) -> str | None:
    """The champion after this run: this version if promoted, else the one that stayed."""
    if decision.get("decision") == "promoted":
        return decision.get("version")
    champion = decision.get("champion")
    return champion.get("version") if isinstance(champion, dict) else None


def _step(number: int, text: str) -> None:
    print(f"[demo {number}/3] {text}", flush=True)


class _RunNameFormatter(logging.Formatter):
    """Show which Prefect task or flow run a Prefect log line is about."""

    def format(self, record: logging.LogRecord) -> str:
        run = getattr(record, "task_run_name", None) or getattr(record, "flow_run_name", None)
        if run:
            record = logging.makeLogRecord({**record.__dict__, "name": f"{record.name} {run}"})
        return super().format(record)


def configure_demo_logging() -> None:
    """ferflow's progress at INFO; other libraries (GX, httpx, MLflow) only when they warn."""
    handler = logging.StreamHandler()
    handler.setFormatter(_RunNameFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    logging.basicConfig(level="WARNING", handlers=[handler])
    logging.getLogger("ferflow").setLevel("INFO")
    logging.getLogger("flows").setLevel("INFO")
    logging.getLogger("prefect.flow_runs").setLevel("INFO")
    logging.getLogger("prefect.task_runs").setLevel("INFO")
    # TensorFlow's retracing notes and these two library warnings say nothing a demo user
    # can act on.
    logging.getLogger("tensorflow").setLevel("ERROR")
    warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
    warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra override")
    args = parser.parse_args(argv)
    configure_demo_logging()
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
