"""Evaluation: metrics, report files and plots on a tiny model with a known answer.

The helpers at the top (`centre_model`, `write_constant_dataset`) are shared with the
registry and predict tests: the dataset's images are flat grey squares whose brightness
encodes the class, and `centre_model` classifies by mean brightness with hand-set weights,
so its accuracy is known by construction (perfect, or wrong on chosen classes), with no
training and in milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ferflow import files
from ferflow.config import FER_CLASSES
from ferflow.data.dataset import MANIFEST_COLUMNS, write_prepared
from ferflow.errors import FerflowError
from ferflow.evaluation import evaluate as ev
from ferflow.stages import Layout
from ferflow.stages.evaluation import evaluate
from ferflow.stages.layout import read_history
from tests.conftest import small_params

SIZE = 48
CENTRES = tuple(20.0 + 32.0 * i for i in range(len(FER_CLASSES)))  # brightness of class i


def centre_model(centres: tuple[float, ...] = CENTRES, path: Path | None = None):
    """A Keras model with the pipeline's contract ((n,48,48) 0..255 -> (n,7) softmax).

    It scores class j by -(mean - centres[j])^2 / 50, written as a Dense layer on the
    image mean (the mean^2 term is the same for every class and cancels in the softmax).
    Give two classes swapped centres and it confuses exactly those two.
    """
    import keras

    pixels = keras.Input((SIZE, SIZE), name="pixels")
    x = keras.layers.Reshape((SIZE, SIZE, 1))(pixels)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(centres), activation="softmax")(x)
    model = keras.Model(pixels, outputs)
    scale = 1 / 50
    c = np.asarray(centres, dtype=np.float32)
    model.layers[-1].set_weights([(scale * 2 * c)[None, :], -scale * c**2])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
    return model


def constant_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Flat grey squares at the class brightness, with a little noise."""
    rng = np.random.default_rng(seed)
    base = np.asarray(CENTRES)[labels][:, None, None]
    noise = rng.integers(-4, 5, size=(len(labels), SIZE, SIZE))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_constant_dataset(out_dir: Path, per_class: dict[str, int] | None = None) -> Path:
    """A prepared dataset (train/val/test) of constant images; `per_class` test counts."""
    per_class = dict.fromkeys(FER_CLASSES, 3) if per_class is None else per_class
    rows, labels = [], []
    for split, counts in (
        ("train", dict.fromkeys(FER_CLASSES, 2)),
        ("val", dict.fromkeys(FER_CLASSES, 1)),
        ("test", per_class),
    ):
        for name, count in counts.items():
            for i in range(count):
                index = FER_CLASSES.index(name)
                labels.append(index)
                rows.append(
                    {
                        "id": f"{split}/{name}/{i}.png",
                        "source": f"{split}/{name}/{i}.png",
                        "split": split,
                        "label": name,
                        "label_index": index,
                        "sha256": f"{len(rows):064x}",
                        "width": SIZE,
                        "height": SIZE,
                        "mode": "L",
                        "converted": False,
                        "mean": 0.0,
                        "std": 0.0,
                    }
                )
    images = constant_images(np.asarray(labels))
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    write_prepared(out_dir, images, manifest, {"classes": list(FER_CLASSES)})
    return out_dir


def history_records(head_epochs: int = 3, finetune_epochs: int = 2) -> list[dict[str, Any]]:
    """Records as training stores them: the 0-based global epoch of both phases."""
    return [
        {
            "epoch": e,
            "phase": "train" if e < head_epochs else "finetune",
            "loss": 2.0 - 0.1 * e,
            "accuracy": 0.3 + 0.05 * e,
            "val_loss": 2.1 - 0.08 * e,
            "val_accuracy": 0.28 + 0.04 * e,
        }
        for e in range(head_epochs + finetune_epochs)
    ]


def write_history(model_dir: Path, head_epochs: int = 3, finetune_epochs: int = 2) -> None:
    records = history_records(head_epochs, finetune_epochs)
    (model_dir / "history.json").write_text(json.dumps({"epochs": records}))


def one_hot(labels: np.ndarray, k: int = 7) -> np.ndarray:
    return np.eye(k)[labels]


# --- metrics ---------------------------------------------------------------------------


def test_perfect_predictions_score_one_everywhere():
    labels = np.repeat(np.arange(7), 3)

    metrics = ev.compute_metrics(labels, one_hot(labels), FER_CLASSES)

    assert metrics["accuracy"] == 1.0
    assert metrics["macro_f1"] == 1.0
    assert metrics["macro_auc"] == 1.0
    assert {name: row["support"] for name, row in metrics["per_class"].items()} == dict.fromkeys(
        FER_CLASSES, 3
    )


def test_a_confused_class_shows_in_its_recall_and_the_other_precision():
    # given: every "angry" image predicted as "disgust"
    labels = np.repeat(np.arange(7), 4)
    predicted = np.where(labels == 0, 1, labels)

    metrics = ev.compute_metrics(labels, one_hot(predicted), FER_CLASSES)

    assert metrics["per_class"]["angry"]["recall"] == 0.0
    assert metrics["per_class"]["disgust"]["precision"] == pytest.approx(4 / 8)
    assert metrics["accuracy"] == pytest.approx(np.mean(predicted == labels))


def test_a_class_absent_from_the_test_split_has_no_auc():
    labels = np.repeat(np.arange(1, 7), 2)  # no "angry"

    metrics = ev.compute_metrics(labels, one_hot(labels), FER_CLASSES)

    assert "auc" not in metrics["per_class"]["angry"]
    table = ev.per_class_table(metrics)
    aucs = dict(zip(table["class"], table["auc"], strict=True))
    assert aucs["angry"] is None
    assert aucs["happy"] == pytest.approx(1.0)


def test_flat_names_are_the_four_summary_metrics_only():
    # given metrics of 7 classes
    labels = np.repeat(np.arange(7), 2)
    # when named for MLflow
    flat = ev.flat_metric_names(ev.compute_metrics(labels, one_hot(labels), FER_CLASSES))
    # then only the headline scalars are metrics (per-class ones would be 35 charts)
    assert set(flat) == {"test.accuracy", "test.macro_f1", "test.weighted_f1", "test.macro_auc"}


def test_the_per_class_table_has_one_row_per_class_in_class_order():
    # given metrics of 7 classes where one sad image is called happy
    labels = np.repeat(np.arange(7), 2)
    probs = one_hot(labels)
    probs[FER_CLASSES.index("sad") * 2] = one_hot(np.array([FER_CLASSES.index("happy")]), 7)[0]
    metrics = ev.compute_metrics(labels, probs, FER_CLASSES)
    # when turned into the table MLflow logs
    table = ev.per_class_table(metrics)
    # then its columns are the per-class numbers, rows in class order
    assert tuple(table) == ev.PER_CLASS_COLUMNS
    assert table["class"] == list(FER_CLASSES)
    rows = {row[0]: dict(zip(table, row, strict=True)) for row in zip(*table.values(), strict=True)}
    assert rows["sad"]["recall"] == pytest.approx(0.5)
    assert rows["happy"]["precision"] == pytest.approx(2 / 3)
    assert rows["sad"]["support"] == 2


def test_tta_flip_averages_the_image_and_its_mirror():
    # given: a "model" that is sure of class 0 when the left half is brighter, else class 1
    def left_or_right(batch: np.ndarray) -> np.ndarray:
        left = batch[:, :, : SIZE // 2].mean(axis=(1, 2)) > batch[:, :, SIZE // 2 :].mean(axis=(1, 2))
        return one_hot(np.where(left, 0, 1))

    images = np.zeros((2, SIZE, SIZE), np.uint8)
    images[:, :, :10] = 200

    plain = ev.predict_probabilities(left_or_right, images, batch_size=1)
    averaged = ev.predict_probabilities(left_or_right, images, batch_size=1, tta_flip=True)

    assert plain[0, 0] == 1.0
    assert averaged[0, :2] == pytest.approx([0.5, 0.5])


def test_a_model_with_the_wrong_output_shape_is_an_error():
    with pytest.raises(ev.EvaluationError, match=r"expected \(4, 7\)"):
        ev.evaluate_predictions(np.arange(4), np.ones((4, 5)) / 5, FER_CLASSES)


def test_a_history_file_in_another_format_is_a_clear_error(tmp_path):
    (tmp_path / "history.json").write_text(json.dumps({"loss": [1.0, 0.5], "phase": ["train", "finetune"]}))

    with pytest.raises(FerflowError, match=r"history.json is not a ferflow history file"):
        read_history(tmp_path / "history.json")


# --- the stage -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """evaluate_stage on a model that swaps angry and disgust, with a training history."""
    root = tmp_path_factory.mktemp("evaluate")
    data_dir = write_constant_dataset(root / "data")
    swapped = (CENTRES[1], CENTRES[0], *CENTRES[2:])
    centre_model(swapped, root / "models" / "model.keras")
    write_history(root / "models")
    metrics = evaluate(small_params(), Layout(data_dir, data_dir, root / "models", root / "reports"))
    return root / "reports", metrics


def test_the_stage_scores_a_known_model_correctly(evaluated):
    _, metrics = evaluated

    assert metrics["accuracy"] == pytest.approx(5 / 7)
    assert metrics["per_class"]["angry"]["recall"] == 0.0
    assert metrics["per_class"]["happy"]["recall"] == 1.0


def test_the_stage_writes_every_report_file(evaluated):
    reports, _ = evaluated

    expected = [files.METRICS_FILE, files.CONFUSION_JSON, files.EVALUATION_FILE]
    expected += [
        f"plots/{name}" for name in (*files.PNG_FILES, files.CONFUSION_CSV, files.ROC_CSV, files.HISTORY_CSV)
    ]
    assert [name for name in expected if not (reports / name).is_file()] == []


def test_metrics_json_is_flat_at_the_top_for_dvc(evaluated):
    reports, metrics = evaluated

    written = json.loads((reports / ev.METRICS_FILE).read_text())

    assert written == metrics
    assert all(isinstance(written[k], float) for k in ("accuracy", "macro_f1", "weighted_f1", "macro_auc"))


def test_scores_json_holds_the_headline_numbers_one_column_each(evaluated):
    reports, metrics = evaluated

    scores = json.loads((reports / files.SCORES_FILE).read_text())

    recalls = {name: row["recall"] for name, row in metrics["per_class"].items()}
    assert scores == {
        **{key: metrics[key] for key in ("accuracy", "macro_f1", "weighted_f1", "macro_auc", "n_test")},
        "min_class_recall": min(recalls.values()),
        "min_recall_class": min(recalls, key=recalls.__getitem__),
    }
    assert not any(isinstance(value, dict) for value in scores.values())


def test_confusion_pairs_have_one_row_per_test_image(evaluated):
    reports, metrics = evaluated

    pairs = pd.read_csv(reports / "plots" / ev.CONFUSION_CSV)

    assert list(pairs.columns) == ["actual", "predicted"]
    assert len(pairs) == metrics["n_test"]
    assert ((pairs.actual == "angry") & (pairs.predicted == "disgust")).sum() == 3


def test_confusion_matrix_json_matches_the_pairs(evaluated):
    reports, _ = evaluated

    matrix = np.asarray(json.loads((reports / ev.CONFUSION_JSON).read_text())["matrix"])
    pairs = pd.read_csv(reports / "plots" / ev.CONFUSION_CSV)

    assert matrix[0, 1] == ((pairs.actual == "angry") & (pairs.predicted == "disgust")).sum()
    assert matrix.sum() == len(pairs)


def test_provenance_names_the_model_file_digest(evaluated, tmp_path_factory):
    reports, _ = evaluated

    provenance = json.loads((reports / ev.EVALUATION_FILE).read_text())

    assert provenance["model_sha256"] == files.file_sha256(Path(provenance["model"]))


def test_a_dataset_without_test_images_is_an_error(tmp_path):
    data_dir = write_constant_dataset(tmp_path / "data", per_class={})
    centre_model(path=tmp_path / "models" / "model.keras")

    with pytest.raises(ev.EvaluationError, match="no test images"):
        evaluate(small_params(), Layout(data_dir, data_dir, tmp_path / "models", tmp_path / "reports"))


def test_the_cli_evaluates_any_model_file_on_a_class_folder(tmp_path, capsys):
    # given: a `<class>/*.png` folder without a split level, and a perfect model file
    from PIL import Image

    from ferflow.cli import main

    for index, name in enumerate(FER_CLASSES):
        for i in range(2):
            (tmp_path / "faces" / name).mkdir(parents=True, exist_ok=True)
            Image.new("L", (SIZE, SIZE), int(CENTRES[index])).save(tmp_path / "faces" / name / f"{i}.png")
    centre_model(path=tmp_path / "model.keras")

    status = main(
        ["evaluate", "--model", str(tmp_path / "model.keras"), "--data", str(tmp_path / "faces"),
         "--reports", str(tmp_path / "out")]
    )  # fmt: skip

    assert status == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["accuracy"] == 1.0
    assert json.loads((tmp_path / "out" / ev.METRICS_FILE).read_text())["n_test"] == 2 * len(FER_CLASSES)
