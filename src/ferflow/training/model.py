"""The study's DenseNet classifier (Figure 1), built with Keras 3 APIs only.

The model takes what the prepared dataset holds: a batch of grayscale images `(n, S, S)`
float32 in 0..255 (input named `pixels`). Everything else happens inside the model, so
serving never reimplements it:

    pixels (n, S, S) -> add channel -> resize to model.input_size
    -> the backbone's normalisation (ferflow.training.backbones): for the Keras-application DenseNets
       repeat to 3 channels and ImageNet "torch" (x/255 - mean) / std; for the small-image
       DenseNets the one channel scaled to [-1, 1] (a weightless Rescaling either way)
    -> DenseNet without top, called with training=False -> GlobalAveragePooling ("features")
    -> Dense 256 -> Dropout -> Dense 1024 -> Dropout -> Dense 512 -> Dropout
    -> Dense 7 softmax ("classification", float32 even under mixed precision)

With DenseNet169 at 48 px and the backbone frozen this is exactly the study's
13,860,679 parameters, 1,217,799 trainable.

`model.weights` is one of:

- `imagenet`: Keras downloads the backbone weights (needs internet or a filled Keras cache;
  only the Keras-application DenseNets have them);
- `none`: random initialisation;
- a path ending in `.weights.h5`: weights of the *whole* ferflow model, as written by
  `model.save_weights` (same backbone, input size and head);
- any other path (e.g. `densenet169_weights_tf_dim_ordering_tf_kernels_notop.h5`): backbone
  weights in the Keras-applications "notop" format, for machines without internet (Keras-
  application DenseNets only).
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import keras

from ferflow.config import Model as ModelParams
from ferflow.errors import FerflowError
from ferflow.training.backbones import BACKBONES, Backbone, KerasDenseNet

log = logging.getLogger(__name__)

INPUT_NAME = "pixels"
BACKBONE_NAME = "backbone"
FEATURES_NAME = "features"
OUTPUT_NAME = "classification"


class WeightsError(FerflowError, ValueError):
    """The requested weights cannot be fetched or do not fit the model."""


# Where keras.applications fetches the DenseNets' ImageNet "notop" files (keras/src/applications/
# densenet.py), and the route every message gives where they cannot be had.
IMAGENET_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/densenet/"
# Their md5 sums, as Keras checks them: a truncated file in the cache is fetched again here,
# before the run starts, not inside it.
IMAGENET_NOTOP_MD5 = {
    "DenseNet121": "30ee3e1110167f948a6b9946edeeb738",
    "DenseNet169": "b8c4d4c20dd625c148057b9ff1c1176b",
    "DenseNet201": "c13680b51ded0fb44dff2d8f86ac8bb1",
}
OFFLINE_ROUTE = (
    "without ImageNet weights, train from random weights with a from-scratch profile: "
    "ferflow train --params profiles/cpu.yaml, then ferflow finetune --params profiles/cpu.yaml "
    "(a 2-core CPU, under 2 hours; profiles/gpu.yaml on a GPU worker; docs/training.md)"
)


def ensure_imagenet_weights(
    model_params: ModelParams, timeout_s: float = 15.0, cache_dir: str | None = None
) -> Path | None:
    """The backbone's ImageNet file, from Keras' cache or downloaded into it now: called
    before a training run starts, so an offline machine fails in seconds with the route to
    take and no MLflow run. None when `model.weights` is not `imagenet`."""
    spec = BACKBONES[model_params.backbone]
    if model_params.weights != "imagenet" or not isinstance(spec, KerasDenseNet):
        return None  # a small-image DenseNet with imagenet is refused by build_model
    name = f"{spec.application.lower()}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)  # urlretrieve has no timeout of its own
    try:
        url, md5 = IMAGENET_WEIGHTS_URL + name, IMAGENET_NOTOP_MD5[spec.application]
        path = keras.utils.get_file(name, url, cache_subdir="models", cache_dir=cache_dir, file_hash=md5)
    except Exception as err:
        raise WeightsError(
            f"model.weights=imagenet: cannot fetch {name} ({err}); nothing was run. "
            f"{OFFLINE_ROUTE[0].upper()}{OFFLINE_ROUTE[1:]}. Or put that file in Keras' cache "
            "(~/.keras/models, or $KERAS_HOME/models) or set model.weights to its path"
        ) from err
    finally:
        socket.setdefaulttimeout(previous)
    return Path(path)


def build_model(
    model_params: ModelParams, image_size: int, num_classes: int = 7, seed: int | None = None
) -> keras.Model:
    """Build the full classifier with the backbone frozen (phase 1 state).

    Args:
        model_params: the `model` section of params.yaml.
        image_size: side S of the images the model receives (base.image_size).
        num_classes: size of the softmax.
        seed: if given, seeds Keras' global RNG first so weight initialisation is repeatable.
    """
    if seed is not None:
        keras.utils.set_random_seed(seed)
    weights = model_params.weights
    spec = BACKBONES[model_params.backbone]
    backbone_weights = _backbone_weights_argument(weights, model_params.backbone, spec)
    size = model_params.input_size

    pixels = keras.Input(shape=(image_size, image_size), dtype="float32", name=INPUT_NAME)
    x = keras.layers.Reshape((image_size, image_size, 1), name="add_channel")(pixels)
    if size != image_size:
        x = keras.layers.Resizing(size, size, interpolation="bilinear", name="resize")(x)
    if spec.normalisation.channels > 1:
        x = keras.layers.Concatenate(axis=-1, name="repeat_channels")([x] * spec.normalisation.channels)
    x = spec.normalisation.layer()(x)

    backbone = _build_backbone(model_params.backbone, spec, size, backbone_weights)
    backbone.trainable = False
    # training=False keeps BatchNorm in inference mode, also after unfreezing (phase 2).
    x = backbone(x, training=False)
    features = keras.layers.GlobalAveragePooling2D(name=FEATURES_NAME)(x)
    outputs = _apply(_head_layers(model_params, num_classes), features)
    model = keras.Model(pixels, outputs, name=f"ferflow_{model_params.backbone}")

    if Path(weights).name.endswith(".weights.h5") and weights not in ("imagenet", "none"):
        load_full_weights(model, Path(weights))
    return model


def _backbone_weights_argument(weights: str, name: str, spec: Backbone) -> str | None:
    """Translate model.weights into the `weights=` argument of the backbone's builder."""
    if weights == "none":
        return None
    if weights == "imagenet" and not spec.imagenet_weights:
        raise WeightsError(
            f"model.weights=imagenet: {name} is built for small images and has no ImageNet "
            "weights; set model.weights to none (random start) or a ferflow .weights.h5 file"
        )
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(
            f"model.weights: file {path} does not exist; give 'imagenet', 'none' or the path "
            "to a backbone .h5 file or a ferflow .weights.h5 file"
        )
    # A whole-model file is loaded after the model is built; the backbone starts random.
    if path.name.endswith(".weights.h5"):
        return None
    if not spec.imagenet_weights:
        raise WeightsError(
            f"model.weights={path}: {name} takes no Keras-applications backbone file; set "
            "model.weights to none or a ferflow .weights.h5 file (written by model.save_weights)"
        )
    return str(path)


def _build_backbone(name: str, spec: Backbone, size: int, weights: str | None) -> keras.Model:
    try:
        backbone = spec.build(size, weights)
    except Exception as err:
        if weights == "imagenet":
            raise WeightsError(
                f"model.weights=imagenet: cannot fetch the {name} ImageNet weights ({err}); "
                f"{OFFLINE_ROUTE}. Or put the Keras 'notop' .h5 file in ~/.keras/models or set "
                "model.weights to its path"
            ) from err
        raise WeightsError(
            f"model.weights={weights}: does not fit {name} at input size {size}: {err}; "
            f"give backbone weights saved for {name} without top"
        ) from err
    backbone.name = BACKBONE_NAME
    return backbone


def _head_layers(model_params: ModelParams, num_classes: int) -> list[keras.layers.Layer]:
    """The study's dense head: (Dense relu, Dropout)* then the softmax."""
    regularizer = keras.regularizers.L2(model_params.l2) if model_params.l2 > 0 else None
    layers: list[keras.layers.Layer] = []
    for index, (units, rate) in enumerate(
        zip(model_params.head_units, model_params.dropout, strict=True), start=1
    ):
        layers.append(
            keras.layers.Dense(
                units, activation="relu", kernel_regularizer=regularizer, name=f"head_dense_{index}"
            )
        )
        layers.append(keras.layers.Dropout(rate, name=f"head_dropout_{index}"))
    # float32 softmax: stable probabilities under a mixed-precision policy.
    layers.append(keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name=OUTPUT_NAME))
    return layers


def _apply(layers: list[keras.layers.Layer], x: Any) -> Any:
    for layer in layers:
        x = layer(x)
    return x


def backbone_of(model: keras.Model) -> keras.Model:
    """The DenseNet inside a ferflow model."""
    return model.get_layer(BACKBONE_NAME)


def set_backbone_trainable(
    model: keras.Model,
    trainable: bool,
    train_batchnorm: bool = False,
    batchnorm_momentum: float | None = None,
) -> None:
    """Freeze (phase 1) or unfreeze (phase 2) the backbone. Recompile afterwards.

    By default BatchNorm layers stay frozen when the backbone is unfrozen: in Keras 3 a
    functional model passes fit's `training=True` down to nested layers even where the graph
    was built with `training=False`, but a non-trainable BatchNormalization always runs in
    inference mode (keras-io transfer-learning guide), so its moving statistics never change.
    With `train_batchnorm` they train (batch statistics in training, moving averages with
    `batchnorm_momentum` for inference): what a randomly initialised backbone needs.
    """
    backbone = backbone_of(model)
    backbone.trainable = trainable
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = trainable and train_batchnorm
            if batchnorm_momentum is not None:
                layer.momentum = batchnorm_momentum


def feature_extractor(model: keras.Model) -> keras.Model:
    """pixels -> pooled backbone features (the GAP output); shares the model's layers."""
    return keras.Model(model.input, model.get_layer(FEATURES_NAME).output, name="feature_extractor")


def head_model(model: keras.Model) -> keras.Model:
    """features -> probabilities, built from the *same layer objects* as the full model.

    Training it on cached features trains the full model's head: the weights are shared.
    """
    names = [layer.name for layer in model.layers]
    start = names.index(FEATURES_NAME) + 1
    width = model.get_layer(FEATURES_NAME).output.shape[-1]
    features = keras.Input(shape=(width,), name="features_in")
    return keras.Model(features, _apply(model.layers[start:], features), name="head")


def load_full_weights(model: keras.Model, path: Path) -> None:
    """Load a whole-model `.weights.h5` file, with a clear error when it does not fit."""
    if not path.is_file():
        raise WeightsError(f"model.weights: file {path} does not exist")
    try:
        model.load_weights(path)
    except Exception as err:
        raise WeightsError(
            f"model.weights={path}: does not fit this model ({err}); it must come from "
            "model.save_weights of a ferflow model with the same backbone, input size and head"
        ) from err


def load_model(path: str | Path) -> keras.Model:
    """Load a saved ferflow model (head.keras or model.keras)."""
    path = Path(path)
    if not path.is_file():
        raise FerflowError(f"model file {path} does not exist; run `ferflow train` first")
    return keras.saving.load_model(path, compile=False)
