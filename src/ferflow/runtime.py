"""How training runs on this machine: seeds and determinism, precision, XLA, devices.

Call `configure_runtime(params)` before any model is built. Keras 3 APIs only, with the
few backend-specific switches (TensorFlow op determinism, the JAX compilation cache,
multi-GPU strategies) kept here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import keras

from ferflow.config import Params

log = logging.getLogger(__name__)


def configure_runtime(params: Params) -> None:
    """Seeds, op determinism and the precision policy, before any model is built.

    Determinism costs speed: TensorFlow then picks deterministic (often slower) kernels.
    """
    train = params.train
    if train.deterministic:
        keras.utils.set_random_seed(params.base.seed)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf  # only on this backend, only here

            tf.config.experimental.enable_op_determinism()
    configure_compilation_cache(train.compilation_cache)
    if train.mixed_precision:
        policy = "mixed_bfloat16" if keras.backend.backend() == "jax" else "mixed_float16"
        keras.mixed_precision.set_global_policy(policy)
    else:
        keras.mixed_precision.set_global_policy("float32")


def resolve_jit_compile(setting: bool | str) -> bool:
    """`train.jit_compile` for `compile`: `auto` is XLA on JAX only.

    On JAX, `jit_compile=False` makes Keras run the train step eagerly, every op its own
    small jitted call (measured on the CPU: hundreds of op compilations and no cacheable
    step). TensorFlow's CPU ran the DenseNet slower under XLA (16 vs 44 images/s), and
    PyTorch's eager mode is its normal one.
    """
    if setting == "auto":
        return keras.backend.backend() == "jax"
    return bool(setting)


COMPILATION_CACHE_ENV = "FERFLOW_COMPILATION_CACHE"


def configure_compilation_cache(folder: str | None) -> Path | None:
    """On JAX, keep compiled XLA programs in `folder` (or $FERFLOW_COMPILATION_CACHE) across
    processes: a GPU worker with the folder on a volume compiles the DenseNet train step
    once, not at every scheduled run. A no-op on the other backends (TensorFlow and
    PyTorch have no persistent cache of their compiled steps here)."""
    folder = os.environ.get(COMPILATION_CACHE_ENV) or folder
    if not folder or keras.backend.backend() != "jax":
        return None
    import jax

    path = Path(folder).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)  # the big steps only
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    log.info("JAX compilation cache: %s", path)
    return path


def distribution_scope() -> contextlib.AbstractContextManager[Any]:
    """Data parallelism over all visible GPUs, chosen by the Keras backend; a no-op on one."""
    backend = keras.backend.backend()
    if backend == "jax":
        gpus = keras.distribution.list_devices("gpu")
        if len(gpus) > 1:
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=gpus))
    elif backend == "tensorflow":
        import tensorflow as tf

        if len(tf.config.list_logical_devices("GPU")) > 1:
            return tf.distribute.MirroredStrategy().scope()
    return contextlib.nullcontext()
