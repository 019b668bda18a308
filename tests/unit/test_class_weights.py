"""finetune.class_weights: balanced (true) and the milder square root (sqrt)."""

from __future__ import annotations

import numpy as np
import pytest

from ferflow.config import ParamsError
from ferflow.training.train import balanced_class_weights
from tests.model.conftest import tiny_params

# 80 of class 0, 16 of class 1, 4 of class 2: FER2013's happy / fear / disgust shape
COUNTS = [80, 16, 4]
LABELS = np.repeat([0, 1, 2], COUNTS)


def test_balanced_weights_equalise_each_class_total():
    weights = balanced_class_weights(LABELS, 3)
    totals = [weights[c] * COUNTS[c] for c in range(3)]
    assert totals == pytest.approx([totals[0]] * 3)
    assert np.mean([weights[c] for c in LABELS]) == pytest.approx(1.0)


def test_sqrt_weights_are_the_square_root_of_the_balanced_ones():
    full, mild = balanced_class_weights(LABELS, 3), balanced_class_weights(LABELS, 3, power=0.5)
    assert [mild[c] for c in range(3)] == pytest.approx([np.sqrt(full[c]) for c in range(3)])
    # the rare class still weighs most, by sqrt of the count ratio (20x rarer: ~4.47x heavier)
    assert mild[2] / mild[0] == pytest.approx(np.sqrt(80 / 4))
    assert mild[2] > mild[1] > mild[0]


def test_a_class_without_images_gets_a_finite_weight():
    weights = balanced_class_weights(np.array([0, 0, 1]), 3, power=0.5)
    assert all(np.isfinite(list(weights.values())))


@pytest.mark.parametrize("value", ["sqrt", "true", "false"])
def test_class_weights_accepts_its_three_values(value):
    expected = {"sqrt": "sqrt", "true": True, "false": False}[value]
    assert tiny_params(f"finetune.class_weights={value}").finetune.class_weights == expected


def test_an_unknown_class_weighting_names_the_field():
    with pytest.raises(ParamsError, match="class_weights"):
        tiny_params("finetune.class_weights=half")
