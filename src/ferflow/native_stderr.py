"""TensorFlow's native start-up lines, kept off the console as TF_CPP_MIN_LOG_LEVEL asks.

TensorFlow 2.21 logs through absl from C++ while its shared libraries load, before its own
TF_CPP_MIN_LOG_LEVEL check applies (tensorflow/tensorflow#100442). On a CPU where it enables
oneDNN (AVX512-VNNI, or TF_ENABLE_ONEDNN_OPTS=1 anywhere) every process that imports it
prints "WARNING: All log messages before absl::InitializeLog() ..." and "I0000 ...
port.cc:153] oneDNN custom operations are on ...", twice: once for
_pywrap_tensorflow_internal.so and once for the profiler plugin loaded later in the same
`import tensorflow`. The lines go straight to file descriptor 2, where no Python logging
setting reaches, so `quiet_tensorflow_import()` points fd 2 at a temporary file while
TensorFlow is imported and then writes back every line except those TF_CPP_MIN_LOG_LEVEL
hides. oneDNN stays on. Other threads' stderr lines written during the import (about 10 s)
come out when it ends, in order.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

SEVERITIES = b"IWEF"  # absl's INFO, WARNING, ERROR, FATAL: TF_CPP_MIN_LOG_LEVEL 0-3
# absl's prefix: severity, MMDD, time (before absl::InitializeLog "00:00:<epoch seconds>"),
# thread id, file:line]
ABSL_LINE = re.compile(rb"([IWEF])\d{4} [\d:.]+ +\d+ [^\s\]]+:\d+\] ")
BEFORE_INIT_NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called"


def min_log_level() -> int:
    """TF_CPP_MIN_LOG_LEVEL as a number (0, everything, when unset or not a number)."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def hidden(line: bytes, level: int) -> bool:
    """Whether TF_CPP_MIN_LOG_LEVEL=`level` asks to hide this native log line."""
    if line.startswith(BEFORE_INIT_NOTICE):
        return level >= 1
    match = ABSL_LINE.match(line)
    return match is not None and SEVERITIES.index(match.group(1)) < level


@contextlib.contextmanager
def filtered_native_stderr(level: int) -> Iterator[None]:
    """Within the block, file descriptor 2 goes to a temporary file; after it, its lines
    go back to fd 2 except those `hidden` at `level`."""
    try:
        saved = os.dup(2) if level > 0 else None
    except OSError:  # no fd 2 (a daemon): nothing to keep clean
        saved = None
    if saved is None:
        yield
        return
    if sys.stderr is not None:
        sys.stderr.flush()
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = memoryview(b"".join(line for line in capture if not hidden(line, level)))
            while kept:
                kept = kept[os.write(2, kept) :]


class _FilteredLoader(importlib.abc.Loader):
    """Executes a module with its loader, its native stderr lines filtered."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self.loader  # the package sees its own loader, as without us
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        with filtered_native_stderr(min_log_level()):
            self.loader.exec_module(module)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` with the other finders; it loads with its start-up lines filtered."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _FilteredLoader(spec.loader)
                return spec
        return None


def quiet_tensorflow_import() -> None:
    """From now on, the first `import tensorflow` (Keras does it) prints only the native
    lines TF_CPP_MIN_LOG_LEVEL lets through, read when the import starts. Idempotent."""
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())
