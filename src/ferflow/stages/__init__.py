"""The pipeline's stages: the only code that joins the domain modules (ferflow.training.train,
ferflow.evaluation.evaluate, ferflow.evaluation.gate, ...) with the files of a `Layout` and with MLflow
(ferflow.tracking).

One module per pipeline stage: `ingest`, `validate`, `train`, `finetune`, `evaluate`,
`register`, and `sync` for the flow's DVC steps (`pull-data`, `push-data`); `phases` holds
what the two training stages share. Each stage is a function `(params, layout)`;
the `ferflow` CLI, the DVC stages of dvc.yaml (through the CLI) and the Prefect tasks of
tasks/ all call these, so a model trained by the scheduled flow and one trained by
`dvc repro` come from the same code with the same params. `STAGES` (spec.py) says what
each stage reads and writes. The commands that are not pipeline stages (synthetic faces,
DVC data moves, evaluating any model, predict, compare, promote) are ferflow.commands.
"""

from __future__ import annotations

import importlib
from typing import Any

from ferflow.config import Params
from ferflow.errors import FerflowError
from ferflow.stages.layout import Layout, load_run_params
from ferflow.stages.spec import PACKAGE_DIR, STAGE_NAMES, STAGES, StageSpec

# The stage functions, imported on first use: `ferflow --help` and the Layout stay cheap.
_LAZY = {
    **{name: spec.entry.partition(":")[0] for name, spec in STAGES.items()},  # the stage functions
    "DataContractError": "validation",
    "require_valid": "validation",
    "decided_promotion": "registration",
    "pull_data": "sync",
    "push_data": "sync",
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
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"ferflow.stages.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ferflow.stages' has no attribute {name!r}")


def run_stage(name: str, params: Params, layout: Layout) -> Any:
    """One stage by its CLI name (`ferflow run --stage NAME`); validate raises on failure."""
    if name not in STAGE_NAMES:
        raise FerflowError(f"unknown stage {name!r}; choose one of {list(STAGE_NAMES)}")
    if name == "validate":
        report = __getattr__("validate")(params, layout)
        __getattr__("require_valid")(report)
        return report.to_dict()
    return __getattr__(name.replace("-", "_"))(params, layout)
