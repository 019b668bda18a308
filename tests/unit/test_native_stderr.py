"""Issue #23: TensorFlow's absl start-up lines (oneDNN's) are kept off the console at the
level TF_CPP_MIN_LOG_LEVEL asks, everything else on stderr passes. The CLI's end-to-end
check is tests/unit/test_cli_fast.py::test_a_normal_command_prints_no_tensorflow_log_lines.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ferflow.native_stderr import filtered_native_stderr, hidden

BEFORE_INIT = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
ONEDNN = (
    b"I0000 00:00:1796415966.560764    4798 port.cc:153] oneDNN custom operations are on. "
    b"You may see slightly different numerical results ...\n"
)
CUDNN_ERROR = b"E0000 00:00:1758131045.203198 3722035 cuda_dnn.cc:8579] Unable to register cuDNN factory\n"
OWN_LINE = b"20:31:06 INFO    ferflow.commands.models: predicting 1 images with tiny.keras\n"


@pytest.mark.parametrize(
    ("line", "level", "expected"),
    [
        (ONEDNN, 2, True),
        (BEFORE_INIT, 2, True),
        (CUDNN_ERROR, 2, False),
        (CUDNN_ERROR, 3, True),
        (ONEDNN, 0, False),
        (BEFORE_INIT, 0, False),
        (OWN_LINE, 3, False),
    ],
    ids=["info-at-2", "notice-at-2", "error-at-2", "error-at-3", "info-at-0", "notice-at-0", "ferflow"],
)
def test_a_native_line_is_hidden_as_tf_cpp_min_log_level_says(line, level, expected):
    assert hidden(line, level) is expected


def test_the_filter_drops_native_start_up_lines_and_passes_the_rest(capfd):
    # given C-level writes to file descriptor 2 (as absl's), mixed with Python's own
    with filtered_native_stderr(level=2):
        os.write(2, BEFORE_INIT + ONEDNN)
        print("a warning of ours", file=sys.stderr)
        os.write(2, CUDNN_ERROR)
    # then only TensorFlow's info lines are gone, and stderr works as before afterwards
    print("after", file=sys.stderr)
    err = capfd.readouterr().err

    assert err == "a warning of ours\n" + CUDNN_ERROR.decode() + "after\n"


def test_the_flows_entry_point_imports_tensorflow_quietly_with_onednn_forced():
    # given oneDNN forced on (TensorFlow then prints its absl lines on any x86 CPU) and
    # `ferflow run`'s and the demo's Prefect set-up (flows.local)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}
    env["TF_ENABLE_ONEDNN_OPTS"] = "1"
    code = (
        "import sys\n"
        "from flows.local import quiet_prefect_defaults\n"
        "quiet_prefect_defaults()\n"
        "import tensorflow\n"
        "print('imported', file=sys.stderr)\n"
    )
    # when TensorFlow is imported (Keras imports it on its default backend)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    # then stderr holds only our line
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["imported"]
