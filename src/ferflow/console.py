"""What a `ferflow` command shows on the console, beside its result: log lines, signals, faults.

- `configure_logging`: ferflow's own lines at `base.log_level`, other libraries' warnings;
  every line (tracebacks of logged exceptions included) with URL passwords masked.
- `terminate`: SIGTERM unwinds like Ctrl-C (`Terminated`).
- `fault_line`: a fault of the tracking server, its SQLite store or the disk, as one line
  with secrets masked, for the CLI to print instead of a traceback (exit 2).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from types import FrameType
from typing import Any

from ferflow.native_stderr import quiet_tensorflow_import
from ferflow.tracking.store import redact

# Library warnings a ferflow user cannot act on (shown with -v): Keras on the smoke batch's
# input structure, MLflow guessing the prepared dataset's source type.
QUIET_WARNINGS = (
    "The structure of `inputs` doesn't match",
    "The specified dataset source can be interpreted",
)


class RedactingFormatter(logging.Formatter):
    """ferflow's line format: URL credentials masked in the whole line, tracebacks included,
    and a Prefect record named after its task or flow run (`prefect.task_runs train-0`)."""

    def format(self, record: logging.LogRecord) -> str:
        run = getattr(record, "task_run_name", None) or getattr(record, "flow_run_name", None)
        if run:
            record = logging.makeLogRecord({**record.__dict__, "name": f"{record.name} {run}"})
        return str(redact(super().format(record)))


# Loggers whose records are masked when they are made (redact_log_records)
_OWN_LOGGERS = ("ferflow", "flows", "tasks")


def redact_log_records() -> None:
    """Mask `user:password@` in every record of ferflow's loggers when it is created, its
    traceback included: handlers that are not ours (Prefect's API handler, which sends
    ferflow's lines to the flow run's logs) format records with formatters of their own."""
    make = logging.getLogRecordFactory()
    if getattr(make, "ferflow_redacts", False):
        return

    def redacting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        # (logging.makeLogRecord makes a nameless record first, then fills it in)
        if isinstance(record.name, str) and record.name.split(".")[0] in _OWN_LOGGERS:
            record.msg, record.args = str(redact(record.getMessage())), None
            if record.exc_info and not record.exc_text:
                record.exc_text = str(redact(logging.Formatter().formatException(record.exc_info)))
        return record

    redacting.ferflow_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting)


def configure_logging(level: str, verbose: bool = False, also: Sequence[str] = ()) -> None:
    """The one logging set-up (the CLI, `make demo`, scripts): ferflow's own lines, and those
    of the loggers in `also` (the demo's Prefect run loggers), at `level`; other libraries'
    (GX, MLflow, DVC, httpx) only when they warn, unless `-v` asks for everything."""
    redact_log_records()
    root = logging.getLogger()
    fresh = not root.handlers  # else a host (a test runner, an embedding app) owns the handlers
    logging.basicConfig(level="DEBUG" if verbose else "WARNING")
    if fresh:
        formatter = RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        for handler in root.handlers:
            handler.setFormatter(formatter)
    if not verbose:
        # MLflow logs through a handler of its own, set from this variable at import
        # (its warnings about pip and conda specs say nothing a ferflow user can act on)
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        for name in ("ferflow", "flows", "tasks", *also):
            logging.getLogger(name).setLevel(level)
        # TensorFlow's retracing notes say nothing a user can act on
        logging.getLogger("tensorflow").setLevel("ERROR")
    # TensorFlow's C++ start-up chatter is noise for a CLI user (oneDNN's too: native_stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet_tensorflow_import()
    # A file name that is not UTF-8 is printed with \x escapes, never a UnicodeEncodeError.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")


# --- SIGTERM ---------------------------------------------------------------------------------


class Terminated(KeyboardInterrupt):
    """SIGTERM (a `kill`, an orchestrator stopping a worker), raised where Python is."""


def terminate(signum: int, _frame: FrameType | None) -> None:
    """The SIGTERM handler: unwind like Ctrl-C (the stages mark their runs KILLED)."""
    _acknowledge(signum)
    raise Terminated(signal.Signals(signum).name)


def interrupt(signum: int, _frame: FrameType | None) -> None:
    """The SIGINT (Ctrl-C) handler: Python's KeyboardInterrupt, said at once. The unwinding
    that follows (marking runs KILLED, finishing the epoch backup's write) can take seconds,
    and a silent terminal invites a second Ctrl-C that cuts it short."""
    _acknowledge(signum)
    raise KeyboardInterrupt


def _acknowledge(signum: int) -> None:
    """One line on fd 2, written directly: a handler may interrupt a `print` to stderr, and
    a second buffered write inside it raises RuntimeError (reentrant call)."""
    line = f"ferflow: {signal.Signals(signum).name} received: stopping{_ACK_DETAIL}\n"
    with contextlib.suppress(OSError):  # no stderr left (a closed pipe): just stop
        os.write(2, line.encode())


# Said with every acknowledgement: only training phases keep a backup, and the rest have
# nothing to lose.
_ACK_DETAIL = " (a training phase keeps its last backup: the same command resumes from it)"


# --- faults of the server, the store and the disk ---------------------------------------------

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def fault_line(err: BaseException, uri: str) -> str | None:
    """One line saying what failed and what to run next, secrets masked; None when `err`
    is not a fault of the server, the store or the disk (then it is a bug: a traceback)."""
    line = _describe(_chain(err), uri)
    return None if line is None else str(redact(line))


def _chain(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _describe(chain: list[BaseException], uri: str) -> str | None:
    text = " | ".join(f"{type(e).__module__}.{type(e).__name__}: {e}" for e in chain)
    lowered = text.lower()
    for exc in chain:
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL | _NOT_WRITABLE:
            return _disk(exc)
    if not any(type(e).__module__.split(".")[0] in _SERVER_MODULES for e in chain):
        return None
    server = redact(uri)
    if "database is locked" in lowered:
        return (
            f"the MLflow store {server} stayed locked by another process (SQLite 'database is "
            "locked' after MLflow's 20 s wait); this command's runs may be left "
            "RUNNING. Let the other process (another ferflow, `mlflow ui`, a backup) finish, "
            "then run `ferflow runs sweep` and rerun this command"
        )
    for code, what in (("401", "401 Unauthorized"), ("403", "403 Forbidden")):
        if f"error code {code}" in lowered or f"{code} client error" in lowered or what.lower() in lowered:
            return (
                f"the MLflow tracking server at {server} refused the credentials ({what}); "
                "check the user and password (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, "
                "or user:password@ in MLFLOW_TRACKING_URI) and rerun"
            )
    if "<html" in lowered or "<!doctype" in lowered or "jsondecodeerror" in lowered:
        return (
            f"the server at {server} answered with a web page, not the MLflow API: "
            "MLFLOW_TRACKING_URI (or tracking.tracking_uri) points at another server, a proxy's "
            "login page or the wrong port; point it at the MLflow tracking server and rerun"
        )
    if any(word in lowered for word in _UNREACHABLE):
        return (
            f"the MLflow tracking server at {server} stopped answering ({_short(chain)}); the "
            "runs this command started stay RUNNING until `ferflow runs sweep` marks them "
            "FAILED, and a training phase keeps its epoch backup. Start the server, then rerun "
            "this command (training resumes from its backup)"
        )
    return None


_SERVER_MODULES = {"mlflow", "requests", "urllib3", "sqlalchemy", "sqlite3", "http"}
_UNREACHABLE = (
    "max retries exceeded",
    "connection refused",
    "connectionerror",
    "failed to establish a new connection",
    "remotedisconnected",
    "connection aborted",
    "read timed out",
)


def _short(chain: list[BaseException]) -> str:
    """The innermost error, its first line, at most 160 characters."""
    innermost = chain[-1]
    first = (str(innermost).splitlines() or [""])[0]
    return f"{type(innermost).__name__}: {first}"[:160]


def _disk(exc: OSError) -> str:
    where = exc.filename or "a file"
    folder = os.path.dirname(os.fspath(where)) or "."
    if exc.errno in _DISK_FULL:
        return (
            f"no space left on the device writing {where} ({exc.strerror}). Free space "
            f"(`df -h {folder}`) and rerun this command"
        )
    if exc.errno == errno.EROFS:
        return (
            f"cannot write {where} ({exc.strerror}): that file system is mounted read-only. "
            f"Write somewhere else (another output folder) or remount it, and rerun this command"
        )
    return (
        f"cannot access {where} ({exc.strerror}): it, or the folder {folder}, is not open to "
        "this user. Give this user access (or pass another folder) and rerun this command"
    )


class RenamedOption(argparse.Action):
    """An option's old spelling, kept one release and hidden from --help: it sets the new
    option's value and says the new name on stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        print(
            f"ferflow: {option_string} is now {self.new} (the old name goes in the next release)",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def folder_option(parser: argparse.ArgumentParser, name: str, help: str, old: str) -> None:
    """`--NAME` (default: NAME), spelt the same in every command; the old `--OLD` still
    works for one release, hidden (RenamedOption)."""
    parser.add_argument(f"--{name}", default=name, help=help)
    parser.add_argument(f"--{old}", dest=name, action=RenamedOption, new=f"--{name}")
