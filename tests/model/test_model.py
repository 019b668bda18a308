"""The model builder: the study's architecture, in-model preprocessing, weights options."""

from __future__ import annotations

import numpy as np
import pytest

from ferflow.model import WeightsError, build_model, feature_extractor, head_model
from tests.conftest import small_params
from tests.model.conftest import tiny_params


def _trainable_count(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def test_default_model_has_the_studys_parameter_counts():
    # given the real params (DenseNet169, 48 px, head 256/1024/512) without downloads
    params = small_params("model.weights=none")
    # when the model is built (backbone frozen, phase 1)
    model = build_model(params.model, params.base.image_size, len(params.base.classes))
    # then the counts are Figure 1's
    assert model.count_params() == 13_860_679
    assert _trainable_count(model) == 1_217_799
    assert model.output.shape[-1] == 7
    assert model.layers[-1].name == "classification"


def test_model_takes_grayscale_pixels_and_returns_probabilities(tiny, tiny_model):
    # given a batch of grayscale images (n, S, S) float32 in 0..255
    batch = np.random.default_rng(0).uniform(0, 255, (3, 32, 32)).astype("float32")
    # when the model predicts
    probs = np.asarray(tiny_model(batch))
    # then it returns one probability distribution per image
    assert probs.shape == (3, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_head_model_shares_weights_with_the_full_model(tiny_model):
    # given the feature extractor and the head model of one model
    batch = np.random.default_rng(1).uniform(0, 255, (2, 32, 32)).astype("float32")
    head = head_model(tiny_model)
    # when the head is applied to the extracted features
    composed = np.asarray(head(feature_extractor(tiny_model)(batch)))
    # then it gives what the full model gives, with no weights of its own
    np.testing.assert_allclose(composed, np.asarray(tiny_model(batch)), atol=1e-6)
    assert {id(w) for w in head.weights} <= {id(w) for w in tiny_model.weights}


def test_whole_model_weights_file_is_loaded(tmp_path, tiny, tiny_model):
    # given the shared model's weights saved to a .weights.h5 file
    path = tmp_path / "trained.weights.h5"
    tiny_model.save_weights(path)
    # when a model is built with model.weights pointing at it
    params = tiny_params(f"model.weights={path}")
    loaded = build_model(params.model, 32, 7, seed=99)
    # then it predicts exactly like the saved model
    batch = np.random.default_rng(2).uniform(0, 255, (2, 32, 32)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(batch)), np.asarray(tiny_model(batch)), atol=1e-6)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    # given model.weights naming a file that does not exist
    params = tiny_params(f"model.weights={tmp_path / 'nope.h5'}")
    # when the model is built, then the error names the file and the choices
    with pytest.raises(WeightsError, match=r"nope\.h5 does not exist.*'imagenet', 'none'"):
        build_model(params.model, 32, 7)


def test_incompatible_weights_file_is_a_clear_error(tmp_path):
    # given a file that is not a weights file of this model
    path = tmp_path / "other.weights.h5"
    path.write_bytes(b"not an hdf5 file")
    params = tiny_params(f"model.weights={path}")
    # when the model is built, then the error says what the file must be
    with pytest.raises(WeightsError, match="does not fit this model"):
        build_model(params.model, 32, 7)


def test_imagenet_weights_offline_is_a_clear_error(monkeypatch):
    # given a machine where the ImageNet download fails
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: no internet")

    monkeypatch.setattr(file_utils, "get_file", offline)
    params = tiny_params("model.weights=imagenet")
    # when the model is built, then the error says how to work offline
    with pytest.raises(
        WeightsError, match=r"cannot fetch the densenet121 ImageNet weights.*model\.weights=none"
    ):
        build_model(params.model, 32, 7)
