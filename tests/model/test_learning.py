"""Short training on synthetic faces learns: validation accuracy far above chance (1/7).

A DenseNet with `model.weights: none` has no features worth caching (phase 1 alone stays
around 0.25-0.3 on synthetic faces: random convolutions describe texture and lighting,
not the brows and mouth), and fine-tuning it with BatchNorm frozen at its untrained
statistics does not learn. So this runs ferflow's from-scratch configuration: phase 1 on
cached features, then phase 2 with BatchNorm learning (`finetune.train_batchnorm`, faster
moving averages) and Adam for 10 epochs. It is the one default test that backpropagates
through a DenseNet: about 5 minutes on an idle 2-core CPU, 95 s of it TensorFlow tracing
the training step (twice that on a busy one).
"""

from __future__ import annotations

import logging

import pytest

from ferflow.train import fine_tune, fit_head
from tests.model.conftest import synthetic_faces, tiny_params

log = logging.getLogger(__name__)

CHANCE = 1 / 7
FROM_SCRATCH = (
    "train.epochs=3",
    "finetune.epochs=10",
    "finetune.optimizer=adam",
    "finetune.learning_rate=0.001",
    "finetune.train_batchnorm=true",
    "finetune.batchnorm_momentum=0.9",
)


@pytest.mark.timeout(1800)  # 10 min on a busy 2-core CPU; the suite's default is 900 s
def test_short_training_on_synthetic_faces_learns(tmp_path, fresh_tiny_model):
    # given 200 synthetic faces per class to train on and 20 per class from another draw
    params = tiny_params(*FROM_SCRATCH)
    train = synthetic_faces(params, 200, "train")
    val = synthetic_faces(params, 20, "val")
    # when both phases run from random weights
    head = fit_head(fresh_tiny_model, train, val, params, tmp_path / "head")
    tuned = fine_tune(fresh_tiny_model, train, val, params, tmp_path / "finetune", len(head))
    head_best = max(r["val_accuracy"] for r in head)
    final = tuned[-1]["val_accuracy"]
    log.info("val accuracy: phase 1 best %.3f, after phase 2 %.3f (chance %.3f)", head_best, final, CHANCE)
    # then the fine-tuned model is far above chance and well above what phase 1 reached
    # (measured on a 2-core CPU: phase 1 best 0.143, after phase 2 0.479; seeded, repeatable)
    curve = [round(r["val_accuracy"], 3) for r in head + tuned]
    assert final >= 0.4, curve  # 2.8x chance
    assert final >= head_best + 0.1, curve
