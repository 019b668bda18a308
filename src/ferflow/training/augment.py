"""Data augmentation inside the compiled training step.

`TrainingModel` wraps a ferflow classifier for `fit` only: it casts the preloaded uint8
batch to float32, applies random flips, shifts, rotations, zooms, contrast and brightness
changes and random erasing (cutout) as Keras layers when `training=True`, then calls the
classifier. Everything runs in the backend's compiled train step (a `tf.function`, a
jitted JAX function or PyTorch), with no per-batch Python or NumPy work. With
`training=False` (validation, predict) it is the classifier itself, so the model that is
saved, served and registered is the classifier alone: `pixels (n, S, S) -> (n, classes)`,
with no augmentation layer in it.

Keras 3 layers and `keras.ops` only: the same code runs on TensorFlow, JAX and PyTorch.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from ferflow.config import Augment

PIXEL_RANGE = (0.0, 255.0)


@keras.saving.register_keras_serializable(package="ferflow")
class RandomCutout(keras.layers.Layer):
    """Cutout (DeVries & Taylor, 2017): with probability `rate`, one square of side up to
    `size` x the image side, centred anywhere (so it may cross the border), is set to
    mid-grey. Inputs `(n, H, W, C)` in 0..255.

    Not Keras 3's `RandomErasing` (Zhong et al., 2017), which erases a rectangle of area
    fraction within `scale` lying wholly inside the image, fills it with noise unless told
    a value, and applies with a probability drawn from U(0, factor) for a single `factor`:
    another augmentation, so it is not swapped in (docs/training.md, "Erasing").

    Per-image boxes are built from index comparisons (no gather/scatter), so it compiles on
    every backend. Identity when `training` is false.
    """

    def __init__(self, rate: float, size: float = 0.4, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate, self.size, self.seed = float(rate), float(size), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images: Any, training: bool = False) -> Any:
        if not training or self.rate <= 0.0:
            return images
        n, height, width = ops.shape(images)[0], ops.shape(images)[1], ops.shape(images)[2]
        # One uniform draw per image and per quantity: apply?, side, centre row, centre column.
        draws = keras.random.uniform((n, 4), seed=self.seed_generator)
        apply = ops.cast(draws[:, 0] < self.rate, images.dtype)
        half = draws[:, 1] * self.size * 0.5  # half side, as a fraction of the image
        centre_y, centre_x = draws[:, 2], draws[:, 3]
        rows = (ops.cast(ops.arange(height), "float32") + 0.5) / ops.cast(height, "float32")
        cols = (ops.cast(ops.arange(width), "float32") + 0.5) / ops.cast(width, "float32")
        inside_y = ops.abs(rows[None, :] - centre_y[:, None]) <= half[:, None]  # (n, H)
        inside_x = ops.abs(cols[None, :] - centre_x[:, None]) <= half[:, None]  # (n, W)
        box = ops.cast(ops.logical_and(inside_y[:, :, None], inside_x[:, None, :]), images.dtype)
        mask = (box * apply[:, None, None])[..., None]  # (n, H, W, 1)
        grey = ops.cast(sum(PIXEL_RANGE) / 2.0, images.dtype)
        return images * (1.0 - mask) + grey * mask

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate, "size": self.size, "seed": self.seed}


def augmentation_layers(augment: Augment, seed: int | None = None) -> list[keras.layers.Layer]:
    """The layers `augment` asks for, in a fixed order (geometry, then photometry, then erasing).

    Each layer gets its own seed derived from `seed`, so runs repeat with `runtime.deterministic`.
    """

    def next_seed(offset: int) -> int | None:
        return None if seed is None else seed + offset

    layers: list[keras.layers.Layer] = []
    if augment.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=next_seed(1), name="flip"))
    if augment.rotation > 0:
        layers.append(
            keras.layers.RandomRotation(
                augment.rotation, fill_mode="nearest", seed=next_seed(2), name="rotate"
            )
        )
    if augment.shift > 0:
        layers.append(
            keras.layers.RandomTranslation(
                augment.shift, augment.shift, fill_mode="nearest", seed=next_seed(3), name="shift"
            )
        )
    if augment.zoom > 0:
        layers.append(
            keras.layers.RandomZoom(
                augment.zoom, augment.zoom, fill_mode="nearest", seed=next_seed(4), name="zoom"
            )
        )
    if augment.contrast > 0:
        layers.append(
            keras.layers.RandomContrast(
                augment.contrast, value_range=PIXEL_RANGE, seed=next_seed(5), name="contrast"
            )
        )
    if augment.brightness > 0:
        layers.append(
            keras.layers.RandomBrightness(
                augment.brightness, value_range=PIXEL_RANGE, seed=next_seed(6), name="brightness"
            )
        )
    if augment.erasing > 0:
        layers.append(RandomCutout(augment.erasing, augment.erasing_size, seed=next_seed(7), name="erasing"))
    if keras.backend.backend() == "jax":
        # RandomTranslation and RandomZoom declare `supports_jit = False` (for TensorFlow's
        # XLA), and one such layer makes Keras run the whole JAX train step op by op:
        # hundreds of tiny compilations and no cacheable step. On JAX their transform is
        # `ops.image.affine_transform` (map_coordinates), which jits.
        for layer in layers:
            layer.supports_jit = True
    return layers


class TrainingModel(keras.Model):
    """`fit`-only wrapper: uint8 pixels -> float32 -> augmentation (training only) -> classifier.

    The classifier's variables are the wrapper's trainable variables, so fitting the wrapper
    trains the classifier; save and serve `wrapper.classifier`, never the wrapper.
    """

    def __init__(
        self, classifier: keras.Model, augment: Augment, seed: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(name=kwargs.pop("name", "training_model"), **kwargs)
        self.classifier = classifier
        self.augmentation = keras.Sequential(augmentation_layers(augment, seed), name="augmentation")

    def build(self, input_shape: Any) -> None:
        # the classifier is built already; the augmentation layers see (n, S, S, 1). Without
        # augmentation there is nothing to build (Keras refuses to build an empty Sequential).
        if self.augmentation.layers:
            self.augmentation.build((*input_shape, 1))
        self.built = True

    def call(self, pixels: Any, training: bool = False) -> Any:
        x = ops.cast(pixels, "float32")
        if training and self.augmentation.layers:
            x = ops.squeeze(self.augmentation(ops.expand_dims(x, -1), training=True), -1)
        return self.classifier(x, training=training)
