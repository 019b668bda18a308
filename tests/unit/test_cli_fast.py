"""Issue #14: the CLI fails fast and quietly. Bad arguments, paths and model references are
refused before TensorFlow (or scikit-learn, or MLflow) is imported, and a normal command's
stderr holds ferflow's lines only. The times are measured in bench/bench_cli.py, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import PARAMS_FILE

HEAVY = ("tensorflow", "keras", "sklearn", "mlflow", "matplotlib")


def run_cli_in_fresh_python(args: list[str], cwd) -> dict:
    """Exit code and which heavy libraries got imported, from a fresh interpreter."""
    code = (
        "import json, sys\n"
        "from ferflow.cli import main\n"
        f"rc = main({args!r})\n"
        f"print(json.dumps({{'rc': rc, 'heavy': sorted(m for m in {HEAVY!r} if m in sys.modules)}}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["stderr"] = done.stderr
    return result


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--data", "/missing"],
        ["finetune", "--data", "/missing"],
        ["evaluate", "--model", "models:/no-version", "--data", "."],
        ["evaluate", "--model", "model.keras", "--data", "/missing"],
        ["predict", ".", "--model", "missing.keras"],
        ["predict", "/missing.jpg"],
        ["predict", "face.png", "notes.txt"],
    ],
    ids=[
        "train-data",
        "finetune-data",
        "malformed-uri",
        "evaluate-data",
        "model-file",
        "image",
        "not-an-image",
    ],
)
def test_bad_input_fails_before_any_heavy_import(args, tmp_path):
    from PIL import Image

    Image.new("L", (48, 48), 100).save(tmp_path / "face.png")  # a real image: only `args` is wrong
    (tmp_path / "notes.txt").write_text("not a face\n")
    result = run_cli_in_fresh_python([*args, "--params", str(PARAMS_FILE)], tmp_path)

    assert result["rc"] == 2
    assert result["heavy"] == [], f"imported {result['heavy']} before refusing bad input"
    assert len(result["stderr"].strip().splitlines()) == 1, result["stderr"]


def test_a_normal_command_prints_no_tensorflow_log_lines(tmp_path):
    # given a tiny model file and a face
    import keras
    from PIL import Image

    model = keras.Sequential(
        [keras.Input((48, 48)), keras.layers.Flatten(), keras.layers.Dense(7, "softmax")]
    )
    model.save(tmp_path / "tiny.keras")
    Image.new("L", (48, 48), 100).save(tmp_path / "face.png")
    # and oneDNN forced on, so TensorFlow prints its absl start-up lines on any x86 CPU
    # (on AVX512-VNNI it does so by default): "oneDNN custom operations are on", twice
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}
    env["TF_ENABLE_ONEDNN_OPTS"] = "1"
    # when `ferflow predict` runs in its own process
    done = subprocess.run(
        [
            sys.executable,
            *("-m", "ferflow.cli", "predict", "face.png", "--model", "tiny.keras"),
            "--params",
            str(PARAMS_FILE),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # then it worked, and stderr holds only ferflow's own log lines
    assert done.returncode == 0, done.stderr
    foreign = [line for line in done.stderr.splitlines() if line.strip() and " ferflow." not in line]
    assert foreign == []


@pytest.mark.parametrize("verbose", [False, True], ids=["default", "-v"])
def test_other_libraries_info_lines_show_only_with_verbose(verbose):
    # GX logs INFO lines at import ("Skipping registering function ..."): a CLI user sees
    # ferflow's INFO lines and other libraries' warnings, everything with -v
    code = (
        "import json, logging, os\n"
        "os.environ.pop('MLFLOW_LOGGING_LEVEL', None)\n"
        "from ferflow.console import configure_logging\n"
        f"configure_logging('INFO', verbose={verbose})\n"
        "names = ('ferflow.stages', 'flows.retrain', 'great_expectations._docs_decorators',"
        " 'mlflow', 'dvc')\n"
        "enabled = {n: logging.getLogger(n).isEnabledFor(logging.INFO) for n in names}\n"
        "print(json.dumps({**enabled, 'MLFLOW_LOGGING_LEVEL': os.environ.get('MLFLOW_LOGGING_LEVEL')}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    enabled = json.loads(done.stdout)

    assert enabled["ferflow.stages"] and enabled["flows.retrain"]
    foreign = [enabled[n] for n in ("great_expectations._docs_decorators", "mlflow", "dvc")]
    assert foreign == [verbose] * 3
    # MLflow's own handler reads its level from the environment when it is imported
    assert enabled["MLFLOW_LOGGING_LEVEL"] == (None if verbose else "ERROR")


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_is_acknowledged_at_once(signum, capfd):
    # the unwinding after Ctrl-C (runs marked KILLED, the backup's write) takes seconds:
    # the handler says so first, in one line, then unwinds like Python's KeyboardInterrupt
    import signal

    from ferflow.console import Terminated, interrupt, terminate

    handler = interrupt if signum == "SIGINT" else terminate
    with pytest.raises(KeyboardInterrupt) as caught:
        handler(getattr(signal, signum), None)
    assert isinstance(caught.value, Terminated) == (signum == "SIGTERM")
    said = capfd.readouterr().err.splitlines()  # written to fd 2 directly
    assert said == [
        f"ferflow: {signum} received: stopping (a training phase keeps its last backup: "
        "the same command resumes from it)"
    ]


def test_the_cli_leaves_an_ignored_sigint_ignored():
    # a background job of a script starts with SIGINT ignored: Ctrl-C is not for it
    import signal

    from ferflow.cli import main

    seen = []
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = main(["promote", "--params", str(PARAMS_FILE)])  # a user error: exits at once
        seen.append(signal.getsignal(signal.SIGINT))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 2 and seen == [signal.SIG_IGN]


def test_a_log_line_masks_credentials_and_names_its_prefect_run():
    import logging

    from ferflow.console import RedactingFormatter

    formatter = RedactingFormatter("%(name)s: %(message)s")
    prefect = logging.makeLogRecord(
        {
            "name": "prefect.task_runs",
            "msg": "pushed to %s",
            "args": ("http://u:pw@h:9000",),
            "task_run_name": "train-0",
        }
    )
    plain = logging.makeLogRecord({"name": "ferflow.stages", "msg": "done"})

    assert formatter.format(prefect) == "prefect.task_runs train-0: pushed to http://***@h:9000"
    assert formatter.format(plain) == "ferflow.stages: done"
