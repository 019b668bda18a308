"""Which source files a stage really runs, derived from the import graph (tests/unit/test_architecture.py).

Each pipeline stage is a module of its own (`ferflow.stages.<module>`, its StageSpec.entry): its
code is every module of `ferflow` that module imports, directly or not, at module level or
inside a function, read from the import graph (grimp, the library under import-linter).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import grimp

import ferflow
from ferflow.stages.spec import STAGES

PACKAGE_DIR = Path(ferflow.__file__).resolve().parent


@cache
def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("ferflow", cache_dir=None)  # a cache can be stale: always read the code


def _file_of(module: str) -> str:
    return f"{module.removeprefix('ferflow.').replace('.', '/')}.py"


def stage_code(stage: str) -> set[str]:
    """The files (relative to src/ferflow) the stage's module runs: itself and everything it
    imports; package __init__ files only wire names together and are left out."""
    module = f"ferflow.stages.{STAGES[stage].entry.partition(':')[0]}"
    modules = {module, *_graph().find_upstream_modules(module)}
    packages = {m for m in modules if (PACKAGE_DIR / m.removeprefix("ferflow.").replace(".", "/")).is_dir()}
    return {_file_of(m) for m in modules - packages if m.startswith("ferflow.")}


def expand(entries: tuple[str, ...]) -> set[str]:
    """STAGES code entries as files: a folder counts as its .py files."""
    files = set()
    for entry in entries:
        path = PACKAGE_DIR / entry
        if path.is_dir():
            files |= {
                p.relative_to(PACKAGE_DIR).as_posix() for p in path.rglob("*.py") if p.name != "__init__.py"
            }
        else:
            files.add(entry)
    return files
