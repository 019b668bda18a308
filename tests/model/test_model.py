"""The model builder: the study's architecture, in-model preprocessing, weights options."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from ferflow.training.model import WeightsError, build_model, feature_extractor, head_model
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
        WeightsError, match=r"cannot fetch the densenet121 ImageNet weights.*--params profiles/cpu\.yaml"
    ):
        build_model(params.model, 32, 7)


def test_imagenet_weights_that_cannot_be_fetched_name_the_from_scratch_route(monkeypatch, tmp_path):
    # given an empty Keras cache and a weights server that refuses connections (offline)
    from ferflow.training import model as model_module

    monkeypatch.setattr(model_module, "IMAGENET_WEIGHTS_URL", "http://127.0.0.1:1/")
    params = tiny_params("model.weights=imagenet")
    # when the preflight looks for the file, then it fails at once with the command to run
    with pytest.raises(WeightsError) as caught:
        model_module.ensure_imagenet_weights(params.model, timeout_s=5, cache_dir=str(tmp_path))
    said = str(caught.value)
    assert "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5" in said
    assert "nothing was run" in said and "ferflow train --params profiles/cpu.yaml" in said


def test_imagenet_weights_in_the_keras_cache_need_no_network(monkeypatch, tmp_path):
    # given the notop file in the Keras cache and no weights server
    from ferflow.training import model as model_module

    monkeypatch.setattr(model_module, "IMAGENET_WEIGHTS_URL", "http://127.0.0.1:1/")
    cached = tmp_path / "models" / "densenet169_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cached.parent.mkdir()
    cached.write_bytes(b"weights")
    # (a stand-in file: its md5 is the one the preflight checks, as Keras does)
    monkeypatch.setitem(model_module.IMAGENET_NOTOP_MD5, "DenseNet169", hashlib.md5(b"weights").hexdigest())
    params = tiny_params("model.backbone=densenet169", "model.weights=imagenet")
    # then the preflight finds it; other weights need no preflight at all
    assert model_module.ensure_imagenet_weights(params.model, cache_dir=str(tmp_path)) == cached
    assert model_module.ensure_imagenet_weights(tiny_params("model.weights=none").model) is None


def test_a_truncated_imagenet_file_in_the_cache_is_not_taken(monkeypatch, tmp_path):
    # given a cut-short notop file in the Keras cache and no weights server
    from ferflow.training import model as model_module

    monkeypatch.setattr(model_module, "IMAGENET_WEIGHTS_URL", "http://127.0.0.1:1/")
    cached = tmp_path / "models" / "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cached.parent.mkdir()
    cached.write_bytes(b"the first bytes of the weights")
    # then the preflight fetches it again (here it cannot): the md5 is checked, as Keras does
    with pytest.raises(WeightsError, match="cannot fetch densenet121_weights"):
        model_module.ensure_imagenet_weights(tiny_params("model.weights=imagenet").model, 5, str(tmp_path))


def test_train_without_reachable_imagenet_weights_starts_no_run(monkeypatch, tmp_path, tiny_data):
    # given an offline machine (the weights server refuses connections) and a local store
    import mlflow
    from keras.src.backend.config import keras_home

    from ferflow.stages import Layout
    from ferflow.stages.head_training import train
    from ferflow.training import model as model_module

    if (Path(keras_home()) / "models" / "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5").exists():
        pytest.skip("this machine has the ImageNet file cached: it is not offline for Keras")
    monkeypatch.setattr(model_module, "IMAGENET_WEIGHTS_URL", "http://127.0.0.1:1/")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    models = tmp_path / "models"
    layout = Layout(raw=tiny_data, prepared=tiny_data, models=models, reports=tmp_path / "reports")
    # when phase 1 is asked for with the study's ImageNet weights
    with pytest.raises(WeightsError, match=r"ferflow train --params profiles/cpu\.yaml"):
        train(tiny_params("model.weights=imagenet"), layout)
    # then no MLflow run was created and no run.json written: nothing to clean up
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert not experiments or client.search_runs(experiments) == []
    assert not (models / "run.json").exists()
