"""Issue #23: without a terminal, training prints a progress line at least every 30 s."""

from __future__ import annotations

import logging

import pytest
from tqdm import tqdm

from ferflow.training.monitors import PROGRESS_LINE_S, EpochProgress


@pytest.fixture(autouse=True)
def no_terminal(monkeypatch):
    """The bar is off, as without a terminal, even under `pytest -s` in one."""
    monkeypatch.setattr("ferflow.training.monitors.bar", lambda **kwargs: tqdm(disable=True, **kwargs))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_30_seconds_with_images_per_second_and_eta(caplog):
    # given an epoch of 100 batches of 64 at 2 s a batch, and no terminal (pytest's capture)
    clock = Clock()
    progress = EpochProgress("finetune", epoch_offset=2, batch_size=64, clock=clock)
    progress.set_params({"steps": 100, "epochs": 10})
    caplog.set_level(logging.INFO, logger="ferflow.training.monitors")
    progress.on_epoch_begin(0)
    # when the 100 batches run
    for batch in range(100):
        clock.now += 2.0
        progress.on_train_batch_end(batch, {"loss": 1.5})
    progress.on_epoch_end(0)
    # then a line every 30 s: 200 s of batches gives 6 lines, the first after 15 batches
    lines = [r.getMessage() for r in caplog.records if r.name == "ferflow.training.monitors"]
    assert len(lines) == int(200 // PROGRESS_LINE_S) == 6
    assert lines[0] == "finetune epoch 3/12: batch 15/100, 32 images/s, loss 1.5000, epoch ETA 2m 50s"
    assert lines[-1].startswith("finetune epoch 3/12: batch 90/100, 32 images/s")


def test_a_short_epoch_prints_no_progress_line(caplog):
    clock = Clock()
    progress = EpochProgress("train", epoch_offset=0, clock=clock)
    progress.set_params({"steps": 10, "epochs": 1})
    caplog.set_level(logging.INFO, logger="ferflow.training.monitors")
    progress.on_epoch_begin(0)
    for batch in range(10):
        clock.now += 1.0
        progress.on_train_batch_end(batch, {})
    assert not [r for r in caplog.records if r.name == "ferflow.training.monitors"]


@pytest.mark.parametrize("steps", [None, 50])
def test_the_line_says_what_it_knows(steps):
    progress = EpochProgress("train", epoch_offset=0)
    progress.set_params({"steps": steps, "epochs": 1})
    progress.on_epoch_begin(0)
    line = progress._progress_line(5, 10.0, None)
    assert line.startswith("train epoch 1/1: batch 5")
    assert ("ETA" in line) == (steps is not None) and "images/s" not in line
