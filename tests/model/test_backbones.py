"""The backbone table: every entry builds, counts, trains and round-trips like the study's DenseNet.

Builds are shared per session (a DenseNet build costs seconds on a busy 2-core CPU); the
Keras-application DenseNets beyond the tiny DenseNet121 are slow-marked. Training steps run
eagerly: one real gradient step without tracing a DenseNet train function (a minute or more).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

import keras
import numpy as np
import pytest

from ferflow.config import BackboneName, ParamsError
from ferflow.data.dataset import load_prepared
from ferflow.training.backbones import BACKBONES, SmallDenseNet
from ferflow.training.model import (
    WeightsError,
    backbone_of,
    build_model,
    feature_extractor,
    head_model,
    load_model,
    set_backbone_trainable,
)
from ferflow.training.train import fit_head
from tests.model.conftest import tiny_params

Build = Callable[[str, int], keras.Model]

# Whole-model parameter counts with the tiny head (Dense 64, Dense 7): the same at 48 and 32 px
# (convolutions and global pooling only). Head: features x 64 + 64 + 64 x 7 + 7.
EXPECTED_PARAMS = {
    "densenet121": 7_037_504 + 1024 * 64 + 64 + 455,
    "densenet169": 12_642_880 + 1664 * 64 + 64 + 455,
    "densenet201": 18_321_984 + 1920 * 64 + 64 + 455,
    "densenet-bc-cpu": 308_288 + 200 * 64 + 64 + 455,
    "densenet-bc-gpu": 3_984_912 + 768 * 64 + 64 + 455,
}
SMALL_IMAGE = [name for name, spec in BACKBONES.items() if isinstance(spec, SmallDenseNet)]
KERAS_APPLICATIONS = [name for name in BACKBONES if name not in SMALL_IMAGE]
# Already built in the default suite (the tiny model of tests/model/conftest.py); other
# Keras-application builds take 5-15 s each here.
FAST_KERAS = {("densenet121", 32)}


def _params(name: str, size: int, *overrides: str):
    return tiny_params(
        f"base.image_size={size}", f"model.backbone={name}", f"model.input_size={size}", *overrides
    )


@pytest.fixture(scope="session")
def build(tiny_model: keras.Model) -> Build:
    """One model per (backbone, size) for the session: the tiny head, random weights.
    DenseNet121 at 32 px is the shared tiny model (same params); tests put back what they change."""
    models: dict[tuple[str, int], keras.Model] = {("densenet121", 32): tiny_model}

    def _build(name: str, size: int) -> keras.Model:
        if (name, size) not in models:
            models[name, size] = build_model(_params(name, size).model, size, 7, seed=12)
        return models[name, size]

    return _build


def _table(names: list[str], sizes: tuple[int, ...], fast: set[tuple[str, int]] | None = None) -> list:
    return [
        pytest.param(name, size, marks=() if fast is None or (name, size) in fast else pytest.mark.slow)
        for name in names
        for size in sizes
    ]


def _faces(count: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size)).astype("float32")


def _trainable_count(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def test_the_config_accepts_exactly_the_tables_names():
    assert get_args(BackboneName) == tuple(BACKBONES)


def test_a_misspelt_backbone_lists_the_valid_names():
    # given a typo, when the params are loaded, then the error names every entry of the table
    with pytest.raises(ParamsError) as err:
        tiny_params("model.backbone=densenet-bc-cpux")

    assert all(f"'{name}'" in str(err.value) for name in BACKBONES)


@pytest.mark.parametrize(
    ("name", "size"), [*_table(SMALL_IMAGE, (48, 32)), *_table(KERAS_APPLICATIONS, (48, 32), FAST_KERAS)]
)
def test_every_backbone_builds_with_its_parameter_count(build, name, size):
    # when the backbone is built into the tiny model at this size (backbone frozen)
    model = build(name, size)
    # then it has its expected counts, only the head trains, and it predicts probabilities
    assert model.count_params() == EXPECTED_PARAMS[name]
    assert _trainable_count(model) == EXPECTED_PARAMS[name] - backbone_of(model).count_params()
    probs = np.asarray(model(_faces(2, size)))
    assert probs.shape == (2, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "size"), [*_table(SMALL_IMAGE, (32,)), *_table(KERAS_APPLICATIONS, (32,), set())]
)
def test_every_backbone_trains_one_step(build, name, size):
    # given the model unfrozen the from-scratch way (BatchNorm learning)
    model = build(name, size)
    initial = model.get_weights()
    set_backbone_trainable(model, True, train_batchnorm=True)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", run_eagerly=True
    )
    before = [np.asarray(w).copy() for w in backbone_of(model).trainable_weights]
    try:
        # when it takes one training step on four faces
        loss = model.train_on_batch(_faces(4, size, seed=3), np.array([0, 1, 2, 3]))
        after = [np.asarray(w) for w in backbone_of(model).trainable_weights]
    finally:
        model.set_weights(initial)
        set_backbone_trainable(model, False)
    # then the loss is finite and the backbone's weights moved
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_small_image_backbones_take_one_channel_in_minus_one_to_one(build):
    # given a small-image backbone (no channel repetition, no ImageNet statistics)
    model = build("densenet-bc-cpu", 32)
    normalise = model.get_layer(BACKBONES["densenet-bc-cpu"].normalisation.name)
    # when black and white pixels pass the in-model normalisation
    out = np.asarray(normalise(np.array([[[[0.0]], [[255.0]]]], "float32")))
    # then they are -1 and 1, and the backbone reads one channel
    np.testing.assert_allclose(out.ravel(), [-1.0, 1.0], atol=1e-6)
    assert backbone_of(model).input.shape[-1] == 1
    assert "repeat_channels" not in [layer.name for layer in model.layers]


def test_the_cpu_backbone_keeps_24x24_in_its_first_block(build):
    # given the CPU-sized entry at 48 px, then its first dense block runs at half resolution
    backbone = backbone_of(build("densenet-bc-cpu", 48))

    assert backbone.get_layer("block1_layer1_2_conv").output.shape[1:3] == (24, 24)
    assert backbone.output.shape[1:3] == (6, 6)


def test_freezing_a_small_image_backbone_handles_batchnorm(build):
    model = build("densenet-bc-cpu", 32)
    norms = [
        layer for layer in backbone_of(model).layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    try:
        # when unfrozen the study's way, BatchNorm stays frozen; the from-scratch way, it learns
        set_backbone_trainable(model, True)
        assert norms and not any(layer.trainable for layer in norms)
        set_backbone_trainable(model, True, train_batchnorm=True)
        assert all(layer.trainable for layer in norms)
    finally:
        set_backbone_trainable(model, False)
    assert _trainable_count(model) == EXPECTED_PARAMS["densenet-bc-cpu"] - backbone_of(model).count_params()


def test_a_small_image_model_saves_and_reloads_with_equal_predictions(tmp_path, build):
    # given a small-image model saved as a .keras file
    model = build("densenet-bc-cpu", 32)
    path = tmp_path / "model.keras"
    model.save(path)
    # when it is loaded back
    loaded = load_model(path)
    # then it predicts the same and its backbone is still found by name
    faces = _faces(3, 32, seed=5)
    np.testing.assert_allclose(np.asarray(loaded(faces)), np.asarray(model(faces)), atol=1e-6)
    assert backbone_of(loaded).count_params() == backbone_of(model).count_params()


def test_a_small_image_model_loads_its_whole_model_weights_file(tmp_path, build):
    model = build("densenet-bc-cpu", 32)
    path = tmp_path / "trained.weights.h5"
    model.save_weights(path)

    loaded = build_model(_params("densenet-bc-cpu", 32, f"model.weights={path}").model, 32, 7, seed=99)

    faces = _faces(2, 32, seed=6)
    np.testing.assert_allclose(np.asarray(loaded(faces)), np.asarray(model(faces)), atol=1e-6)


def test_phase_one_trains_a_head_on_cached_small_image_features(tmp_path, tiny_data):
    # given a fresh small-image model and the tiny synthetic dataset (32 px)
    params = _params("densenet-bc-cpu", 32, "train.epochs=1", "train.cache_features=true")
    model = build_model(params.model, 32, 7, seed=12)
    data = load_prepared(tiny_data)
    head_before = [np.asarray(w).copy() for w in head_model(model).weights]
    # when phase 1 runs on cached features
    records = fit_head(model, data.split("train"), data.split("val"), params, tmp_path / "backup")
    # then it ran its epoch, trained the full model's head, and the head still composes
    assert len(records) == 1 and np.isfinite(records[0]["loss"])
    assert any(
        not np.array_equal(a, np.asarray(b))
        for a, b in zip(head_before, head_model(model).weights, strict=True)
    )
    faces = _faces(2, 32, seed=7)
    composed = np.asarray(head_model(model)(feature_extractor(model)(faces)))
    np.testing.assert_allclose(composed, np.asarray(model(faces)), atol=1e-5)


@pytest.mark.parametrize("name", SMALL_IMAGE)
def test_imagenet_weights_on_a_small_image_backbone_are_refused(name):
    params = _params(name, 32, "model.weights=imagenet")

    with pytest.raises(
        WeightsError, match=rf"^model\.weights=imagenet: {name} .*model\.weights to none"
    ) as err:
        build_model(params.model, 32, 7)

    assert "\n" not in str(err.value)


def test_a_keras_backbone_file_on_a_small_image_backbone_is_refused(tmp_path):
    path = tmp_path / "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"
    path.write_bytes(b"")
    params = _params("densenet-bc-cpu", 32, f"model.weights={path}")

    with pytest.raises(WeightsError, match=r"densenet-bc-cpu takes no Keras-applications backbone file"):
        build_model(params.model, 32, 7)
