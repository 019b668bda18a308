"""Promotion as gather -> decide -> publish (ferflow.stages.registration), on an in-memory
registry: the gate sees the champion as it is inside the lock, the decision is tagged
before any alias moves, and nothing is published by a process that lost the lock."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import numpy as np
import pytest

from ferflow.stages import registration
from ferflow.stages.registration import Candidate
from ferflow.tracking.lock import LockLostError
from tests.conftest import small_params

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def metrics(macro_f1: float) -> dict:
    per_class = {name: {"recall": 0.5, "support": 10} for name in CLASSES}
    return {"accuracy": 0.6, "macro_f1": macro_f1, "weighted_f1": macro_f1, "per_class": per_class}


class MemoryRegistry:
    """The part of `Registry` the decision uses; `moves_on_lock`: another process promotes
    this version while this one waits for the lock; `lost`: the lock was taken over."""

    def __init__(self, champion: str | None, moves_on_lock: str | None = None, lost: bool = False):
        self.name = "fer-test"
        self.session = SimpleNamespace(uri="sqlite:///unused.db")
        self.champion, self.moves_on_lock, self.lost = champion, moves_on_lock, lost
        self.published: list[tuple] = []

    def alias(self, alias):
        return self.champion if alias == "champion" else None

    @contextlib.contextmanager
    def locked(self):
        if self.moves_on_lock:
            self.champion = self.moves_on_lock

        def confirm():
            if self.lost:
                raise LockLostError("taken over")

        yield SimpleNamespace(confirm=confirm)

    def tag_decision(self, version, run_id, decision):
        self.published.append(("tags", version, decision["decision"]))

    def move_aliases(self, version, promoted):
        self.published.append(("aliases", version, promoted))


@pytest.fixture
def champions(monkeypatch):
    """Each version's macro F1 when evaluated; records which versions were evaluated."""
    scores, evaluated = {"2": 0.40, "3": 0.55}, []

    def evaluate_version(params, registry, version, images, labels):
        evaluated.append(version)
        return None if version is None else metrics(scores[version])

    monkeypatch.setattr(registration, "_evaluate_version", evaluate_version)
    return evaluated


TEST = (np.zeros((4, 8, 8), np.float32), np.zeros(4, np.int64))


def decide(registry, challenger_f1=0.50, smoke=None):
    candidate = Candidate("4", "run-4", metrics(challenger_f1), smoke)
    return registration._decide_and_publish(small_params(), registry, candidate, TEST)


def test_a_better_challenger_is_tagged_then_promoted(champions):
    registry = MemoryRegistry(champion="2")

    decision = decide(registry)

    assert decision["decision"] == "promoted" and decision["champion"]["version"] == "2"
    assert registry.published == [("tags", "4", "promoted"), ("aliases", "4", True)]
    assert champions == ["2"]  # evaluated once: it did not move


def test_the_gate_judges_the_champion_found_inside_the_lock(champions):
    # given a champion that moves to a stronger version while this run waits for the lock
    registry = MemoryRegistry(champion="2", moves_on_lock="3")

    decision = decide(registry, challenger_f1=0.50)

    # then the new champion is evaluated and compared: 0.50 does not beat 0.55
    assert champions == ["2", "3"]
    assert decision["decision"] == "not-promoted" and decision["champion"]["version"] == "3"
    assert registry.published == [("tags", "4", "not-promoted"), ("aliases", "4", False)]


def test_a_failed_smoke_test_is_not_promoted_over_no_champion(champions):
    registry = MemoryRegistry(champion=None)

    decision = decide(registry, challenger_f1=0.9, smoke="predicts differently")

    assert decision["decision"] == "not-promoted" and "smoke test failed" in decision["reason"]
    assert registry.published == [("tags", "4", "not-promoted"), ("aliases", "4", False)]


def test_a_process_that_lost_the_lock_publishes_nothing(champions):
    registry = MemoryRegistry(champion="2", lost=True)

    with pytest.raises(LockLostError):
        decide(registry)

    assert registry.published == []
