"""The wall-clock guard of a time-boxed phase 2, and the JAX compilation cache switch."""

from __future__ import annotations

import time
from types import SimpleNamespace

import keras

from ferflow.callbacks import TimeBudget
from ferflow.runtime import configure_compilation_cache


def run_epochs(budget: TimeBudget, seconds: list[float]) -> int:
    """Drive the callback through epochs of the given lengths; return how many ran."""
    model = SimpleNamespace(stop_training=False)
    budget.set_model(model)
    budget.on_train_begin()
    for epoch, length in enumerate(seconds):
        budget.on_epoch_begin(epoch)
        time.sleep(length)
        budget.on_epoch_end(epoch)
        if model.stop_training:
            return epoch + 1
    return len(seconds)


def test_training_stops_before_an_epoch_that_would_overrun_the_budget():
    # 0.1 s epochs in a 0.35 s budget: after 3 epochs (0.3 s) a 4th would end at 0.4 s
    assert run_epochs(TimeBudget(0.35), [0.1] * 10) == 3


def test_a_budget_that_fits_every_epoch_never_stops_training():
    assert run_epochs(TimeBudget(60.0), [0.01] * 5) == 5


def test_the_compilation_cache_is_a_jax_switch(tmp_path, monkeypatch):
    monkeypatch.setenv("FERFLOW_COMPILATION_CACHE", str(tmp_path / "xla"))

    configured = configure_compilation_cache(None)

    if keras.backend.backend() == "jax":
        assert configured == (tmp_path / "xla").resolve() and configured.is_dir()
    else:  # TensorFlow and PyTorch keep no persistent cache: nothing is created
        assert configured is None and not (tmp_path / "xla").exists()


def small_model() -> keras.Model:
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(3)(inputs))


def test_the_divergence_guard_stops_on_weights_that_are_not_finite():
    import numpy as np

    from ferflow.callbacks import DivergenceGuard

    model = small_model()
    guard = DivergenceGuard()
    guard.set_model(model)
    guard.on_epoch_end(0, {"loss": 1.9})  # healthy: nothing happens
    assert guard.problem is None and not getattr(model, "stop_training", False)
    kernel = model.layers[-1].kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))

    guard.on_epoch_end(1, {"loss": 1.8})  # the loss alone looks fine

    assert model.stop_training
    assert guard.problem.startswith("epoch 2: 1 weight tensors hold NaN or infinite values")


def test_the_divergence_guard_stops_on_an_exploding_loss():
    from ferflow.callbacks import DivergenceGuard

    model = small_model()
    guard = DivergenceGuard()
    guard.set_model(model)
    guard.on_epoch_end(0, {"loss": 2.0})
    guard.on_epoch_end(1, {"loss": 40.0})  # 20x: noisy but under the 50x factor
    assert guard.problem is None

    guard.on_epoch_end(2, {"loss": 3.6e8})

    assert guard.problem == "epoch 3: the loss exploded to 3.6e+08 (first epoch 2)"
    assert model.stop_training


def test_jit_compile_auto_means_xla_on_jax_only():
    from ferflow.runtime import resolve_jit_compile

    assert resolve_jit_compile("auto") is (keras.backend.backend() == "jax")
    assert resolve_jit_compile(True) is True and resolve_jit_compile(False) is False
