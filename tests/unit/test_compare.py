"""`ferflow compare`: two runs or model versions side by side.

The runs are logged directly with MlflowClient into a SQLite store under tmp_path, following
the MLflow naming conventions of docs/architecture.md (flattened params, `test.*` summary
metrics, `ferflow.*` tags, the `evaluation/confusion_matrix.json` artifact, the
`evaluation/per_class.json` table, registry aliases). One run is logged as runs were before
the per-class table: with `test.recall.<class>` metrics.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ferflow.cli import main
from ferflow.commands.models import compare
from ferflow.config import Params
from ferflow.evaluation.compare import (
    CompareError,
    Confusion,
    Format,
    Side,
    compare_sides,
    confusion_changes,
    is_count,
    parse_confusion,
    render,
)
from ferflow.evaluation.evaluate import per_class_table
from ferflow.files import PER_CLASS_ARTIFACT
from tests.conftest import small_params

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
MODEL_NAME = "fer-densenet169"


def conventional_metrics(accuracy: float) -> dict[str, float]:
    """The summary test and training metrics named as the conventions say."""
    return {
        "test.accuracy": accuracy,
        "test.macro_f1": accuracy - 0.05,
        "test.weighted_f1": accuracy - 0.02,
        "test.macro_auc": accuracy + 0.2,
        "train.best_val_accuracy": accuracy - 0.1,
        "finetune.best_val_accuracy": accuracy - 0.03,
    }


def per_class_rows(recalls: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """metrics.json's `per_class` for these recalls (precision and F1 derived, 10 images each)."""
    return {
        name: {"precision": recall / 2, "recall": recall, "f1": recall / 1.5, "auc": 0.9, "support": 10}
        for name, recall in recalls.items()
    }


def diagonal_confusion(correct: Mapping[str, int], per_class: int = 10) -> dict[str, Any]:
    """A confusion matrix where each class has `per_class` images, `correct[c]` right, the rest -> happy."""
    matrix = []
    for i, name in enumerate(CLASSES):
        row = [0] * len(CLASSES)
        row[i] = correct[name]
        row[CLASSES.index("happy")] += per_class - correct[name]
        matrix.append(row)
    return {"classes": list(CLASSES), "matrix": matrix}


def log_conventional_run(
    client: Any,
    experiment_id: str,
    run_name: str,
    params: Params,
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    confusion: dict[str, Any] | None,
    per_class: dict[str, dict[str, float]] | None = None,
) -> str:
    """A finished parent run as the pipeline logs it; returns its run id."""
    from mlflow.entities import Metric, Param, RunTag

    run = client.create_run(experiment_id, run_name=run_name)
    run_id = run.info.run_id
    from ferflow.tracking.store import PARAMS_ARTIFACT, logged_params, resolved_params

    client.log_batch(run_id, params=[Param(key, str(value)) for key, value in logged_params(params).items()])
    client.log_dict(run_id, resolved_params(params), PARAMS_ARTIFACT)
    client.log_batch(
        run_id,
        metrics=[Metric(key, value, 0, 0) for key, value in metrics.items()],
        tags=[RunTag(key, value) for key, value in tags.items()],
    )
    if confusion is not None:
        client.log_dict(run_id, confusion, "evaluation/confusion_matrix.json")
    if per_class is not None:
        client.log_table(run_id, per_class_table({"per_class": per_class}), PER_CLASS_ARTIFACT)
    client.set_terminated(run_id)
    return run_id


@dataclass(frozen=True)
class Store:
    params: Params  # tracking.tracking_uri points at the store
    baseline: str  # run ids
    tuned: str
    unevaluated: str
    legacy: str  # per-class recall as metrics, no table
    baseline_metrics: dict[str, float]
    tuned_metrics: dict[str, float]


BASELINE_RECALL = dict.fromkeys(CLASSES, 0.5) | {"disgust": 0.2}
TUNED_RECALL = dict.fromkeys(CLASSES, 0.6) | {"disgust": 0.7}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """Three runs (two differing only in train.learning_rate) and champion/challenger versions."""
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    params = small_params(f"tracking.tracking_uri={uri}")
    tuned_params = small_params(f"tracking.tracking_uri={uri}", "train.learning_rate=0.001")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment_id = client.create_experiment("ferflow", artifact_location=(root / "artifacts").as_uri())
        baseline_metrics = conventional_metrics(0.5)
        tuned_metrics = conventional_metrics(0.62)
        common_tags = {"ferflow.data_version": "abc123", "ferflow.params_digest": params.digest()}
        baseline = log_conventional_run(
            client,
            experiment_id,
            "20261130-0100-dataabc12345-p111111",
            params,
            baseline_metrics,
            common_tags | {"ferflow.gate.decision": "promoted", "ferflow.alias": "champion"},
            diagonal_confusion(dict.fromkeys(CLASSES, 5) | {"disgust": 2}),
            per_class_rows(BASELINE_RECALL),
        )
        tuned = log_conventional_run(
            client,
            experiment_id,
            "20261130-0200-dataabc12345-p222222",
            tuned_params,
            tuned_metrics,
            common_tags | {"ferflow.gate.decision": "not-promoted", "ferflow.alias": "challenger"},
            diagonal_confusion(dict.fromkeys(CLASSES, 6) | {"disgust": 7}),
            per_class_rows(TUNED_RECALL),
        )
        unevaluated = log_conventional_run(client, experiment_id, "no-eval", params, {}, {}, None)
        legacy_metrics = baseline_metrics | {f"test.recall.{c}": r for c, r in BASELINE_RECALL.items()}
        legacy = log_conventional_run(client, experiment_id, "legacy", params, legacy_metrics, {}, None)
        client.create_registered_model(MODEL_NAME, description="FER2013 DenseNet169")
        for run_id, alias in ((baseline, "champion"), (tuned, "challenger")):
            version = client.create_model_version(MODEL_NAME, f"runs:/{run_id}/model", run_id=run_id)
            client.set_registered_model_alias(MODEL_NAME, alias, version.version)
        yield Store(params, baseline, tuned, unevaluated, legacy, baseline_metrics, tuned_metrics)


@pytest.fixture
def no_env_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLFLOW_TRACKING_URI would win over the params' store: clear it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


pytestmark = pytest.mark.usefixtures("no_env_uri")


# --- two runs --------------------------------------------------------------------------


def test_runs_differing_in_one_param_show_exactly_that_param(store: Store) -> None:
    # given two runs whose params differ only in train.learning_rate
    # when they are compared
    result = compare(store.baseline, store.tuned, store.params)
    # then exactly that param is listed, with both values
    assert [(p.key, p.a, p.b) for p in result.changed_params] == [("train.learning_rate", "0.0001", "0.001")]


def test_metric_deltas_are_b_minus_a_of_the_logged_values(store: Store) -> None:
    # given two runs with known metrics
    # when compared
    result = compare(store.baseline, store.tuned, store.params)
    # then every logged metric appears with both values and delta = B - A
    by_key = {m.key: m for m in result.metrics}
    assert set(by_key) == set(store.baseline_metrics) | set(store.tuned_metrics)
    for key, a_value in store.baseline_metrics.items():
        b_value = store.tuned_metrics[key]
        assert by_key[key].a == pytest.approx(a_value)
        assert by_key[key].b == pytest.approx(b_value)
        assert by_key[key].delta == pytest.approx(b_value - a_value)


def test_per_class_recall_deltas_follow_class_order(store: Store) -> None:
    # given runs with per-class test recall
    # when compared
    result = compare(store.baseline, store.tuned, store.params)
    # then the recall section has one row per class, in base.classes order, with B - A
    assert [m.key for m in result.recall] == [f"test.recall.{c}" for c in CLASSES]
    deltas = {m.key.removeprefix("test.recall."): m.delta for m in result.recall}
    assert deltas == pytest.approx({c: TUNED_RECALL[c] - BASELINE_RECALL[c] for c in CLASSES})


def test_per_class_numbers_come_from_the_table_not_from_metrics(store: Store) -> None:
    # given runs whose per-class numbers are only in the evaluation/per_class.json table
    # when compared
    result = compare(store.baseline, store.tuned, store.params)
    # then no per-class metric is listed, and each side holds the table's rows
    assert not [m.key for m in result.metrics if m.key.startswith("test.recall.")]
    assert result.b.per_class["disgust"] == pytest.approx(per_class_rows(TUNED_RECALL)["disgust"])


def test_a_run_logged_before_the_table_compares_by_its_recall_metrics(store: Store) -> None:
    # given a run with test.recall.<class> metrics and no per-class table (older ferflow)
    # when compared with a run that has the table
    result = compare(store.legacy, store.tuned, store.params)
    # then the recall section still has every class, A from the metrics, B from the table
    assert result.a.per_class == {}
    deltas = {m.key.removeprefix("test.recall."): m.delta for m in result.recall}
    assert deltas == pytest.approx({c: TUNED_RECALL[c] - BASELINE_RECALL[c] for c in CLASSES})
    # and its per-class metrics stay out of the main metrics section
    assert not [m.key for m in result.summary_metrics if m.key.startswith("test.recall.")]


def test_confusion_changes_start_with_the_largest(store: Store) -> None:
    # given confusion matrices where disgust improved most (2/10 -> 7/10 correct)
    # when compared
    result = compare(store.baseline, store.tuned, store.params)
    # then the first changes are disgust's cells, by 50 points of the actual class
    first = result.confusion_changes[0]
    assert first.actual == "disgust"
    assert abs(first.share_delta) == pytest.approx(0.5)
    assert {(c.actual, c.predicted) for c in result.confusion_changes[:2]} == {
        ("disgust", "disgust"),
        ("disgust", "happy"),
    }


def test_a_run_without_evaluation_is_compared_with_a_note(store: Store) -> None:
    # given a run that has no confusion matrix artifact
    # when compared with an evaluated run
    result = compare(store.unevaluated, store.tuned, store.params)
    # then there are no confusion changes and a note says why
    assert result.confusion_changes == []
    assert any("confusion_matrix.json" in note and "A" in note for note in result.notes)


# --- references to the registry --------------------------------------------------------


def test_default_is_champion_versus_challenger(store: Store) -> None:
    # given a registered model with champion and challenger aliases
    # when compared without references
    result = compare(None, None, store.params)
    # then A is the champion's run and B the challenger's
    assert (result.a.run_id, result.b.run_id) == (store.baseline, store.tuned)
    assert "champion" in (result.a.model_version or "")


def test_after_a_promotion_the_default_is_the_previous_champion_versus_the_champion(store: Store) -> None:
    import mlflow

    # given a model whose challenger was promoted: champion and challenger on version 2
    uri = store.params.tracking.tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = "fer-promoted"
    client.create_registered_model(name)
    for run_id in (store.baseline, store.tuned):
        client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    params = small_params(f"tracking.tracking_uri={uri}", f"register.model_name={name}")
    client.set_registered_model_alias(name, "champion", "2")
    client.set_registered_model_alias(name, "challenger", "2")
    # when there is no previous champion, the one version is compared with itself, and said so
    alone = compare(None, None, params)
    assert alone.a.run_id == alone.b.run_id == store.tuned
    assert any("holds both aliases" in note for note in alone.notes)
    # when the promotion left a previous champion, A is that one: what the promotion changed
    client.set_registered_model_alias(name, "previous-champion", "1")
    result = compare(None, None, params)
    assert (result.a.run_id, result.b.run_id) == (store.baseline, store.tuned)
    assert "previous-champion" in result.a.reference
    assert result.notes[0].startswith("the challenger is the champion (promoted)")
    assert [m.key for m in result.summary_metrics if m.delta] != []


@pytest.mark.parametrize(
    "reference",
    [f"models:/{MODEL_NAME}/2", f"models:/{MODEL_NAME}@challenger", "challenger"],
)
def test_model_references_resolve_to_the_version_run(store: Store, reference: str) -> None:
    # given version 2 = the challenger = the tuned run
    # when referenced by version, alias URI or bare alias
    result = compare(store.baseline, reference, store.params)
    # then B is the tuned run
    assert result.b.run_id == store.tuned


@pytest.mark.parametrize(
    "reference",
    [
        "0123456789abcdef0123456789abcdef",
        "no-such-alias",
        f"models:/{MODEL_NAME}/99",
        "models:/no-such-model@champion",
    ],
)
def test_unknown_reference_is_a_clear_error(store: Store, reference: str) -> None:
    # given a reference that names nothing in the store
    # when compared
    # then a CompareError names it
    with pytest.raises(CompareError, match=re.escape(reference)):
        compare(store.baseline, reference, store.params)


# --- rendering and CLI -----------------------------------------------------------------


def test_markdown_has_a_table_row_for_the_changed_param(store: Store) -> None:
    # given two runs differing in train.learning_rate
    # when rendered as Markdown
    text = render(compare(store.baseline, store.tuned, store.params), "markdown")
    # then the params table has exactly that row
    assert "| train.learning_rate | 0.0001 | 0.001 |" in text
    param_rows = [row for row in text.splitlines() if row.startswith("| train.") and "best_val" not in row]
    assert param_rows == ["| train.learning_rate | 0.0001 | 0.001 |"]


def test_text_output_shows_accuracy_delta(store: Store) -> None:
    # given runs with test.accuracy 0.5 and 0.62
    # when rendered as text
    text = render(compare(store.baseline, store.tuned, store.params), "text")
    # then the accuracy row shows both values and the signed delta
    row = next(line for line in text.splitlines() if line.startswith("test.accuracy "))
    assert row.split() == ["test.accuracy", "0.5000", "0.6200", "+0.1200"]


def test_cli_json_matches_logged_metrics(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given the runs' store in the tracking URI
    # when `ferflow compare A B --format json` runs
    uri = store.params.tracking.tracking_uri
    status = main(
        ["compare", store.baseline, store.tuned, "--format", "json", "--set", f"tracking.tracking_uri={uri}"]
    )
    # then it exits 0 and the JSON deltas are the logged differences
    assert status == 0
    data = json.loads(capsys.readouterr().out)
    deltas = {m["key"]: m["delta"] for m in data["metrics"]}
    assert deltas["test.accuracy"] == pytest.approx(
        store.tuned_metrics["test.accuracy"] - store.baseline_metrics["test.accuracy"]
    )


def test_cli_unknown_alias_exits_2_with_one_line(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    # given an alias that is not set
    # when the CLI compares it
    uri = store.params.tracking.tracking_uri
    status = main(["compare", "nope", store.tuned, "--set", f"tracking.tracking_uri={uri}"])
    # then it exits 2 with one error line naming the alias
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and "'nope'" in err[0]


# --- pure parts ------------------------------------------------------------------------


def test_confusion_changes_compare_shares_not_counts() -> None:
    # given the same error rates on test sets of different sizes (10 vs 20 per class)
    small = Confusion(("a", "b"), ((8, 2), (1, 9)))
    large = Confusion(("a", "b"), ((16, 4), (2, 18)))
    # when compared
    changes, note = confusion_changes(small, large)
    # then no cell changed its share of the actual class, so none is listed
    assert note is None
    assert changes == []


def test_parse_confusion_rejects_a_non_square_matrix(tmp_path: Path) -> None:
    # given a confusion file whose matrix does not match its classes
    path = tmp_path / "confusion_matrix.json"
    path.write_text(json.dumps({"classes": ["a", "b"], "matrix": [[1, 2, 3], [4, 5, 6]]}))
    # when parsed
    # then the error names the file
    with pytest.raises(CompareError, match=r"confusion_matrix\.json"):
        parse_confusion(path)


def hand_side(reference: str, metrics: dict[str, float]) -> Side:
    return Side(reference, f"run-{reference}", reference, "1", None, {}, metrics, {})


def metric_cells(report: str, key: str) -> list[str]:
    """The A, B and B - A cells of one metric row, in text or Markdown."""
    (line,) = [row for row in report.splitlines() if re.match(rf"^\|? ?{re.escape(key)}[ |]", row)]
    return [cell for cell in re.split(r"\s*\|\s*|\s{2,}", line.strip(" |")) if cell][1:]


@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_counts_render_as_integers_and_rates_keep_four_decimals(fmt: Format) -> None:
    # given two runs whose epoch counts and test-set sizes differ (MLflow stores floats)
    a = hand_side(
        "A", {"train.epochs": 12.0, "finetune.epochs": 30.0, "n_test": 3589.0, "test.accuracy": 0.6}
    )
    b = hand_side(
        "B", {"train.epochs": 15.0, "finetune.epochs": 24.0, "n_test": 3589.0, "test.accuracy": 1.0}
    )
    # when rendered for people
    report = render(compare_sides(a, b, CLASSES), fmt)
    # then counts are whole numbers with an integer delta, and a rate of exactly 1 stays a rate
    assert metric_cells(report, "train.epochs") == ["12", "15", "+3"]
    assert metric_cells(report, "finetune.epochs") == ["30", "24", "-6"]
    assert metric_cells(report, "n_test") == ["3589", "3589", "+0"]
    assert metric_cells(report, "test.accuracy") == ["0.6000", "1.0000", "+0.4000"]
    assert "12.0000" not in report and "3589.0" not in report


def test_json_keeps_counts_as_numbers() -> None:
    a = hand_side("A", {"train.epochs": 12.0})
    b = hand_side("B", {"train.epochs": 15.0})

    (row,) = json.loads(render(compare_sides(a, b, CLASSES), "json"))["metrics"]

    assert row == {"key": "train.epochs", "a": 12.0, "b": 15.0, "delta": 3.0}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("train.epochs", True),
        ("finetune.epochs", True),
        ("n_test", True),
        ("test.n_test", True),
        ("test.support.happy", True),
        ("test.accuracy", False),
        ("train.best_val_loss", False),
        ("epochs_per_second", False),
        ("test.recall.happy", False),
    ],
)
def test_count_metrics_are_known_by_name(key: str, expected: bool) -> None:
    assert is_count(key) is expected


def test_a_fractional_count_keeps_its_decimals() -> None:
    # an average over runs is no longer a whole count: show it as measured
    report = render(
        compare_sides(hand_side("A", {"train.epochs": 12.5}), hand_side("B", {"train.epochs": 13.0}), CLASSES)
    )

    assert metric_cells(report, "train.epochs") == ["12.5000", "13", "+0.5000"]
