"""A phase stopped inside an epoch resumes after the last batch its backup holds, and ends
where an uninterrupted run ends (ferflow.training.backup, ferflow.training.train.EpochBatches)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ferflow.training.backup import EpochBackup, ResumePoint, fit_resuming, merge_running, resumable_fit
from ferflow.training.monitors import EpochProgress
from ferflow.training.train import EpochBatches

ROWS, BATCH, EPOCHS = 64, 8, 3  # 8 batches an epoch


class Stop(Exception):
    """The simulated kill."""


class Watch(keras.callbacks.Callback):
    """Records epoch logs and the batches each epoch ran; raises Stop after a given batch."""

    def __init__(self, stop_at: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.stop_at, self.epoch = stop_at, -1
        self.logs: dict[int, dict[str, float]] = {}
        self.batches: dict[int, int] = {}

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.batches[self.epoch] = self.batches.get(self.epoch, 0) + 1
        if self.stop_at == (self.epoch, batch):
            raise Stop

    def on_epoch_end(self, epoch, logs=None):
        self.logs[epoch] = {k: float(v) for k, v in (logs or {}).items()}


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, 4)).astype("float32")
    labels = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0).astype(int)
    return x, np.eye(7, dtype="float32")[labels]


def _model(initial=None):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(7, activation="softmax")])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    if initial is not None:
        model.set_weights(initial)
    return model


def _train(model, backup_dir, every_s, watch):
    x, y = _data()
    with resumable_fit(model, backup_dir, every_s) as (backup, start):
        history = fit_resuming(
            model,
            start,
            lambda epoch, skip: {"x": EpochBatches((x, y), BATCH, 3, epoch, skip), "shuffle": False},
            EPOCHS,
            [backup, watch],
        )
    return start, history


def test_a_run_stopped_mid_epoch_resumes_after_its_last_backed_up_batch_and_ends_as_if_never_stopped(
    tmp_path,
):
    # given an uninterrupted run
    reference = _model()
    initial = reference.get_weights()
    whole = Watch()
    _train(reference, tmp_path / "whole", None, whole)
    # when the same run, backing up before every batch, is stopped in batch 5 of epoch 2
    stopped = Watch(stop_at=(1, 4))
    with pytest.raises(Stop):
        _train(_model(initial), tmp_path / "cut", 1e-9, stopped)
    # and run again in a new model
    resumed_watch = Watch()
    start, history = _train(_model(), tmp_path / "cut", 1e-9, resumed_watch)
    resumed_model = resumed_watch.model
    # then it continued after batch 4 of epoch 2 (the last backed up): 4 batches left of
    # it, then epoch 3 whole
    assert (start.epoch, start.batch) == (1, 4)
    assert resumed_watch.batches == {1: 4, 2: 8}
    # with the epoch's loss and accuracy over all 8 batches, as the uninterrupted run had them
    for key in ("loss", "accuracy"):
        assert resumed_watch.logs[1][key] == pytest.approx(whole.logs[1][key], rel=1e-5)
        assert resumed_watch.logs[2][key] == pytest.approx(whole.logs[2][key], rel=1e-5)
    assert len(history["loss"]) == 2
    # and the same weights: every row once per epoch, in the same order
    for a, b in zip(reference.get_weights(), resumed_model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_stop_requested_in_the_resumed_epoch_ends_the_phase_there(tmp_path):
    # given a backup 4 batches into epoch 2
    class StopTraining(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    with pytest.raises(Stop):
        _train(_model(), tmp_path, 1e-9, Watch(stop_at=(1, 4)))
    x, y = _data()
    model, watch = _model(), Watch()
    # when the resumed epoch's callbacks stop training (a time budget, a NaN guard)
    with resumable_fit(model, tmp_path, None) as (backup, start):
        fit_resuming(
            model,
            start,
            lambda epoch, skip: {"x": EpochBatches((x, y), BATCH, 3, epoch, skip), "shuffle": False},
            EPOCHS,
            [backup, StopTraining(), watch],
        )
    # then the epochs after it do not run
    assert list(watch.logs) == [1]


def test_backups_inside_an_epoch_follow_the_clock_and_keep_the_running_means(tmp_path):
    # given a backup every 10 s, on a clock that moves 4 s per batch
    now = [0.0]

    class Tick(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            now[0] += 4
            losses.append(float(logs["loss"]))

    losses: list[float] = []
    x, y = _data()
    model = _model()
    backup = EpochBackup(tmp_path, every_s=10, clock=lambda: now[0])
    # when the first epoch is stopped after its last batch, before the epoch's own backup
    with pytest.raises(Stop):
        fit_resuming(
            model,
            ResumePoint(),
            lambda epoch, skip: {"x": EpochBatches((x, y), BATCH, 3, epoch, skip), "shuffle": False},
            EPOCHS,
            [backup, Tick(), Watch(stop_at=(0, 7))],
        )
    backup.close()
    # then the last backup was taken before batch 7 (24 s; the one before at 12 s), with the
    # running loss of the 6 batches before it
    restored = EpochBackup(tmp_path).restore(_model())
    assert (restored.epoch, restored.batch) == (0, 6)
    assert restored.running["loss"] == pytest.approx(losses[5], rel=1e-5)
    assert 0.0 <= restored.running["accuracy"] <= 1.0


def test_running_means_merge_the_batches_before_and_after_a_resume():
    point = ResumePoint(2, 6, {"loss": 1.0, "accuracy": 0.5})
    merged = merge_running(point, 2, {"loss": 2.0, "accuracy": 1.0})
    assert merged == {"loss": pytest.approx(1.25), "accuracy": pytest.approx(0.625)}
    assert merge_running(ResumePoint(), 3, {"loss": 2.0}) == {"loss": 2.0}


def test_the_progress_line_of_a_resumed_epoch_counts_from_its_first_batch(caplog):
    # given the progress of an epoch resumed after 5 of its 8 batches, on a hand-moved clock
    now = [0.0]
    progress = EpochProgress("finetune", 0, batch_size=8, clock=lambda: now[0])
    progress.resumed_from = ResumePoint(1, 5)
    progress.set_params({"steps": 3, "epochs": 3})
    progress.on_epoch_begin(1)
    # when the first batch after the resume ends 60 s later (no terminal: a log line)
    now[0] = 60.0
    with caplog.at_level("INFO", logger="ferflow.training.monitors"):
        progress.on_train_batch_end(0, {"loss": 1.0})
    # then the line counts the epoch's batches, and the ETA is of the 2 left at this rate
    assert "finetune epoch 2/3: batch 6/8" in caplog.text
    assert "epoch ETA 2m 00s" in caplog.text
