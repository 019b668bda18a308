"""How training runs on this machine: seeds and determinism, precision, XLA, devices.

Call `configure_runtime(params)` before any model is built. Keras 3 APIs only, with the
few backend-specific switches (TensorFlow op determinism, the JAX compilation cache,
multi-GPU strategies) kept here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras

from ferflow.config import Params, ParamsError

log = logging.getLogger(__name__)


def configure_runtime(params: Params) -> None:
    """Seeds, op determinism and the precision policy, before any model is built.

    Determinism costs speed: TensorFlow then picks deterministic (often slower) kernels.
    """
    runtime = params.runtime
    configure_xla_flags(runtime.xla_flags)
    if runtime.deterministic:
        keras.utils.set_random_seed(params.base.seed)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf  # only on this backend, only here

            tf.config.experimental.enable_op_determinism()
    configure_compilation_cache(runtime.compilation_cache)
    if runtime.mixed_precision:
        policy = "mixed_bfloat16" if keras.backend.backend() == "jax" else "mixed_float16"
        keras.mixed_precision.set_global_policy(policy)
    else:
        keras.mixed_precision.set_global_policy("float32")


def resolve_jit_compile(setting: bool | str) -> bool:
    """`runtime.jit_compile` for `compile`: `auto` is XLA on JAX only.

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


def configure_xla_flags(flags: str) -> str:
    """`runtime.xla_flags` into XLA_FLAGS, before JAX starts its backend (XLA reads them once).

    Flags the environment already holds come last, so an operator's XLA_FLAGS wins over the
    params. Returns the resulting XLA_FLAGS. On a backend that started already, or on
    TensorFlow and PyTorch, it only warns or does nothing.
    """
    current = os.environ.get("XLA_FLAGS", "")
    if not flags.strip() or keras.backend.backend() != "jax":
        return current
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        log.warning("runtime.xla_flags %r not applied: JAX started before the params were read", flags)
        return current
    combined = " ".join(part for part in (flags.strip(), current.strip()) if part)
    os.environ["XLA_FLAGS"] = combined
    log.info("XLA_FLAGS=%s", combined)
    return combined


def distribution_scope(mode: str = "auto") -> contextlib.AbstractContextManager[Any]:
    """Data parallelism for `runtime.data_parallel`: auto (all GPUs when there are several),
    all (every local device: GPUs, or the CPU devices XLA was asked for), off.

    On JAX, Keras' `DataParallel` replicates the weights on every device and splits each
    batch between them (the batch size must divide evenly; ferflow's batches are all full,
    ferflow.training.batching). On TensorFlow, a `MirroredStrategy` scope over the GPUs.
    """
    if mode == "off":
        return contextlib.nullcontext()
    backend = keras.backend.backend()
    if backend == "jax":
        devices = keras.distribution.list_devices()  # the accelerators, else the CPU devices
        if mode == "auto" and any(device.lower().startswith("cpu") for device in devices):
            devices = []  # auto means GPUs (asking for "gpu" on a CPU-only JAX raises)
        if len(devices) > 1:
            log.info("data-parallel over %d devices", len(devices))
            return _distributed(keras.distribution.DataParallel(devices=devices))
    elif backend == "tensorflow":
        import tensorflow as tf

        if len(tf.config.list_logical_devices("GPU")) > 1:
            return tf.distribute.MirroredStrategy().scope()
    return contextlib.nullcontext()


@contextlib.contextmanager
def _distributed(distribution: Any) -> Iterator[None]:
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(distribution)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


def check_data_parallel_batch(batch_size: int) -> None:
    """A data-parallel batch splits evenly over the devices, or fails here in one line (a
    `ParamsError`, which the CLI prints as such)."""
    distribution = keras.distribution.distribution() if keras.backend.backend() == "jax" else None
    devices = distribution.device_mesh.devices.size if distribution is not None else 1
    if devices > 1 and batch_size % devices:
        raise ParamsError(
            f"train.batch_size={batch_size} does not split over {devices} devices (data-parallel): "
            f"use a multiple of {devices}, or runtime.data_parallel=off"
        )


@contextlib.contextmanager
def count_compiles() -> Iterator[Counter[str]]:
    """On JAX, how many times each function is compiled inside the block, by name
    (`jit(train_step)`, `jit(predict_step)`, ...), read from JAX's compile log (which is
    kept off the console meanwhile). Empty on the other backends."""
    counts: Counter[str] = Counter()
    if keras.backend.backend() != "jax":
        yield counts
        return
    import jax

    class _Counter(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith("Compiling "):
                counts[message.split()[1]] += 1

    source = logging.getLogger("jax")  # the compile log's lines come from its children
    handler, propagate, level = _Counter(), source.propagate, source.level
    source.addHandler(handler)
    source.propagate = False
    source.setLevel(logging.WARNING)
    try:
        with jax.log_compiles(True):
            yield counts
    finally:
        source.removeHandler(handler)
        source.propagate, source.level = propagate, level
