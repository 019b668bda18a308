"""Which params a stage really reads: run it on a `RecordingParams` and look at `reads`.

The recorder stands in for `Params`: reading `params.train.batch_size` returns the real
value and records `train.batch_size` (params.yaml's names, aliases included). Whole-params
methods (`flat()`, `digest()`, `model_dump()`: what MLflow logs and run names use) pass
through unrecorded: logging every param is not reading it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ferflow.config import Params


class RecordingParams:
    def __init__(self, model: BaseModel, reads: set[str] | None = None, prefix: str = "") -> None:
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "reads", set() if reads is None else reads)
        object.__setattr__(self, "_prefix", prefix)

    def __getattr__(self, name: str) -> Any:
        model = object.__getattribute__(self, "_model")
        value = getattr(model, name)
        field = type(model).model_fields.get(name)
        if field is None:  # a method or property of the model: not a param
            return value
        key = object.__getattribute__(self, "_prefix") + (field.alias or name)
        if isinstance(value, BaseModel):
            return RecordingParams(value, self.reads, f"{key}.")
        self.reads.add(key)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("params are frozen")


def recording(params: Params) -> RecordingParams:
    return RecordingParams(params)


def covered(read: str, declared: tuple[str, ...]) -> bool:
    """True when `read` (a `section.key`) is one of `declared` or inside a declared section."""
    return any(read == entry or read.startswith(f"{entry}.") for entry in declared)
