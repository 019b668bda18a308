"""Fixed-shape batches: every compiled step function sees one batch shape, so it compiles once.

XLA (JAX, and TensorFlow with `jit_compile`) compiles a program per input shape. A split
whose row count is not a multiple of the batch size ends each pass with a smaller batch,
which compiles the train step (or the predict step) a second time: on a cold H200 that cost
~110 s of a 9-minute run. So:

- training (`wrap_to_batches`): the rows are padded to a whole number of batches with
  duplicates of randomly chosen rows (fewer than one batch), once per phase. `fit` shuffles
  the padded set every epoch, so every batch is full, every row is seen in every epoch and
  the duplicates land in different batches each epoch;
- prediction (`predict_padded`): the last batch is padded with copies of its last row and
  the padded rows' outputs are dropped. A model in inference mode scores each row on its
  own, so the kept outputs, and every metric computed from them, are those of an unpadded
  pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ferflow.progress import bar


def padding_rows(rows: int, batch_size: int) -> int:
    """How many rows make `rows` a whole number of batches."""
    return -rows % batch_size


def wrap_to_batches(
    arrays: tuple[np.ndarray, ...], batch_size: int, seed: int | None = None
) -> tuple[np.ndarray, ...]:
    """`arrays` (same length) padded to a multiple of `batch_size` by repeating rows picked at
    random without replacement; unchanged when already a multiple."""
    rows = len(arrays[0])
    extra = padding_rows(rows, batch_size)
    if extra == 0 or rows == 0:
        return arrays
    rng = np.random.default_rng(seed)
    picked = rng.choice(rows, size=extra, replace=extra > rows)
    return tuple(np.concatenate([a, a[picked]]) for a in arrays)


def padded_batches(images: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """(batch of exactly `batch_size` rows, how many of them are real), in order."""
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start : start + batch_size])
        real = len(batch)
        if real < batch_size:
            filler = np.repeat(batch[-1:], batch_size - real, axis=0)
            batch = np.concatenate([batch, filler])
        yield batch, real


def predict_padded(
    predict_fn: Callable[[np.ndarray], Any],
    images: np.ndarray,
    batch_size: int,
    desc: str | None = None,
) -> np.ndarray:
    """`predict_fn` over `images` in fixed-size batches (the last one padded, its padding
    dropped); the outputs concatenated, as NumPy. `desc` shows a progress bar."""
    batches = padded_batches(images, batch_size)
    steps = -(-len(images) // batch_size)
    iterator = bar(batches, total=steps, desc=desc, unit="batch") if desc else batches
    parts = [np.asarray(predict_fn(batch))[:real] for batch, real in iterator]
    if not parts:
        raise ValueError("no rows to predict")
    return np.concatenate(parts)
