"""The two training phases: cached features, learning, divergence, resume, BatchNorm."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from ferflow.data.dataset import load_prepared
from ferflow.training.model import backbone_of
from ferflow.training.train import TrainingError, fine_tune, fit_head
from tests.model.conftest import tiny_params


def _splits(data_dir):
    data = load_prepared(data_dir)
    return data.split("train"), data.split("val")


def _head_weights(model):
    return [np.asarray(w) for w in model.weights if w.path.startswith(("head_dense", "classification"))]


@pytest.mark.slow  # trains through the DenseNet: minutes on a busy 2-core CPU
def test_cached_features_train_the_same_head_as_the_frozen_backbone(tmp_path, tiny_data, fresh_tiny_model):
    # given the same initial model, data and seed, dropout 0
    train, val = _splits(tiny_data)
    initial = fresh_tiny_model.get_weights()
    through = tiny_params("train.epochs=2", "train.cache_features=false")
    cached = tiny_params("train.epochs=2", "train.cache_features=true")
    # when phase 1 runs through the frozen backbone, then again on cached features
    records_through = fit_head(fresh_tiny_model, train, val, through, tmp_path / "a")
    weights_through = _head_weights(fresh_tiny_model)
    fresh_tiny_model.set_weights(initial)
    records_cached = fit_head(fresh_tiny_model, train, val, cached, tmp_path / "b")
    # then the losses and the trained head agree within float tolerance
    for a, b in zip(records_through, records_cached, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3)
    for a, b in zip(weights_through, _head_weights(fresh_tiny_model), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_same_seed_gives_the_same_metrics(tmp_path, tiny_data, fresh_tiny_model):
    # given the same initial weights and seed
    train, val = _splits(tiny_data)
    initial = fresh_tiny_model.get_weights()
    params = tiny_params("train.epochs=3", "runtime.deterministic=true")
    # when phase 1 runs twice
    first = fit_head(fresh_tiny_model, train, val, params, tmp_path / "a")
    fresh_tiny_model.set_weights(initial)
    second = fit_head(fresh_tiny_model, train, val, params, tmp_path / "b")
    # then every epoch's metrics are identical
    assert first == second


def test_diverging_loss_fails_phase_one(tmp_path, tiny_data, fresh_tiny_model):
    # given a learning rate so large that the head's weights overflow to NaN
    train, val = _splits(tiny_data)
    params = tiny_params("train.learning_rate=1.0e+30")
    # when phase 1 runs, then it raises instead of returning a broken head
    with pytest.raises(TrainingError, match="NaN or infinite"):
        fit_head(fresh_tiny_model, train, val, params, tmp_path / "backup")
    # and leaves no backup of the diverged weights for a rerun to resume from
    assert not (tmp_path / "backup").exists()


class _CrashAt(keras.callbacks.Callback):
    """Simulates a killed process at the start of one epoch; records the epochs begun and
    the optimizer's step counter when training began."""

    def __init__(self, crash_epoch: int | None) -> None:
        super().__init__()
        self.crash_epoch = crash_epoch
        self.begun: list[int] = []
        self.steps_at_start = -1

    def on_train_begin(self, logs=None):
        self.steps_at_start = int(self.model.optimizer.iterations)

    def on_epoch_begin(self, epoch, logs=None):
        self.begun.append(epoch)
        if epoch == self.crash_epoch:
            raise RuntimeError("simulated crash")


def test_interrupted_phase_resumes_at_its_last_epoch(tmp_path, tiny_data, fresh_tiny_model):
    # given a phase 1 run that crashed when epoch 2 began
    train, val = _splits(tiny_data)
    params = tiny_params("train.epochs=4", "train.early_stopping_patience=10")
    backup = tmp_path / "backup" / "head"
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_head(fresh_tiny_model, train, val, params, backup, [_CrashAt(2)])
    # when it is run again
    watcher = _CrashAt(None)
    records = fit_head(fresh_tiny_model, train, val, params, backup, [watcher])
    # then it continues at epoch 2 with the optimizer state of the first run's two epochs,
    # keeps the earlier epochs' metrics, and cleans up
    assert watcher.begun == [2, 3]
    assert watcher.steps_at_start == 2 * math.ceil(len(train[0]) / params.train.batch_size)
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert not backup.exists()


class _StopInBatch(keras.callbacks.Callback):
    def __init__(self, epoch: int, batch: int) -> None:
        super().__init__()
        self.at, self.epoch, self.batches = (epoch, batch), -1, {}

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.batches[self.epoch] = self.batches.get(self.epoch, 0) + 1
        if (self.epoch, batch) == self.at:
            raise RuntimeError("simulated crash")


def test_fine_tuning_stopped_mid_epoch_resumes_inside_that_epoch(tmp_path, tiny_data, fresh_tiny_model):
    # given phase 2 backing up before every batch, crashed in batch 4 of its second epoch
    train, val = _splits(tiny_data)
    params = tiny_params("finetune.epochs=3", "finetune.backup_every_s=1e-9")
    backup = tmp_path / "backup" / "tune"
    with pytest.raises(RuntimeError, match="simulated crash"):
        fine_tune(fresh_tiny_model, train, val, params, backup, 0, [_StopInBatch(1, 3)])
    # when it is run again
    watcher = _StopInBatch(-1, -1)
    records = fine_tune(fresh_tiny_model, train, val, params, backup, 0, [watcher])
    # then it trained the 3 batches it had not (of 11: 168 rows, batch 16), then epoch 3,
    # and reports all three epochs
    steps = math.ceil(len(train[0]) / params.train.batch_size)
    assert watcher.batches == {1: steps - 3, 2: steps}
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert all(math.isfinite(r["loss"]) for r in records)
    assert not backup.exists()


def test_a_backup_from_another_configuration_is_set_aside_and_the_phase_starts_afresh(
    tmp_path, tiny_data, fresh_tiny_model, caplog
):
    # given the backup of a phase 1 on cached features (the head's weights only), crashed
    train, val = _splits(tiny_data)
    backup = tmp_path / "backup" / "head"
    cached = tiny_params("train.epochs=3", "train.cache_features=true")
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_head(fresh_tiny_model, train, val, cached, backup, [_CrashAt(1)])
    # when phase 1 is rerun through the backbone (the whole model's weights)
    through = tiny_params("train.epochs=2", "train.cache_features=false")
    records = fit_head(fresh_tiny_model, train, val, through, backup)
    # then it did not resume from it: the backup was kept aside (named in the log), all
    # epochs ran afresh
    assert [r["epoch"] for r in records] == [0, 1]
    assert any(p.name.startswith("state.npz.mismatch-") for p in backup.parent.rglob("*"))
    assert "state.npz" in caplog.text and "another model" in caplog.text


@pytest.mark.slow  # trains through the DenseNet: minutes on a busy 2-core CPU
@pytest.mark.parametrize("train_batchnorm", [False, True])
def test_fine_tuning_moves_batchnorm_statistics_only_when_asked(
    tmp_path, tiny_data, fresh_tiny_model, train_batchnorm
):
    # given the tiny model and one BatchNorm layer of its backbone
    train, val = _splits(tiny_data)
    backbone = backbone_of(fresh_tiny_model)
    norm = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
    conv = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D))
    mean_before, kernel_before = np.asarray(norm.moving_mean), np.asarray(conv.kernel)
    # when phase 2 fine-tunes for one epoch, BatchNorm frozen (the study) or learning
    params = tiny_params(
        "finetune.epochs=1", "finetune.learning_rate=0.01", f"finetune.train_batchnorm={train_batchnorm}"
    )
    records = fine_tune(fresh_tiny_model, train, val, params, tmp_path / "backup", epoch_offset=5)
    # then the convolutions learned, and the moving statistics moved only with train_batchnorm
    assert not np.allclose(np.asarray(conv.kernel), kernel_before)
    moved = not np.allclose(np.asarray(norm.moving_mean), mean_before)
    assert moved == train_batchnorm
    assert [r["epoch"] for r in records] == [5]
    assert records[0]["phase"] == "finetune"
