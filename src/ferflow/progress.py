"""ferflow's one progress convention: a tqdm bar on stderr, only when stderr is a terminal.

Every long step (ingest, synthetic faces, feature caching, each training epoch, prediction
and evaluation over more than a few dozen images) shows one, through `bar`. In logs and CI
(stderr not a terminal) bars are off: the steps log a line at their start and end instead.
Labels read `<step> <what>` ("ingest train", "train epoch 3/10"), units are images,
batches or rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sized
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")

MIN_ITEMS = 32  # fewer items than this: no bar (a blink is not progress)


def bar(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str,
    unit: str,
    leave: bool = False,
    initial: int = 0,
) -> tqdm[Any]:
    """A progress bar over `iterable` (or one updated by hand up to `total`)."""
    size = total if total is not None else (len(iterable) if isinstance(iterable, Sized) else None)
    small = size is not None and size < MIN_ITEMS
    return tqdm(
        iterable,
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        leave=leave,
        dynamic_ncols=True,
        # None: off when stderr is not a terminal (logs, CI); always off for tiny jobs
        disable=True if small else None,
    )
