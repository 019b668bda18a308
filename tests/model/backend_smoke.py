"""Both training phases on whichever Keras backend KERAS_BACKEND selects.

The lent GPU machines have JAX and PyTorch but no TensorFlow, so the model and training
code must run on any Keras 3 backend. This script is what checks it, on a CPU too:

    KERAS_BACKEND=jax python -m tests.model.backend_smoke

It builds the tiny DenseNet121 (32 px) from random weights, runs phase 1 on cached features
and one phase-2 epoch with BatchNorm learning, saves and reloads the `.keras` file and
compares predictions; it exits non-zero (an AssertionError) when anything is off.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from ferflow.training.model import build_model, load_model
from ferflow.training.runtime import configure_runtime
from ferflow.training.train import fine_tune, fit_head
from tests.model.conftest import synthetic_faces, tiny_params

log = logging.getLogger(__name__)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    params = tiny_params(
        "train.epochs=2", "finetune.epochs=1", "finetune.optimizer=adam", "finetune.train_batchnorm=true"
    )
    configure_runtime(params)
    train, val = synthetic_faces(params, 16, "train"), synthetic_faces(params, 4, "val")
    started = time.perf_counter()
    model = build_model(params.model, params.base.image_size, len(params.base.classes), seed=params.base.seed)
    work = Path(tempfile.mkdtemp(prefix="backend-smoke-"))
    head = fit_head(model, train, val, params, work / "head")
    tuned = fine_tune(model, train, val, params, work / "finetune", len(head))
    assert [r["epoch"] for r in head + tuned] == [0, 1, 2]
    assert all(np.isfinite(r["loss"]) for r in head + tuned)
    model.save(work / "model.keras")
    expected = model.predict(val[0].astype("float32"), verbose=0)
    reloaded = load_model(work / "model.keras").predict(val[0].astype("float32"), verbose=0)
    assert expected.shape == (len(val[0]), 7)
    np.testing.assert_allclose(reloaded, expected, atol=1e-5)
    print(
        f"backend {keras.backend.backend()}: both phases, save and reload ok "
        f"({time.perf_counter() - started:.0f} s; val accuracy {tuned[-1]['val_accuracy']:.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
