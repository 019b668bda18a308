"""The backbone table: every DenseNet `model.backbone` can name, with its input normalisation.

Two kinds of entries:

- the Keras-application DenseNets (121/169/201), built for 224 px ImageNet photos: a 7x7
  stride-2 stem and a max-pool turn a 48 px face into 12x12 before the first dense block.
  They take 3 channels (the grey channel repeated) with ImageNet's "torch" normalisation,
  and can start from ImageNet weights;
- DenseNet-BC networks built here for small images from plain Keras layers (Huang et al.
  2017, the CIFAR variant): a 3x3 stem that keeps full or half resolution, dense blocks of
  bottleneck layers BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k) whose outputs are concatenated,
  and transitions BN-ReLU-Conv1x1(compression x channels)-AvgPool2 between blocks. They take
  the one grey channel scaled to [-1, 1] and start from random weights (or a ferflow file).

Either way the backbone is a nested functional `keras.Model` without top, ending in BN-ReLU,
so `ferflow.training.model` pools, heads, freezes, saves and loads every entry the same way.
`ferflow.config.BackboneName` lists the same names (config must not import model code, or
every stage would depend on it); a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import keras

# DenseNet's own epsilon (keras.applications.densenet), kept for the small-image nets too.
_BN_EPSILON = 1.001e-5


@dataclass(frozen=True)
class Normalisation:
    """`(x / 255 - mean) / std` per channel, as a weightless Rescaling layer inside the model."""

    name: str  # the Rescaling layer's name
    channels: int  # 3: the grey channel repeated; 1: the grey channel as is
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def layer(self) -> keras.layers.Rescaling:
        return keras.layers.Rescaling(
            scale=[1.0 / (255.0 * s) for s in self.std],
            offset=[-m / s for m, s in zip(self.mean, self.std, strict=True)],
            name=self.name,
        )


# keras.applications.densenet.preprocess_input uses mode="torch": ImageNet mean/std per channel.
IMAGENET = Normalisation(
    "imagenet_normalise", channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)
# Grey pixels 0..255 to [-1, 1]: no dataset statistics to recompute, BatchNorm follows the stem.
UNIT_RANGE = Normalisation("unit_range_normalise", channels=1, mean=(0.5,), std=(0.5,))


@dataclass(frozen=True)
class KerasDenseNet:
    """A keras.applications DenseNet without top; ImageNet weights available."""

    application: Literal["DenseNet121", "DenseNet169", "DenseNet201"]
    normalisation: Normalisation = IMAGENET
    imagenet_weights: bool = True

    def build(self, size: int, weights: str | None) -> keras.Model:
        """`weights`: None, "imagenet" or a Keras "notop" .h5 file."""
        constructor = getattr(keras.applications, self.application)
        shape = (size, size, self.normalisation.channels)
        return constructor(include_top=False, weights=weights, input_shape=shape)


@dataclass(frozen=True)
class SmallDenseNet:
    """A DenseNet-BC for small images; `stem` sets the first block's resolution."""

    stem: Literal["conv3x3", "conv3x3-stride2"]  # full resolution, or half (24x24 at 48 px)
    blocks: tuple[int, ...]  # bottleneck layers per dense block
    growth: int  # k: channels each layer adds
    compression: float = 0.5  # a transition keeps this share of the channels
    normalisation: Normalisation = UNIT_RANGE
    imagenet_weights: bool = False

    @property
    def stem_filters(self) -> int:
        return 2 * self.growth  # DenseNet-BC's choice

    def build(self, size: int, weights: str | None = None) -> keras.Model:
        """Random weights; `weights` is accepted for symmetry and must be None."""
        if weights is not None:
            raise ValueError(f"a small-image DenseNet has no pretrained backbone weights ({weights})")
        inputs = keras.Input((size, size, self.normalisation.channels), name="input")
        x = keras.layers.Conv2D(
            self.stem_filters,
            3,
            strides=2 if self.stem == "conv3x3-stride2" else 1,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            name="stem_conv",
        )(inputs)
        for index, layers in enumerate(self.blocks, start=1):
            x = self._dense_block(x, layers, f"block{index}")
            if index < len(self.blocks):
                x = self._transition(x, f"transition{index}")
        x = keras.layers.BatchNormalization(epsilon=_BN_EPSILON, name="final_bn")(x)
        x = keras.layers.ReLU(name="final_relu")(x)
        return keras.Model(inputs, x, name="small_densenet")

    def _dense_block(self, x: keras.KerasTensor, layers: int, name: str) -> keras.KerasTensor:
        for index in range(1, layers + 1):
            prefix = f"{name}_layer{index}"
            y = _bn_relu_conv(x, 4 * self.growth, 1, f"{prefix}_1")
            y = _bn_relu_conv(y, self.growth, 3, f"{prefix}_2")
            x = keras.layers.Concatenate(name=f"{prefix}_concat")([x, y])
        return x

    def _transition(self, x: keras.KerasTensor, name: str) -> keras.KerasTensor:
        filters = int(x.shape[-1] * self.compression)
        x = _bn_relu_conv(x, filters, 1, name)
        return keras.layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)


def _bn_relu_conv(x: keras.KerasTensor, filters: int, kernel: int, name: str) -> keras.KerasTensor:
    x = keras.layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return keras.layers.Conv2D(
        filters, kernel, padding="same", use_bias=False, kernel_initializer="he_normal", name=f"{name}_conv"
    )(x)


Backbone = KerasDenseNet | SmallDenseNet

# The one table. docs/training.md lists each entry's parameters and compute at 48 px
# (bench/bench_backbones.py prints them).
BACKBONES: dict[str, Backbone] = {
    "densenet121": KerasDenseNet("DenseNet121"),
    "densenet169": KerasDenseNet("DenseNet169"),
    "densenet201": KerasDenseNet("DenseNet201"),
    # Three short blocks (24x24, 12x12, 6x6 at 48 px): on real FER2013 on a 2-core CPU it
    # trained ~165-200 images/s where densenet121 trained ~42, so a 2-hour budget holds ~40
    # epochs rather than ~10 (docs/training.md: bench/bench_layouts.py and the run).
    "densenet-bc-cpu": SmallDenseNet("conv3x3-stride2", blocks=(4, 6, 8), growth=16),
    # densenet121's block sizes at k=24 from full resolution (48x48 in the first block):
    # ~9x densenet121's multiply-adds at 48 px, for a GPU
    "densenet-bc-gpu": SmallDenseNet("conv3x3", blocks=(6, 12, 24, 16), growth=24),
}
