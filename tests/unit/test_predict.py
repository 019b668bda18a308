"""`ferflow predict`: any image file, converted like training images, labelled with the study's emoji."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ferflow.cli import main
from ferflow.commands.models import predict
from ferflow.config import FER_CLASSES
from ferflow.evaluation import predict as pr
from tests.conftest import small_params
from tests.unit.test_evaluate import CENTRES, centre_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.keras"
    centre_model(path=path)
    return path


def grey_image(path, class_name: str, size: int = 48, mode: str = "L"):
    """A flat image at the class brightness (see centre_model), saved in any mode and size."""
    value = int(CENTRES[FER_CLASSES.index(class_name)])
    image = Image.new("L", (size, size), value).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def test_each_image_gets_its_class_label_and_emoji(tmp_path, model_path):
    for name in ("happy", "sad", "angry"):
        grey_image(tmp_path / "faces" / f"{name}.png", name)

    predictions = predict([tmp_path / "faces"], small_params(), model=str(model_path))

    by_file = {p.path.rsplit("/", 1)[-1]: p for p in predictions}
    assert {f: p.class_name for f, p in by_file.items()} == {
        "angry.png": "angry",
        "happy.png": "happy",
        "sad.png": "sad",
    }
    assert by_file["happy.png"].emoji == "😊"
    assert by_file["angry.png"].label == "Anger"


def test_colour_and_large_images_are_converted_like_training_images(tmp_path, model_path):
    path = grey_image(tmp_path / "big.jpg", "surprise", size=200, mode="RGB")

    (prediction,) = predict([path], small_params(), model=str(model_path))

    assert prediction.class_name == "surprise"


def test_probabilities_cover_all_seven_classes_and_sum_to_one(tmp_path, model_path):
    path = grey_image(tmp_path / "x.png", "fear")

    (prediction,) = predict([path], small_params(), model=str(model_path))

    assert list(prediction.probabilities) == list(FER_CLASSES)
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction.confidence == max(prediction.probabilities.values())


def test_an_undecodable_file_is_an_error_naming_it(tmp_path, model_path):
    grey_image(tmp_path / "ok.png", "happy")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")

    with pytest.raises(pr.PredictError, match=r"broken\.jpg.*--skip-bad"):
        predict([tmp_path], small_params(), model=str(model_path))


def test_skip_bad_predicts_the_rest(tmp_path, model_path):
    grey_image(tmp_path / "ok.png", "happy")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")

    predictions = predict([tmp_path], small_params(), model=str(model_path), skip_bad=True)

    assert [p.path.rsplit("/", 1)[-1] for p in predictions] == ["ok.png"]


def test_a_missing_path_is_an_error():
    with pytest.raises(pr.PredictError, match="does not exist"):
        pr.list_images(["/nonexistent/face.png"])


def test_chunks_keep_files_and_images_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(pr, "CHUNK", 2)
    names = ["angry", "disgust", "fear", "happy", "neutral"]
    paths = [grey_image(tmp_path / f"{i}.png", n) for i, n in enumerate(names)]

    chunks = list(pr.iter_decoded(paths, 48, 10_000))

    assert [len(files) for files, _ in chunks] == [2, 2, 1]
    means = np.concatenate([images.mean(axis=(1, 2)) for _, images in chunks])
    assert means == pytest.approx([CENTRES[FER_CLASSES.index(n)] for n in names])


def test_the_cli_prints_json_and_csv(tmp_path, model_path, capsys):
    grey_image(tmp_path / "face.png", "neutral")

    main(["predict", str(tmp_path / "face.png"), "--model", str(model_path), "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    main(["predict", str(tmp_path / "face.png"), "--model", str(model_path), "--format", "csv"])
    lines = capsys.readouterr().out.splitlines()

    assert rows[0]["class_name"] == "neutral"
    assert rows[0]["emoji"] == "😐"
    assert lines[0] == "path,class_name,label,confidence," + ",".join(FER_CLASSES)
    assert lines[1].split(",")[1] == "neutral"


def test_json_and_csv_name_the_same_fields():
    predictions = [
        pr.Prediction("a.png", "happy", "Happy", "😊", 0.9, {"happy": 0.9, "sad": 0.1}),
        pr.Prediction("b.png", "sad", "Sadness", "😞", 0.6, {"happy": 0.4, "sad": 0.6}),
    ]

    (row, _) = json.loads(pr.format_predictions(predictions, "json"))
    header, first, _ = pr.format_predictions(predictions, "csv").splitlines()

    columns = header.split(",")
    assert columns[: len(pr.CSV_FIELDS)] == [k for k in row if k in columns]
    assert columns == ["path", "class_name", "label", "confidence", "happy", "sad"]
    assert dict(zip(columns, first.split(","), strict=True))["class_name"] == row["class_name"] == "happy"
