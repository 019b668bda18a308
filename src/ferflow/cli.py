"""`ferflow ...`: the command line that DVC stages and people call.

Only this module parses arguments. Each command loads params.yaml once (with `--set`
overrides), then calls one function of ferflow.stages (`ferflow run` without `--stage`
starts the Prefect flow through flows.local). Errors that are the user's to fix
(`FerflowError`) are printed as one clear line; the exit code says which kind (table in
ferflow.errors: 1 contract failed, 2 user error, 3 prepared data unreadable).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from ferflow import __version__
from ferflow.config import Params, load_params
from ferflow.console import Terminated, configure_logging, fault_line, folder_option, interrupt, terminate
from ferflow.errors import EXIT_USER_ERROR, FerflowError
from ferflow.stages.layout import Layout
from ferflow.stages.spec import STAGES
from ferflow.tracking.store import redact, tracking_uri

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
    parser.add_argument(
        "--model-name",
        metavar="NAME",
        help="registered model to use (default: register.model_name; the demo's is fer-densenet-demo)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


# --- data -----------------------------------------------------------------------------


def _layout(params: Params) -> Layout:
    return Layout.from_params(params)


def _ingest(args: argparse.Namespace, params: Params) -> None:
    from ferflow.stages.ingestion import ingest

    ingest(params, _layout(params).with_raw(args.source).moved(prepared=args.out))


def _validate(args: argparse.Namespace, params: Params) -> int:
    from ferflow.stages.validation import validate

    layout = _layout(params).moved(prepared=args.data, reports=args.reports)
    report = validate(params, layout, Path(args.reference) if args.reference else None)
    # ferflow.contract.validation logs each finding once; every check is in the report and Data Docs
    print(f"report: {report.report_path}\nData Docs: {report.data_docs_index}")
    return 0 if report.passed else 1


def _synth(args: argparse.Namespace, params: Params) -> None:
    from ferflow.commands.data import synthesize

    synthesize(params, Path(args.out), args.per_class, args.test_per_class, args.seed)


def _data_add(args: argparse.Namespace, params: Params) -> None:
    from ferflow.commands.data import add_data

    target = add_data(
        params,
        Path(args.path),
        dest=Path(args.dest) if args.dest else None,
        force=args.force,
        params_file=Path(args.params),
    )
    print(target)


def _data_remote(args: argparse.Namespace, params: Params) -> None:
    from ferflow.commands.data import configure_remote

    print(configure_remote(params))


def _data_push(args: argparse.Namespace, params: Params) -> None:
    from ferflow.commands.data import push_targets

    print(f"pushed {push_targets(params, args.targets)} file(s)")


def _data_pull(args: argparse.Namespace, params: Params) -> None:
    from ferflow.commands.data import pull_targets

    print(f"fetched {pull_targets(params, args.targets)} file(s)")


# --- training --------------------------------------------------------------------------


def _train(args: argparse.Namespace, params: Params) -> None:
    from ferflow.stages.head_training import train

    print(train(params, _layout(params).moved(prepared=args.data, models=args.models)))


def _finetune(args: argparse.Namespace, params: Params) -> None:
    from ferflow.stages.fine_tuning import finetune

    print(finetune(params, _layout(params).moved(prepared=args.data, models=args.models)))


# --- evaluate, compare, predict ----------------------------------------------------------


def _evaluate(args: argparse.Namespace, params: Params) -> None:
    import json

    from ferflow.commands.models import evaluate_source
    from ferflow.stages.evaluation import evaluate

    if args.model or args.data:
        model = args.model or str(_layout(params).moved(models=args.models).model_file)
        data = Path(args.data or params.data.prepared)
        metrics = evaluate_source(params, model, data, Path(args.reports))
    else:
        metrics = evaluate(params, _layout(params).moved(models=args.models, reports=args.reports))
    summary = {k: round(metrics[k], 4) for k in ("accuracy", "macro_f1", "weighted_f1", "macro_auc")}
    print(json.dumps(summary))


def _compare(args: argparse.Namespace, params: Params) -> None:
    from ferflow.commands.models import compare
    from ferflow.evaluation.compare import render

    print(render(compare(args.a, args.b, params), args.format), end="")


def _predict(args: argparse.Namespace, params: Params) -> None:
    from ferflow.commands.models import predict
    from ferflow.evaluation.predict import format_predictions

    predictions = predict(args.images, params, model=args.model, skip_bad=args.skip_bad)
    print(format_predictions(predictions, args.format))


# --- register, promote -----------------------------------------------------------------


def _register(args: argparse.Namespace, params: Params) -> None:
    from ferflow.stages.registration import register

    layout = _layout(params).moved(prepared=args.data, models=args.models, reports=args.reports)
    decision = register(params, layout)
    name = params.registry.model_name
    print(f"{name} version {decision['version']}: {decision['decision']} ({decision['reason']})")


def _promote(args: argparse.Namespace, params: Params) -> None:
    from ferflow.commands.models import promote, rollback

    if args.rollback == bool(args.version):
        raise FerflowError("give exactly one of --rollback or --version N")
    result = rollback(params) if args.rollback else promote(params, args.version)
    print(f"{result['model_name']}: champion is now version {result['champion']} ({result['reason']})")


def _runs_sweep(args: argparse.Namespace, params: Params) -> None:
    from ferflow import tracking

    swept = tracking.connect(params).sweep_stale()
    for run_id, why in swept:
        print(f"{run_id} FAILED: {why}")
    print(f"{len(swept)} run(s) marked FAILED in experiment {params.tracking.experiment!r}")


def _runs_check(args: argparse.Namespace, params: Params) -> int:
    from ferflow.commands.models import check_registry

    findings = check_registry(params, _layout(params).moved(reports=args.reports), args.repair)
    for finding in findings:
        print(f"{'repaired' if finding.repaired else 'drift'}: {finding.line}")
    left = sum(not f.repaired for f in findings)
    print(f"{params.registry.model_name}: {len(findings)} difference(s), {len(findings) - left} repaired")
    return 1 if left else 0


# --- orchestration ---------------------------------------------------------------------


def _run(args: argparse.Namespace, params: Params) -> None:
    """The Prefect retraining flow, or one stage of it without Prefect (`--stage`)."""
    if args.stage:
        import json

        from ferflow.stages import run_stage

        result = run_stage(args.stage, params, _layout(params))
        print(json.dumps(result, default=str))
        return
    # The one import of the orchestration side from the core (allowed by name in the
    # import-linter contracts of pyproject.toml): `ferflow run` starts the Prefect flow.
    from flows.local import run_flow

    decision = run_flow(args.params, args.overrides, pull_data=args.pull, push_data=args.push)
    print(f"{decision.get('model_name')} version {decision.get('version')}: {decision.get('decision')}")


# --- commands --------------------------------------------------------------------------

PROFILES = (
    "The default params need ImageNet weights (downloaded by Keras). Without them (offline), "
    "train from random weights with a profile on every command: --params profiles/cpu.yaml "
    "(a 2-core CPU, under 2 hours), --params profiles/gpu.yaml (a GPU worker, JAX, ~9 minutes) "
    "or --params profiles/from-scratch.yaml (DenseNet121, no time box). What each reaches: "
    "docs/training.md."
)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ferflow", description="Facial emotion recognition workflow (FER2013, DenseNet)."
    )
    parser.add_argument("--version", action="version", version=f"ferflow {__version__}")
    # Not required: a bare `ferflow` prints this help (main) instead of a usage error.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(
        name: str, handler: Handler, help_text: str, epilog: str | None = None
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=epilog)
        _common(p)
        p.set_defaults(handler=handler)
        return p

    p = command("ingest", _ingest, "read a FER dataset (folder, .zip or fer2013.csv) into canonical form")
    p.add_argument("source", help="folder with train/ and test/, a .zip of it, or fer2013.csv")
    p.add_argument("--out", help="output folder (default: data.prepared)")

    p = command("validate", _validate, "check a prepared dataset against the data contract (exit 1: errors)")
    p.add_argument("data", nargs="?", help="prepared dataset folder (default: data.prepared)")
    folder_option(p, "reports", "where validation.json and data_docs/ go (default: reports)", "report-dir")
    p.add_argument("--reference", help="profile.json of the last accepted dataset, for the drift check")

    p = command(
        "train", _train, "phase 1: frozen DenseNet, train the dense head (models/head.keras)", PROFILES
    )
    p.add_argument("--data", help="prepared dataset folder (default: data.prepared)")
    p.add_argument("--models", default="models", help="models folder (default: models)")

    p = command("finetune", _finetune, "phase 2: fine-tune the whole network (models/model.keras)", PROFILES)
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
    folder_option(p, "reports", "report folder (default: reports)", "out")
    folder_option(p, "models", "model.keras, history.json, run.json (default: models)", "models-dir")

    p = command("register", _register, "register models/model.keras and run the promotion gate")
    folder_option(p, "models", "model.keras and run.json (default: models)", "models-dir")
    folder_option(p, "reports", "metrics.json in, promotion.json out (default: reports)", "reports-dir")
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
        choices=tuple(STAGES),  # the stage table, in pipeline order
        help="run only this pipeline stage, in this process, without Prefect; prints its result as JSON",
    )
    p.add_argument("--pull", action="store_true", default=None, help="dvc pull the data first")
    p.add_argument("--push", action="store_true", default=None, help="dvc push the data afterwards")

    runs_help = "MLflow runs of tracking.experiment and the registry's records: sweep, check"
    runs = sub.add_parser("runs", help="MLflow runs: sweep, check", description=runs_help)
    runs_sub = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    sweep_help = "mark FAILED the RUNNING runs whose process is gone (killed, crashed, host lost)"
    p = runs_sub.add_parser("sweep", help=sweep_help, description=sweep_help)
    _common(p)
    p.set_defaults(handler=_runs_sweep)
    check_help = "compare aliases, version tags and promotion.json (exit 1: they differ); --repair"
    p = runs_sub.add_parser("check", help=check_help, description=check_help)
    _common(p)
    p.set_defaults(handler=_runs_check)
    p.add_argument("--repair", action="store_true", help="make tags and promotion.json follow the aliases")
    folder_option(p, "reports", "where promotion.json is (default: reports)", "reports-dir")

    data = sub.add_parser(
        "data",
        help="put datasets under DVC control",
        description="datasets under DVC control: add, remote, push, pull",
    )
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    add_help = "copy a FER download into data/raw and track it with DVC"
    p = data_sub.add_parser("add", help=add_help, description=add_help)
    _common(p)
    p.set_defaults(handler=_data_add)
    p.add_argument("path", help="folder, .zip or fer2013.csv to track")
    p.add_argument("--dest", help="where it goes (default: data.raw; a .zip/.csv keeps its suffix)")
    p.add_argument("--force", action="store_true", help="replace data already at the destination")
    remote_help = "make data.remote the default DVC remote (no credentials written)"
    p = data_sub.add_parser("remote", help=remote_help, description=remote_help)
    _common(p)
    p.set_defaults(handler=_data_remote)
    for action, handler, verb in (("push", _data_push, "upload"), ("pull", _data_pull, "download")):
        action_help = f"dvc {action}: {verb} tracked data via data.remote"
        p = data_sub.add_parser(action, help=action_help, description=action_help)
        _common(p)
        p.set_defaults(handler=handler)
        p.add_argument("targets", nargs="*", help="tracked paths or .dvc files (default: all)")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # a bare `ferflow`: what it can do, not a usage error
        parser.print_help()
        return 0
    # SIGTERM unwinds like Ctrl-C: the stages' `with` blocks mark their MLflow runs KILLED
    # and finish their backups before the process exits (kill -9 cannot be caught:
    # `ferflow runs sweep` and the next stage mark such runs FAILED).
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if in_main_thread else None
    # Ctrl-C said at once; not where SIGINT is ignored (a background job of a script)
    own_sigint = in_main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    previous_int = signal.signal(signal.SIGINT, interrupt) if own_sigint else None
    params: Params | None = None
    try:
        overrides = list(args.overrides)
        if getattr(args, "model_name", None):
            overrides.append(f"register.model_name={args.model_name}")
        params = load_params(args.params, overrides)
        configure_logging(params.base.log_level, verbose=args.verbose)
        result = args.handler(args, params)
    except FerflowError as err:
        print(f"ferflow {args.command}: error: {redact(str(err))}", file=sys.stderr)
        return int(getattr(err, "exit_code", EXIT_USER_ERROR))
    except KeyboardInterrupt as err:
        name = "SIGTERM" if isinstance(err, Terminated) else "SIGINT"
        print(
            f"ferflow {args.command}: interrupted by {name}; its MLflow runs are marked KILLED",
            file=sys.stderr,
        )
        return 128 + int(signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT)
    except Exception as err:  # a server, store or disk fault is one line; anything else a bug
        line = fault_line(err, tracking_uri(params, checked=False) if params is not None else "")
        if line is None:
            raise
        print(f"ferflow {args.command}: error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        if previous is not None:  # only the main thread installed a handler to restore
            signal.signal(signal.SIGTERM, previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
