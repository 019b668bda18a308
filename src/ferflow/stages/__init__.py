"""The pipeline's stages: the only code that joins the domain modules (ferflow.training.train,
ferflow.evaluation.evaluate, ferflow.evaluation.gate, ...) with the files of a `Layout` and with MLflow
(ferflow.tracking).

One module per pipeline stage: `ingestion`, `validation`, `head_training`,
`fine_tuning`, `evaluation`, `registration`, and `sync` for the flow's DVC steps
(`pull-data`, `push-data`); `phases` holds what the two training stages share. Each stage
is a function `(params, layout)`; the `ferflow` CLI, the DVC stages of dvc.yaml (through
the CLI) and the Prefect tasks of tasks/ all call these, so a model trained by the
scheduled flow and one trained by `dvc repro` come from the same code with the same
params. `STAGES` (spec.py), the one table of the pipeline, names each stage's entry
function and what it reads and writes. The commands that are not pipeline stages
(synthetic faces, DVC data moves, evaluating any model, predict, compare, promote) are
ferflow.commands.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

from ferflow.config import Params
from ferflow.errors import FerflowError
from ferflow.stages.layout import Layout, load_run_params
from ferflow.stages.spec import PACKAGE_DIR, STAGE_NAMES, STAGES, StageSpec

# The stage functions, imported on first use: `ferflow --help` and the Layout stay cheap.
_LAZY = {
    **{function: module for module, _, function in (spec.entry.partition(":") for spec in STAGES.values())},
    "validate": "validation",  # the report itself (`ferflow validate`), never raising
    "DataContractError": "validation",
    "require_valid": "validation",
    "decided_promotion": "registration",
    "data_version": "sync",
}

__all__ = [
    "PACKAGE_DIR",
    "STAGES",
    "STAGE_NAMES",
    "Layout",
    "StageSpec",
    "load_run_params",
    "run_stage",
    "stage_function",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"ferflow.stages.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ferflow.stages' has no attribute {name!r}")


def stage_function(name: str) -> Callable[[Params, Layout], Any]:
    """The entry function STAGES names for stage `name`."""
    if name not in STAGES:
        raise FerflowError(f"unknown stage {name!r}; choose one of {list(STAGES)}")
    module, _, function = STAGES[name].entry.partition(":")
    entry: Callable[[Params, Layout], Any] = getattr(
        importlib.import_module(f"ferflow.stages.{module}"), function
    )
    return entry


def run_stage(name: str, params: Params, layout: Layout) -> Any:
    """One stage by its name, as `ferflow run --stage NAME` and the Prefect tasks run it: it
    raises when the stage fails and returns its summary as plain JSON data (paths as text)."""
    return json.loads(json.dumps(stage_function(name)(params, layout), default=str))
