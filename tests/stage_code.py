"""Which source files a stage really runs, derived from the code (tests/unit/test_architecture.py).

A stage is a function of a `ferflow.stages.*` module. Its code is that module's top-level
imports, the imports inside the function and inside the module's functions it calls
(stage modules import their heavy parts inside functions, so one stage of a group does not
depend on another's), and then everything those modules import, directly or not, read
from the import graph (grimp, the library under import-linter).
"""

from __future__ import annotations

import ast
import importlib
import inspect
from functools import cache
from pathlib import Path

import grimp

import ferflow

PACKAGE_DIR = Path(ferflow.__file__).resolve().parent
STAGE_FUNCTIONS = {
    "ingest": "ferflow.stages.data:ingest",
    "validate": "ferflow.stages.data:validate",
    "train": "ferflow.stages.training:train",
    "finetune": "ferflow.stages.training:finetune",
    "evaluate": "ferflow.stages.evaluation:evaluate",
    "register": "ferflow.stages.promotion:register",
}


@cache
def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("ferflow", cache_dir=None)  # a cache can be stale: always read the code


GROUP_MODULES = (
    "ferflow.stages.data",
    "ferflow.stages.training",
    "ferflow.stages.evaluation",
    "ferflow.stages.promotion",
)


def _is_stage_module(module: str) -> bool:
    """A stage group module: followed function by function, not as a whole."""
    return module in GROUP_MODULES


def _module_name(node: ast.ImportFrom | ast.Import, alias: ast.alias) -> str:
    if isinstance(node, ast.Import):
        return alias.name
    base = node.module or ""
    candidate = f"{base}.{alias.name}"
    return candidate if candidate in _graph().modules else base


def _imports(node: ast.Import | ast.ImportFrom) -> list[tuple[str, str]]:
    """(module, imported name) for one import statement."""
    return [(_module_name(node, alias), alias.name) for alias in node.names]


@cache
def _module_tree(module: str) -> ast.Module:
    return ast.parse(inspect.getsource(importlib.import_module(module)))


def _top_level_imports(module: str) -> list[tuple[str, str]]:
    tree = _module_tree(module)
    return [
        item for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom) for item in _imports(node)
    ]


def _function(module: str, name: str) -> ast.FunctionDef:
    for node in _module_tree(module).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise LookupError(f"{module}.{name} is not a top-level function")


def _function_modules(module: str, name: str, seen: set[tuple[str, str]]) -> set[str]:
    """The modules a stage-module function reaches before the import graph takes over."""
    if (module, name) in seen:
        return set()
    seen.add((module, name))
    node = _function(module, name)
    found = {module}
    local_functions = {n.name for n in _module_tree(module).body if isinstance(n, ast.FunctionDef)}
    imported = _top_level_imports(module) + [
        item
        for child in ast.walk(node)
        if isinstance(child, ast.Import | ast.ImportFrom)
        for item in _imports(child)
    ]
    for target, symbol in imported:
        found.add(target)
        if _is_stage_module(target) and target != module and symbol in _stage_functions(target):
            found |= _function_modules(target, symbol, seen)  # a function of another stage module
    called = {c.func.id for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
    for callee in sorted(called & local_functions):
        found |= _function_modules(module, callee, seen)
    return found


def _stage_functions(module: str) -> set[str]:
    return {n.name for n in _module_tree(module).body if isinstance(n, ast.FunctionDef)}


def _closure(modules: set[str]) -> set[str]:
    graph, result = _graph(), set()
    todo = [m for m in modules if m.startswith("ferflow")]
    while todo:
        module = todo.pop()
        if module in result or module not in graph.modules:
            continue
        result.add(module)
        if _is_stage_module(module):
            continue  # stage modules were followed function by function above
        todo += [m for m in graph.find_modules_directly_imported_by(module) if m.startswith("ferflow")]
    return result


def _file_of(module: str) -> str:
    relative = module.removeprefix("ferflow.").replace(".", "/")
    return f"{relative}/__init__.py" if (PACKAGE_DIR / relative).is_dir() else f"{relative}.py"


def stage_code(stage: str) -> set[str]:
    """The files (relative to src/ferflow) the stage's function runs."""
    module, name = STAGE_FUNCTIONS[stage].split(":")
    modules = _closure(_function_modules(module, name, set()))
    # package __init__ files only wire names together
    return {
        _file_of(m)
        for m in modules
        if not (PACKAGE_DIR / m.removeprefix("ferflow.").replace(".", "/")).is_dir()
    }


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
