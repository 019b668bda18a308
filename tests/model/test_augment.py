"""Augmentation runs inside the training step and changes training batches only."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ferflow.training.augment import RandomCutout, TrainingModel, augmentation_layers
from tests.model.conftest import synthetic_faces, tiny_params

EVERYTHING = (
    "finetune.augment.horizontal_flip=true",
    "finetune.augment.shift=0.1",
    "finetune.augment.rotation=0.05",
    "finetune.augment.zoom=0.1",
    "finetune.augment.contrast=0.2",
    "finetune.augment.brightness=0.1",
    "finetune.augment.erasing=1.0",
)


@pytest.fixture(scope="module")
def faces():
    params = tiny_params()
    images, _ = synthetic_faces(params, 2, "train")
    return images  # uint8 (14, 32, 32)


def test_every_augmentation_option_gives_its_layer():
    augment = tiny_params(*EVERYTHING).finetune.augment

    names = [layer.name for layer in augmentation_layers(augment, seed=1)]

    assert names == ["flip", "rotate", "shift", "zoom", "contrast", "brightness", "erasing"]
    assert augmentation_layers(tiny_params().finetune.augment) == []  # the study: none


def test_the_wrapper_predicts_exactly_like_the_classifier(tiny_model, faces):
    trainer = TrainingModel(tiny_model, tiny_params(*EVERYTHING).finetune.augment, seed=1)

    wrapped = keras.ops.convert_to_numpy(trainer(faces, training=False))
    plain = tiny_model.predict(faces.astype("float32"), verbose=0)

    np.testing.assert_allclose(wrapped, plain, rtol=1e-5, atol=1e-6)


def test_augmentation_changes_training_batches_only(faces):
    augment = tiny_params(*EVERYTHING).finetune.augment
    identity = keras.Sequential([keras.Input((32, 32)), keras.layers.Flatten()])
    trainer = TrainingModel(identity, augment, seed=1)

    seen_in_training = keras.ops.convert_to_numpy(trainer(faces, training=True))
    seen_in_inference = keras.ops.convert_to_numpy(trainer(faces, training=False))
    again_in_training = keras.ops.convert_to_numpy(trainer(faces, training=True))

    flat = faces.reshape(len(faces), -1).astype("float32")
    np.testing.assert_array_equal(seen_in_inference, flat)
    assert not np.allclose(seen_in_training, flat)
    assert not np.allclose(seen_in_training, again_in_training)  # fresh randomness per batch
    assert seen_in_training.min() >= 0.0 and seen_in_training.max() <= 255.0


def test_the_saved_classifier_has_no_augmentation_layer(tmp_path, tiny_model, faces):
    trainer = TrainingModel(tiny_model, tiny_params(*EVERYTHING).finetune.augment, seed=1)
    trainer(faces, training=True)
    path = tmp_path / "model.keras"
    trainer.classifier.save(path)

    loaded = keras.saving.load_model(path, compile=False)
    names = {layer.name for layer in loaded.layers} | {
        layer.name for layer in loaded.get_layer("backbone").layers
    }

    assert not names & {"augmentation", "flip", "rotate", "shift", "zoom", "erasing"}
    assert loaded.input_shape == (None, 32, 32) and loaded.output_shape == (None, 7)


def test_cutout_greys_one_box_per_image_and_is_off_at_inference():
    images = np.zeros((64, 20, 20, 1), "float32")
    cutout = RandomCutout(rate=1.0, size=0.5, seed=3)

    erased = keras.ops.convert_to_numpy(cutout(images, training=True))
    grey_share = (erased == 127.5).mean(axis=(1, 2, 3))

    assert set(np.unique(erased)) <= {0.0, 127.5}
    assert (
        grey_share > 0
    ).mean() > 0.9  # nearly every image gets a box (a tiny one may miss all pixel centres)
    assert grey_share.max() <= 0.25 + 1e-6  # at most half the side squared
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(cutout(images, training=False)), images)
    none = RandomCutout(rate=0.0, seed=3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(none(images, training=True)), images)


@pytest.mark.parametrize("overrides", [(), EVERYTHING], ids=["no-augmentation", "every-augmentation"])
def test_the_wrapper_trains_with_and_without_augmentation(overrides):
    # given a tiny classifier and uint8 faces; the study's default has no augmentation at all
    params = tiny_params(*overrides)
    images, labels = synthetic_faces(params, 2, "train")
    classifier = keras.Sequential(
        [keras.Input(images.shape[1:]), keras.layers.Flatten(), keras.layers.Dense(7, activation="softmax")]
    )
    trainer = TrainingModel(classifier, params.finetune.augment, seed=0)
    trainer.compile(optimizer="sgd", loss="categorical_crossentropy")
    before = [w.copy() for w in classifier.get_weights()]
    # when it is fitted for one epoch
    trainer.fit(images, keras.utils.to_categorical(labels, 7), batch_size=7, epochs=1, verbose=0)
    # then the classifier's weights moved
    assert any(not np.allclose(a, b) for a, b in zip(before, classifier.get_weights(), strict=True))
