"""`ferflow ...`: the command line that DVC stages and people call.

Only this module parses arguments. Each command loads params.yaml once (with `--set`
overrides), then calls one function of the core library. Errors that are the user's to
fix (`FerflowError`) are printed as one clear line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ferflow.config import Params, load_params
from ferflow.errors import FerflowError

log = logging.getLogger("ferflow")

Handler = Callable[[argparse.Namespace, Params], int | None]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one param (repeatable), validated like params.yaml",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


# --- data -----------------------------------------------------------------------------


def _ingest(args: argparse.Namespace, params: Params) -> None:
    from ferflow.data.ingest import ingest

    ingest(Path(args.source), Path(args.out or params.data.prepared), params)


def _validate(args: argparse.Namespace, params: Params) -> int:
    from ferflow.validation import validate_dataset

    data_dir = Path(args.data or params.data.prepared)
    reference = Path(args.reference) if args.reference else None
    report = validate_dataset(data_dir, params, Path(args.report_dir), reference)
    print(report.summary_markdown())
    for check in report.warnings:
        print(f"warning: {check.line()}", file=sys.stderr)
    for check in report.errors:
        print(f"error: {check.line()}", file=sys.stderr)
    print(f"report: {report.report_path}\nData Docs: {report.data_docs_index}")
    return 0 if report.passed else 1


def _synth(args: argparse.Namespace, params: Params) -> None:
    from ferflow.data.synth import write_synthetic_dataset

    write_synthetic_dataset(
        Path(args.out),
        classes=params.base.classes,
        per_class=args.per_class or params.synth.per_class,
        test_per_class=args.test_per_class or params.synth.test_per_class,
        seed=params.base.seed if args.seed is None else args.seed,
        size=params.base.image_size,
    )


def _data_add(args: argparse.Namespace, params: Params) -> None:
    from ferflow.data.versioning import add_dataset

    add_dataset(Path(args.path), params, dest=Path(args.dest) if args.dest else None, force=args.force)


def _data_remote(args: argparse.Namespace, params: Params) -> None:
    from ferflow.data.versioning import configure_remote

    print(configure_remote(params))


def _data_push(args: argparse.Namespace, params: Params) -> None:
    from ferflow.data.versioning import push

    print(f"pushed {push(params, targets=args.targets)} file(s)")


def _data_pull(args: argparse.Namespace, params: Params) -> None:
    from ferflow.data.versioning import pull

    print(f"fetched {pull(params, targets=args.targets)} file(s)")


# --- training --------------------------------------------------------------------------


def _train(args: argparse.Namespace, params: Params) -> None:
    from ferflow.train import train_stage

    print(train_stage(params, Path(args.data or params.data.prepared), Path(args.models)))


def _finetune(args: argparse.Namespace, params: Params) -> None:
    from ferflow.train import finetune_stage

    print(finetune_stage(params, Path(args.data or params.data.prepared), Path(args.models)))


# --- compare ---------------------------------------------------------------------------


def _compare(args: argparse.Namespace, params: Params) -> None:
    from ferflow.compare import compare, render

    print(render(compare(args.a, args.b, params), args.format), end="")


# --- evaluate, register, promote, predict ----------------------------------------------


def _evaluate(args: argparse.Namespace, params: Params) -> None:
    import json

    from ferflow.evaluate import evaluate_source, evaluate_stage

    if args.model or args.data:
        model = args.model or "models/model.keras"
        data = Path(args.data or params.data.prepared)
        metrics = evaluate_source(params, model, data, Path(args.out))
    else:
        metrics = evaluate_stage(params, Path(params.data.prepared), Path(args.models_dir), Path(args.out))
    summary = {k: round(metrics[k], 4) for k in ("accuracy", "macro_f1", "weighted_f1", "macro_auc")}
    print(json.dumps(summary))


def _register(args: argparse.Namespace, params: Params) -> None:
    from ferflow.registry import register_stage

    decision = register_stage(
        params, Path(args.models_dir), Path(args.reports_dir), Path(args.data or params.data.prepared)
    )
    name = params.registry.model_name
    print(f"{name} version {decision['version']}: {decision['decision']} ({decision['reason']})")


def _promote(args: argparse.Namespace, params: Params) -> None:
    from ferflow.registry import promote_version, rollback

    if args.rollback == bool(args.version):
        raise FerflowError("give exactly one of --rollback or --version N")
    result = rollback(params) if args.rollback else promote_version(params, args.version)
    print(f"{result['model_name']}: champion is now version {result['champion']} ({result['reason']})")


def _predict(args: argparse.Namespace, params: Params) -> None:
    from ferflow.predict import format_predictions, predict

    predictions = predict(args.images, params, model=args.model, skip_bad=args.skip_bad)
    print(format_predictions(predictions, args.format))


# --- orchestration ---------------------------------------------------------------------


def _run(args: argparse.Namespace, params: Params) -> None:
    """The Prefect retraining flow, or one stage of it without Prefect (`--stage`)."""
    if args.stage:
        import json

        from ferflow.stages import Paths, run_stage

        result = run_stage(args.stage, params, Paths.from_params(params))
        print(json.dumps(result, default=str))
        return
    from ferflow.demo import quiet_prefect_defaults

    quiet_prefect_defaults()
    from flows.retrain import check_prefect_api, retrain

    check_prefect_api()
    decision = retrain(
        params_file=args.params, overrides=args.overrides, pull_data=args.pull, push_data=args.push
    )
    print(f"{decision.get('model_name')} version {decision.get('version')}: {decision.get('decision')}")


# --- commands --------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ferflow", description="Facial emotion recognition workflow (FER2013, DenseNet)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p)
        p.set_defaults(handler=handler)
        return p

    p = command("ingest", _ingest, "read a FER dataset (folder, .zip or fer2013.csv) into canonical form")
    p.add_argument("source", help="folder with train/ and test/, a .zip of it, or fer2013.csv")
    p.add_argument("--out", help="output folder (default: data.prepared)")

    p = command("validate", _validate, "check a prepared dataset against the data contract (exit 1: errors)")
    p.add_argument("data", nargs="?", help="prepared dataset folder (default: data.prepared)")
    p.add_argument("--report-dir", default="reports", help="where validation.json and data_docs/ go")
    p.add_argument("--reference", help="profile.json of the last accepted dataset, for the drift check")

    p = command("train", _train, "phase 1: frozen DenseNet, train the dense head (models/head.keras)")
    p.add_argument("--data", help="prepared dataset folder (default: data.prepared)")
    p.add_argument("--models", default="models", help="models folder (default: models)")

    p = command("finetune", _finetune, "phase 2: fine-tune the whole network (models/model.keras)")
    p.add_argument("--data", help="prepared dataset folder (default: data.prepared)")
    p.add_argument("--models", default="models", help="models folder (default: models)")

    p = command("synth", _synth, "draw synthetic 48x48 faces for the 7 emotions (folder layout)")
    p.add_argument("--out", required=True, help="output folder (gets train/ and test/)")
    p.add_argument("--per-class", type=int, help="train images per class (default: synth.per_class)")
    p.add_argument("--test-per-class", type=int, help="test images per class (default: synth.test_per_class)")
    p.add_argument("--seed", type=int, help="random seed (default: base.seed)")

    p = command("compare", _compare, "two runs or model versions side by side: params, metrics, deltas")
    p.add_argument(
        "a", nargs="?", help="run id, models:/NAME/VERSION, models:/NAME@ALIAS or alias (default: champion)"
    )
    p.add_argument("b", nargs="?", help="the same kinds of reference (default: challenger)")
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text", help="output format")

    p = command("evaluate", _evaluate, "test-split metrics and plots (reports/metrics.json, reports/plots/)")
    p.add_argument("--model", help="models:/NAME@ALIAS, models:/NAME/N, runs:/ID/model or a .keras file")
    p.add_argument("--data", help="prepared dataset, or any source ingest reads (default: data.prepared)")
    p.add_argument("--out", default="reports", help="report folder (default: reports)")
    p.add_argument("--models-dir", default="models", help="model.keras, history.json, run.json")

    p = command("register", _register, "register models/model.keras and run the promotion gate")
    p.add_argument("--models-dir", default="models", help="model.keras and run.json (default: models)")
    p.add_argument("--reports-dir", default="reports", help="metrics.json in, promotion.json out")
    p.add_argument("--data", help="prepared dataset the champion is compared on (default: data.prepared)")

    p = command("promote", _promote, "move the champion alias by hand: --rollback or --version N")
    p.add_argument("--rollback", action="store_true", help="make previous-champion the champion again")
    p.add_argument("--version", help="make this registered version the champion (no gate)")

    p = command("predict", _predict, "predict the emotion of image files (any format, any size)")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders of images")
    p.add_argument("--model", help="model URI or .keras file (default: models:/MODEL_NAME@champion)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    p.add_argument("--skip-bad", action="store_true", help="skip undecodable files instead of failing")

    p = command("run", _run, "the whole pipeline as a Prefect flow (or one stage with --stage)")
    p.add_argument(
        "--stage",
        choices=("pull-data", "ingest", "validate", "train", "finetune", "evaluate", "register", "push-data"),
        help="run only this stage, without Prefect (what dvc.yaml's register stage calls)",
    )
    p.add_argument("--pull", action="store_true", default=None, help="dvc pull the data first")
    p.add_argument("--push", action="store_true", default=None, help="dvc push the data afterwards")

    data = sub.add_parser("data", help="put datasets under DVC control")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = data_sub.add_parser("add", help="copy a FER download into data/raw and track it with DVC")
    _common(p)
    p.set_defaults(handler=_data_add)
    p.add_argument("path", help="folder, .zip or fer2013.csv to track")
    p.add_argument("--dest", help="where it goes (default: data.raw; a .zip/.csv keeps its suffix)")
    p.add_argument("--force", action="store_true", help="replace data already at the destination")
    p = data_sub.add_parser("remote", help="make data.remote the default DVC remote (no credentials written)")
    _common(p)
    p.set_defaults(handler=_data_remote)
    for action, handler, verb in (("push", _data_push, "upload"), ("pull", _data_pull, "download")):
        p = data_sub.add_parser(action, help=f"dvc {action}: {verb} tracked data via data.remote")
        _common(p)
        p.set_defaults(handler=handler)
        p.add_argument("targets", nargs="*", help="tracked paths or .dvc files (default: all)")

    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # TensorFlow's C++ start-up chatter is noise for a CLI user.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        params = load_params(args.params, args.overrides)
        _configure_logging("DEBUG" if args.verbose else params.base.log_level)
        result = args.handler(args, params)
    except FerflowError as err:
        print(f"ferflow {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
