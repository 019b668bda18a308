"""Fixed-shape batches (ferflow.training.batching) and the callbacks that keep phase 2 free of
per-step host syncs: the padding changes no number, only the shapes the model sees."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ferflow.evaluation.evaluate import compute_metrics, predict_probabilities
from ferflow.training.batching import padding_rows, predict_padded, wrap_to_batches

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def test_training_rows_are_wrapped_to_whole_batches_with_every_row_kept():
    # given 35 rows (not a multiple of 16), labels equal to the row index
    images = np.arange(35)[:, None, None] * np.ones((1, 4, 4), "uint8")
    labels = np.arange(35)
    # when they are wrapped to batches of 16
    wrapped_images, wrapped_labels = wrap_to_batches((images, labels), 16, seed=0)
    # then there are 3 full batches: all 35 rows once, 13 of them twice, pairs kept together
    assert len(wrapped_labels) == 48 and padding_rows(35, 16) == 13
    assert set(wrapped_labels) == set(range(35))
    assert np.bincount(wrapped_labels).max() == 2 and np.bincount(wrapped_labels).sum() == 48
    assert np.array_equal(wrapped_images[:, 0, 0], wrapped_labels)


def test_rows_already_in_whole_batches_are_left_as_they_are():
    labels = np.arange(32)
    assert wrap_to_batches((labels,), 16)[0] is labels


def test_padded_prediction_feeds_only_full_batches_and_drops_the_padding():
    seen: list[int] = []

    def rowwise(batch: np.ndarray) -> np.ndarray:  # each row's output depends on that row only
        seen.append(len(batch))
        return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True) * np.ones((1, 3))

    images = np.random.default_rng(0).random((21, 4, 4))

    out = predict_padded(rowwise, images, 8)

    assert seen == [8, 8, 8]
    np.testing.assert_array_equal(out, rowwise(images))


def test_padded_evaluation_gives_the_metrics_of_an_unpadded_pass():
    # given a row-wise model and 45 test faces (batch 16: a last batch of 13)
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, (45, 8, 8)).astype("float32"), rng.integers(0, 7, 45)
    weights = rng.random((64, 7))

    def model(batch: np.ndarray) -> np.ndarray:
        logits = batch.reshape(len(batch), -1) @ weights / 1000.0
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    # when it is evaluated in padded batches (with the flip) and in one unpadded pass
    padded = predict_probabilities(model, images, 16, tta_flip=True)
    whole = (model(images) + model(images[:, :, ::-1].copy())) / 2
    # then the probabilities and every metric are the same, to the last digit
    np.testing.assert_array_equal(padded, whole)
    assert compute_metrics(labels, padded, CLASSES) == compute_metrics(labels, whole, CLASSES)


def test_a_keras_model_scores_each_row_the_same_in_a_padded_batch():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8)), keras.layers.Flatten(), keras.layers.Dense(7, "softmax")])
    images = np.random.default_rng(2).random((21, 8, 8)).astype("float32")

    padded = predict_probabilities(model.predict_on_batch, images, 16)

    np.testing.assert_allclose(padded, model.predict_on_batch(images), rtol=1e-6, atol=1e-7)


def test_the_validation_callback_matches_keras_own_evaluation():
    from ferflow.training.callbacks import Validation

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(7, "softmax", kernel_regularizer=keras.regularizers.L2(0.01)),
        ]
    )
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
    model.compile(optimizer="sgd", loss=loss, metrics=["accuracy"])
    rng = np.random.default_rng(3)
    x, y = rng.random((21, 8)).astype("float32"), keras.utils.to_categorical(rng.integers(0, 7, 21), 7)
    validation = Validation(x, y, 16, loss)
    validation.set_model(model)
    logs: dict = {}

    validation.on_epoch_end(0, logs)

    keras_loss, keras_accuracy = model.evaluate(x, y, batch_size=21, verbose=0)
    assert logs["val_loss"] == pytest.approx(keras_loss, rel=1e-5)
    assert logs["val_accuracy"] == pytest.approx(keras_accuracy)


def test_phase_callbacks_read_no_tensor_on_the_training_thread_after_each_batch(tmp_path):
    # Keras calls batch hooks from a worker thread (JAX) only when every callback that has
    # one is async_safe; one that is not makes the loop wait for the device at every step
    from ferflow.training.backup import EpochBackup
    from ferflow.training.callbacks import Validation, phase_callbacks

    validation = Validation(np.zeros((1, 8)), np.zeros((1, 7)), 16, "categorical_crossentropy")
    callbacks, _, _ = phase_callbacks("finetune", EpochBackup(tmp_path), 0, 3, True, validation)
    with_batch_hooks = [
        c
        for c in callbacks
        if type(c).on_train_batch_end is not keras.callbacks.Callback.on_train_batch_end
        or type(c).on_batch_end is not keras.callbacks.Callback.on_batch_end
    ]

    assert with_batch_hooks  # the progress bar and the NaN guard have them
    assert all(getattr(c, "async_safe", False) for c in with_batch_hooks), with_batch_hooks
    assert not any(isinstance(c, keras.callbacks.TerminateOnNaN) for c in callbacks)


def test_the_nan_guard_stops_training_and_remembers_the_loss():
    from types import SimpleNamespace

    from ferflow.training.callbacks import NanGuard

    guard = NanGuard()
    guard.set_model(SimpleNamespace(stop_training=False))
    guard.on_train_batch_end(0, {"loss": 1.5})
    assert not guard.model.stop_training and guard.loss == 1.5

    guard.on_train_batch_end(1, {"loss": float("nan")})

    assert guard.model.stop_training and np.isnan(guard.loss)
