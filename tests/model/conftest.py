"""Fixtures for model tests: the real params shrunk to a tiny DenseNet121 on 32 px faces.

DenseNet builds cost seconds each on a small CPU, so the tiny model is built once per
session; tests that train it restore its initial weights first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ferflow.config import Params
from ferflow.data.dataset import MANIFEST_COLUMNS, write_prepared
from tests.conftest import small_params
from tests.data.factories import manifest_row

# A DenseNet121 at 32 px with a one-layer head: small enough to build and train in seconds.
TINY = (
    "base.image_size=32",
    "model.backbone=densenet121",
    "model.input_size=32",
    "model.head_units=[64]",
    "model.dropout=[0.0]",
    "train.batch_size=16",
    "train.learning_rate=0.001",
)


def tiny_params(*overrides: str) -> Params:
    return small_params(*TINY, *overrides)


def tiny_profile_params(*overrides: str) -> Params:
    """profiles/from-scratch.yaml shrunk like `tiny_params` (32 px, one small dense layer)."""
    from ferflow.config import load_params
    from tests.conftest import NO_FLOORS, PARAMS_FILE

    profile = PARAMS_FILE.parent / "profiles" / "from-scratch.yaml"
    shrink = [o for o in TINY if not o.startswith("train.learning_rate")]
    return load_params(profile, [*NO_FLOORS, *shrink, *overrides])


def synthetic_faces(params: Params, per_class: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Faces from ferflow.data.synth when available, else simple class-coded patterns."""
    classes, size = params.base.classes, params.base.image_size
    try:
        from ferflow.data.synth import draw_faces

        # synth has train and test streams; val faces come from the train stream of another seed
        seed = params.base.seed + (1 if split == "val" else 0)
        stream = "test" if split == "test" else "train"
        return draw_faces(per_class, classes, seed=seed, size=size, split=stream)
    except ImportError:
        rng = np.random.default_rng(abs(hash(split)) % 1000)
        labels = np.repeat(np.arange(len(classes)), per_class)
        images = rng.integers(0, 60, (len(labels), size, size)).astype(np.uint8)
        for row, label in enumerate(labels):  # a bright bar whose row codes the class
            top = 2 + label * (size - 4) // len(classes)
            images[row, top : top + 3, 4:-4] = 220
        return images, labels


def write_dataset(out: Path, params: Params, per_class: dict[str, int]) -> Path:
    """A prepared dataset (images.npy + manifest.csv + dataset.json) of synthetic faces."""
    images, rows = [], []
    for split, count in per_class.items():
        pixels, labels = synthetic_faces(params, count, split)
        for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
            name = params.base.classes[label]
            rows.append(manifest_row(split, name, index, image, label_index=int(label)))
            images.append(image)
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    write_prepared(out, np.stack(images), manifest, {"classes": list(params.base.classes)})
    return out


@pytest.fixture(scope="session")
def tiny() -> Params:
    return tiny_params()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory, tiny: Params) -> Path:
    """Synthetic faces: 24 train, 8 val, 4 test per class."""
    out = tmp_path_factory.mktemp("prepared")
    return write_dataset(out, tiny, {"train": 24, "val": 8, "test": 4})


@pytest.fixture(scope="session")
def tiny_model(tiny: Params):
    """One DenseNet121 (32 px, random weights) shared by the tests; restore weights after use."""
    from ferflow.training.model import build_model

    return build_model(tiny.model, tiny.base.image_size, len(tiny.base.classes), seed=tiny.base.seed)


@pytest.fixture()
def fresh_tiny_model(tiny_model):
    """The shared tiny model with its initial weights put back after the test."""
    initial = tiny_model.get_weights()
    yield tiny_model
    tiny_model.set_weights(initial)
    from ferflow.training.model import set_backbone_trainable

    set_backbone_trainable(tiny_model, False)
