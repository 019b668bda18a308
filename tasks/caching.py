"""Prefect cache keys for the pipeline stages: input file hashes + params + code version.

An unchanged rerun (same data, same params the stage reads, same source code) hits the
cache and skips the stage. The key never hashes Python objects or arrays: it hashes the
files on disk, the params keys the stage declares in `ferflow.stages.STAGES` and the
stage's source files. The cached result is a small JSON dict that records the hash of
every file the stage wrote; `outputs_intact` checks those on a hit, so a cache hit whose
files were deleted or overwritten since (say by a `dvc repro` with other params) reruns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ferflow.config import Params
from ferflow.data.dataset import file_sha256 as file_digest
from ferflow.stages import PACKAGE_DIR, STAGES, Layout, StageSpec
from ferflow.stages.spec import params_digest


def tree_digest(path: Path) -> str:
    """sha256 over the relative names and contents of every file under `path` (or of one file)."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    if not path.is_dir():
        return "missing"
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(file_digest(file).encode())
    return digest.hexdigest()


def code_digest(names: Iterable[str]) -> str:
    """Digest of the stage's source files (a package counts as its .py files)."""
    digest = hashlib.sha256()
    for name in sorted(names):
        source = PACKAGE_DIR / name
        files = sorted(source.rglob("*.py")) if source.is_dir() else [source]
        for file in files:
            digest.update(file.relative_to(PACKAGE_DIR).as_posix().encode())
            digest.update(file_digest(file).encode() if file.exists() else b"missing")
    return digest.hexdigest()


def stage_key(spec: StageSpec, params: Params, layout: Layout) -> str:
    """The cache key of one stage run."""
    parts = {
        "stage": spec.name,
        "inputs": {name: tree_digest(layout.path(name)) for name in spec.inputs},
        "params": params_digest(params, spec.params),
        "code": code_digest(spec.code),
        # outputs go to these folders: the same key must not serve another layout
        "outputs": [str(layout.path(name).resolve()) for name in spec.outputs],
    }
    blob = json.dumps(parts, sort_keys=True).encode()
    return f"ferflow-{spec.name}-{hashlib.sha256(blob).hexdigest()[:32]}"


def cache_key_for(stage: str) -> Callable[[Any, dict[str, Any]], str | None]:
    """A Prefect `cache_key_fn` for `stage`; None (no caching) when flow.cache is off."""
    spec = STAGES[stage]

    def cache_key(_context: Any, arguments: dict[str, Any]) -> str | None:
        params: Params = arguments["params"]
        if not params.flow.cache:
            return None
        return stage_key(spec, params, arguments["layout"])

    cache_key.__name__ = f"cache_key_{stage}"
    return cache_key


def output_hashes(stage: str, layout: Layout) -> dict[str, str]:
    """Hashes of the files `stage` wrote, stored in its cached result."""
    return {
        name: file_digest(layout.path(name)) for name in STAGES[stage].outputs if layout.path(name).exists()
    }


def outputs_intact(stage: str, layout: Layout, result: dict[str, Any]) -> bool:
    """True when every file recorded in a (cached) result is still there, unchanged."""
    recorded = result.get("outputs") or {}
    return bool(recorded) and recorded == output_hashes(stage, layout)
