"""Rank recipe options with short proxy runs of the real pipeline (issue #21, item 4).

Every variant is one `ferflow train` + `ferflow finetune` of a profile, its options given as
`--set` overrides on the command line, each run in one MLflow experiment: `ferflow compare
RUN_A RUN_B` and the MLflow UI (experiment `search-...`) show the search. A proxy is short:
a stratified subset of the train images (a new zip: the source is only read) and a few
fixed epochs (fixed, so another process slowing the machine cannot change the result).

The test split is never looked at: the variants are ranked by validation accuracy, with the
validation macro-F1 beside it (computed here, with the profile's test-time flip, and logged
to the run as `search.val_accuracy` / `search.val_macro_f1`). Full runs of the best follow
by hand, with the profile and the winning overrides (docs/training.md).

    python scripts/search.py scripts/search-cpu.yaml --zip ../shared/data/fer2013.zip
    python scripts/search.py scripts/search-cpu.yaml --zip ... --only baseline,ema-0.99

A variant whose result is in WORK/results.json is not run again, and one whose model is
trained (WORK/models/VARIANT/model.keras) is only scored: delete them to rerun. The proxies'
`ferflow` commands run the repository's code as it is when each starts: do not change the
training code or params.yaml's schema while a search runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

log = logging.getLogger("search")
REPO = Path(__file__).resolve().parents[1]


def subset_zip(source: Path, out: Path, fraction: float, seed: int) -> Path:
    """`fraction` of each class folder of the source zip (train and test), drawn with `seed`."""
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(source) as zin:
        by_folder: dict[str, list[zipfile.ZipInfo]] = {}
        for info in zin.infolist():
            if not info.is_dir():
                by_folder.setdefault(info.filename.rsplit("/", 1)[0], []).append(info)
        rng = np.random.default_rng(seed)
        part = out.with_suffix(".part")
        with zipfile.ZipFile(part, "w", zipfile.ZIP_STORED) as zout:
            for folder in sorted(by_folder):
                members = sorted(by_folder[folder], key=lambda i: i.filename)
                keep = rng.permutation(len(members))[: max(1, round(fraction * len(members)))]
                for index in sorted(keep):
                    zout.writestr(members[index], zin.read(members[index]))
    part.rename(out)
    log.info("subset: %s (%.0f%% of each class folder of %s)", out, 100 * fraction, source)
    return out


def ferflow(*args: str) -> None:
    command = [str(Path(sys.executable).with_name("ferflow")), *args]
    log.info("$ %s", " ".join(command))
    subprocess.run(command, cwd=REPO, check=True)


def validation_scores(models: Path, data: Path, tta_flip: bool, classes: list[str]) -> dict[str, float]:
    """Accuracy and macro-F1 of models/model.keras on the validation split."""
    from ferflow.data.dataset import load_prepared
    from ferflow.evaluation.evaluate import compute_metrics, load_keras_predict_fn, predict_probabilities

    images, labels = load_prepared(data).split("val")
    probs = predict_probabilities(load_keras_predict_fn(models / "model.keras", 256), images, 256, tta_flip)
    metrics = compute_metrics(labels, probs, classes)
    return {"val_accuracy": metrics["accuracy"], "val_macro_f1": metrics["macro_f1"]}


def record(run_id: str, variant: str, overrides: list[str], scores: dict[str, float]) -> float:
    """Name the MLflow run after its variant and log its validation scores on it; returns
    the run's minutes (train and finetune, from MLflow's clock)."""
    import mlflow

    from ferflow.config import load_params
    from ferflow.tracking.store import tracking_uri

    client = mlflow.MlflowClient(tracking_uri(load_params(REPO / "params.yaml")))
    client.set_tag(run_id, "mlflow.runName", f"search-{variant}")
    client.set_tag(run_id, "ferflow.search.variant", variant)
    client.set_tag(run_id, "ferflow.search.overrides", " ".join(overrides) or "(none)")
    for name, value in scores.items():
        client.log_metric(run_id, f"search.{name}", value)
    info = client.get_run(run_id).info
    return ((info.end_time or info.start_time) - info.start_time) / 60_000


def run_variant(
    spec: dict[str, Any], variant: str, overrides: list[str], data: Path, work: Path
) -> dict[str, Any]:
    from ferflow.config import load_params

    models = work / "models" / variant
    sets = [
        f"tracking.experiment={spec['experiment']}",
        *spec.get("proxy", []),
        *overrides,
    ]
    common = ["--params", spec["profile"], "--data", str(data), "--models", str(models)]
    for item in sets:
        common += ["--set", item]
    if (models / "model.keras").exists() and (models / "run.json").exists():
        log.info("%s: trained already (%s), scoring it", variant, models / "model.keras")
    else:
        ferflow("train", *common)
        ferflow("finetune", *common)
    params = load_params(REPO / spec["profile"], sets)
    scores = validation_scores(models, data, params.evaluate.tta_flip, list(params.base.classes))
    run_id = json.loads((models / "run.json").read_text())["run_id"]
    minutes = record(run_id, variant, overrides, scores)
    return {
        "variant": variant,
        "overrides": overrides,
        "run_id": run_id,
        "minutes": round(minutes, 1),
        **scores,
    }


def table(results: list[dict[str, Any]]) -> str:
    rows = sorted(results, key=lambda r: -r["val_accuracy"])
    baseline = next((r for r in results if r["variant"] == "baseline"), None)
    lines = [f"{'variant':<22} {'val acc':>8} {'vs base':>8} {'val F1':>7} {'min':>5}  run"]
    for r in rows:
        delta = f"{r['val_accuracy'] - baseline['val_accuracy']:+.3f}" if baseline else ""
        lines.append(
            f"{r['variant']:<22} {r['val_accuracy']:>8.3f} {delta:>8} {r['val_macro_f1']:>7.3f} "
            f"{r['minutes']:>5.1f}  {r['run_id']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("spec", type=Path, help="the search: profile, proxy overrides, variants (YAML)")
    parser.add_argument("--zip", type=Path, required=True, help="FER2013 in the folder layout, zipped")
    parser.add_argument("--work", type=Path, default=REPO / "search", help="subset, data, models, results")
    parser.add_argument("--only", help="comma-separated variants to run (default: all)")
    args = parser.parse_args(argv)
    from ferflow.console import configure_logging

    configure_logging("INFO")  # as the CLI: scoring imports TensorFlow here, without its start-up lines

    spec = yaml.safe_load(args.spec.read_text())
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    subset = spec.get("subset", {})
    zipped = subset_zip(args.zip, work / "subset.zip", subset.get("fraction", 0.35), subset.get("seed", 0))
    data = work / "prepared"
    if not (data / "manifest.csv").exists():
        ferflow("ingest", str(zipped), "--out", str(data), "--params", spec["profile"])
        ferflow("validate", str(data), "--params", spec["profile"])

    results_file = work / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else []
    wanted = args.only.split(",") if args.only else list(spec["variants"])
    for variant in wanted:
        if variant not in spec["variants"]:
            parser.error(f"no variant {variant!r} in {args.spec}; it has {', '.join(spec['variants'])}")
        if any(r["variant"] == variant for r in results):
            log.info("%s: done already (%s)", variant, results_file)
            continue
        results.append(run_variant(spec, variant, list(spec["variants"][variant] or []), data, work))
        results_file.write_text(json.dumps(results, indent=2) + "\n")
        log.info("after %s:\n%s", variant, table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
