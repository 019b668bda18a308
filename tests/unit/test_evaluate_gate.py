"""The promotion gate's decision and the model card, as pure functions (no server)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ferflow.config import FER_CLASSES
from ferflow.evaluation import model_card
from ferflow.evaluation.gate import check_floors, decide
from tests.conftest import small_params


def metrics(accuracy: float = 0.6, macro_f1: float = 0.5, recall: float = 0.5) -> dict:
    per_class = {
        c: {"precision": 0.5, "recall": recall, "f1": 0.5, "support": 10, "auc": 0.8} for c in FER_CLASSES
    }
    return {
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "weighted_f1": macro_f1,
        "macro_auc": 0.8,
        "n_test": 70,
        "per_class": per_class,
    }


def rules(*overrides: str):
    return small_params(*overrides).registry


def test_first_model_meeting_the_floors_is_promoted():
    verdict = decide(metrics(), None, rules("register.min_accuracy=0.5"))

    assert verdict.promoted
    assert "no champion" in verdict.reason


def test_a_model_under_a_floor_is_not_promoted_even_without_a_champion():
    verdict = decide(metrics(accuracy=0.4), None, rules("register.min_accuracy=0.5"))

    assert not verdict.promoted
    assert "register.min_accuracy" in verdict.reason


def test_one_class_under_the_recall_floor_blocks_promotion():
    low_disgust = metrics()
    low_disgust["per_class"]["disgust"]["recall"] = 0.1

    misses = check_floors(low_disgust, rules("register.min_class_recall=0.2"))

    assert misses == ["recall of disgust 0.1000 < register.min_class_recall 0.2"]


def test_a_challenger_must_beat_the_champion_by_the_margin():
    champion = metrics(macro_f1=0.50)

    barely = decide(metrics(macro_f1=0.505), champion, rules("register.margin=0.01"))
    clearly = decide(metrics(macro_f1=0.52), champion, rules("register.margin=0.01"))

    assert not barely.promoted
    assert clearly.promoted


def test_a_tie_with_the_champion_is_not_an_improvement():
    verdict = decide(metrics(macro_f1=0.5), metrics(macro_f1=0.5), rules())

    assert not verdict.promoted


def test_the_gate_compares_on_the_configured_metric():
    # better macro F1 but worse accuracy, judged on accuracy
    verdict = decide(
        metrics(accuracy=0.55, macro_f1=0.6),
        metrics(accuracy=0.6, macro_f1=0.5),
        rules("register.metric=accuracy"),
    )

    assert not verdict.promoted
    assert verdict.reason.startswith("accuracy")


def test_the_smoke_batch_holds_every_class_of_a_class_ordered_test_split():
    from ferflow.evaluation.gate import smoke_batch_indices

    labels = np.repeat(np.arange(7), 5)  # stored class by class, like ingest writes them

    rows = smoke_batch_indices(labels, 8)

    assert len(rows) == 8 and set(labels[rows]) == set(range(7))


def test_a_model_collapsed_to_one_class_fails_the_smoke_test():
    from ferflow.evaluation.gate import smoke_problem

    labels = np.arange(7)
    collapsed = np.tile(np.eye(7)[3], (7, 1))  # finite, right shape, always "happy"
    healthy = np.eye(7)[[0, 1, 2, 3, 4, 5, 3]]

    problem = smoke_problem("models:/m/1", collapsed, 7, 7, collapsed, labels)

    assert problem is not None and "predicts class 3 for all 7 smoke images" in problem
    assert smoke_problem("models:/m/1", healthy, 7, 7, healthy, labels) is None
    assert (
        smoke_problem("models:/m/1", collapsed, 7, 7, collapsed, np.zeros(7, int)) is None
    )  # one class shown


def test_a_failed_smoke_test_blocks_promotion():
    verdict = decide(metrics(), None, rules(), smoke_problem="returned shape (8, 5)")

    assert not verdict.promoted
    assert "smoke test failed" in verdict.reason


# --- model card ------------------------------------------------------------------------


def manifest() -> pd.DataFrame:
    labels = np.repeat(FER_CLASSES, 3)
    return pd.DataFrame({"label": labels, "split": np.tile(["train", "val", "test"], len(FER_CLASSES))})


def test_the_card_has_a_per_class_table_with_every_class():
    card = model_card.build_model_card(
        small_params(), metrics(), version="3", counts=model_card.split_counts(manifest())
    )

    for name in FER_CLASSES:
        assert f"| {name} |" in card
    assert "version 3" in card
    assert "not for decisions about people" in card.lower()


def test_the_card_lists_failed_validation_checks(tmp_path):
    # given: validation.json as ferflow.contract.validation writes it
    checks = [
        {"id": "blank_images", "description": "share of blank images", "severity": "warning",
         "success": False, "observed": 0.02, "examples": ["train/happy/1.jpg"]},
        {"id": "row_counts", "description": "rows per split", "severity": "error", "success": True},
        {"id": "drift", "description": "class shares", "severity": "off", "success": False},
    ]  # fmt: skip
    (tmp_path / "validation.json").write_text(json.dumps({"passed": True, "checks": checks}))

    card = model_card.build_model_card(
        small_params(), metrics(), validation=model_card.read_validation(tmp_path / "validation.json")
    )

    assert "blank_images (warning): share of blank images; observed 0.02; e.g. train/happy/1.jpg" in card
    assert "row_counts" not in card
    assert "drift" not in card


def test_an_unreadable_validation_report_is_skipped(tmp_path):
    (tmp_path / "validation.json").write_text("{not json")

    assert model_card.read_validation(tmp_path / "validation.json") is None


def test_the_summary_names_the_weakest_class():
    weak = metrics()
    weak["per_class"]["fear"]["recall"] = 0.2

    assert "weakest class fear" in model_card.card_summary(small_params(), weak)


def test_the_default_floors_refuse_a_chance_level_model():
    from ferflow.config import load_params
    from tests.conftest import PARAMS_FILE

    defaults = load_params(PARAMS_FILE).registry
    # FER2013 PublicTest: happy is 895 of 3,589 (24.9%); a model always answering "happy"
    supports = dict(zip(FER_CLASSES, (467, 56, 496, 895, 607, 653, 415), strict=True))
    one_class = metrics(accuracy=895 / 3589, macro_f1=0.057)
    for name, support in supports.items():
        one_class["per_class"][name]["support"] = support
    uniform_guess = metrics(accuracy=1 / 7, macro_f1=0.13)
    learned = metrics(accuracy=0.62, macro_f1=0.58)

    one_class_verdict = decide(one_class, None, defaults)
    assert not one_class_verdict.promoted
    assert "majority-class share 0.2494" in one_class_verdict.reason
    assert "register.min_macro_f1" in one_class_verdict.reason
    assert not decide(uniform_guess, None, defaults).promoted
    assert decide(learned, None, defaults).promoted
