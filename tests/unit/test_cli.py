"""`ferflow` itself: --version, a bare `ferflow`, help texts, and a cheap import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ferflow import __version__
from ferflow.cli import main

REPO = Path(__file__).resolve().parents[2]


def _ferflow(*argv: str) -> subprocess.CompletedProcess[str]:
    """The real process (exit code and streams as a shell sees them), on this checkout's source."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    return subprocess.run(
        [sys.executable, "-m", "ferflow.cli", *argv], capture_output=True, text=True, env=env, cwd=REPO
    )


def test_version_prints_the_package_version_and_exits_0():
    result = _ferflow("--version")

    assert (result.returncode, result.stdout, result.stderr) == (0, f"ferflow {__version__}\n", "")


def test_a_bare_ferflow_prints_the_help_and_exits_0(capsys):
    assert main([]) == 0

    out, err = capsys.readouterr()
    assert out.startswith("usage: ferflow") and "COMMAND" in out and "predict" in out
    assert err == ""


def test_a_bare_ferflow_process_exits_0():
    result = _ferflow()

    assert result.returncode == 0 and "usage: ferflow" in result.stdout


@pytest.mark.parametrize(
    ("argv", "phrase"),
    [
        (["data", "add"], "track it with DVC"),
        (["data", "remote"], "default DVC remote"),
        (["data", "push"], "upload tracked data"),
        (["data", "pull"], "download tracked data"),
        (["runs", "sweep"], "RUNNING runs whose process is gone"),
    ],
)
def test_subcommand_help_has_a_description(argv, phrase, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])

    assert exit_.value.code == 0
    usage, _, rest = capsys.readouterr().out.partition("\n\n")
    assert usage.startswith(f"usage: ferflow {' '.join(argv)}")
    # the description is the paragraph between the usage and the argument lists
    assert phrase in " ".join(rest.partition("\n\n")[0].split())


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["validate"], {"reports": "reports"}),
        (["validate", "--report-dir", "r"], {"reports": "r"}),
        (["evaluate", "--out", "r", "--models-dir", "m"], {"reports": "r", "models": "m"}),
        (["register", "--models-dir", "m", "--reports-dir", "r"], {"reports": "r", "models": "m"}),
        (["runs", "check", "--reports-dir", "r"], {"reports": "r"}),
        (["register", "--models", "m", "--reports", "r"], {"reports": "r", "models": "m"}),
    ],
)
def test_folder_options_have_one_name_and_the_old_names_still_work(argv, expected, capsys):
    from ferflow.cli import _build_parser

    parser = _build_parser()
    args = parser.parse_args(argv)

    assert {key: getattr(args, key) for key in expected} == expected
    renamed = [a for a in argv if a in ("--report-dir", "--out", "--models-dir", "--reports-dir")]
    said = capsys.readouterr().err
    for old in renamed:
        assert f"ferflow: {old} is now --" in said
    assert said.count("is now") == len(renamed)


def test_the_old_folder_option_names_are_not_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["register", "--help"])
    text = capsys.readouterr().out

    assert "--models MODELS" in text and "--reports REPORTS" in text
    assert "--models-dir" not in text and "--reports-dir" not in text


def test_an_unknown_command_is_still_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["nope"])

    assert exit_.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_importing_the_cli_loads_no_heavy_library():
    heavy = ("tensorflow", "keras", "sklearn", "mlflow", "matplotlib", "jax", "torch")
    code = f"import sys, ferflow.cli; print([m for m in {heavy!r} if m in sys.modules])"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)

    assert result.stdout.strip() == "[]"


def test_main_runs_from_a_thread_other_than_the_main_one(tmp_path):
    # e.g. a Prefect task or a worker thread calling the CLI: SIGTERM handling (main thread
    # only) is skipped, and nothing tries to restore a handler it never installed
    import threading

    from tests.conftest import PARAMS_FILE

    outcome: list[object] = []

    def call() -> None:
        try:
            args = ["synth", "--out", str(tmp_path / "faces"), "--per-class", "1", "--test-per-class", "1"]
            outcome.append(main([*args, "--params", str(PARAMS_FILE)]))
        except BaseException as err:  # reported below, not lost in the thread
            outcome.append(err)

    worker = threading.Thread(target=call)
    worker.start()
    worker.join(timeout=120)

    assert outcome == [0]
    assert any((tmp_path / "faces" / "train").iterdir())
