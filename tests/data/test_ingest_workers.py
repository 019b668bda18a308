"""Issue #23: a successful `ferflow ingest` prints no traceback. Its decoding workers are
forked from the CLI, whose SIGTERM handler raises `Terminated`; the pool ends them with
SIGTERM, so they must not keep that handler.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from ferflow.console import terminate
from ferflow.data.ingest import decoding_pool
from tests.conftest import PARAMS_FILE
from tests.data.factories import write_fer_folder

INGEST_RUNS = 8  # the traceback came in about 1 run of 4 (a race with the pool's stop sentinels)


def worker_handlers() -> tuple[object, object]:
    return signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)


def test_a_decoding_worker_does_not_keep_the_clis_sigterm_handler():
    # given the CLI's SIGTERM handler in the parent
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        # when a decoding pool starts
        with decoding_pool(2) as pool:
            handlers = pool.apply(worker_handlers)
    finally:
        signal.signal(signal.SIGTERM, previous)
    # then its workers die quietly on SIGTERM and leave Ctrl-C to the parent
    assert handlers == (signal.SIG_DFL, signal.SIG_IGN)


def test_ingest_through_the_cli_with_worker_processes_prints_no_traceback(tmp_path):
    # given a small folder, and the pool threshold lowered so two workers decode it
    write_fer_folder(tmp_path / "faces", train_per_class=8, test_per_class=3)
    code = (
        "import sys\n"
        "import ferflow.data.ingest\n"
        "from ferflow.cli import main\n"
        "ferflow.data.ingest.POOL_MIN_FILES = 1\n"
        f"for run in range({INGEST_RUNS}):\n"
        f"    args = ['ingest', 'faces', '--out', f'out{{run}}', '--params', {str(PARAMS_FILE)!r}]\n"
        "    assert main(args) == 0\n"
    )
    # when `ferflow ingest` runs several times, as the CLI does (SIGTERM handler installed)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    # then every run succeeded and nothing but ferflow's lines reached stderr
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("ferflow.data.ingest: ingested 77 images") == INGEST_RUNS, done.stderr
