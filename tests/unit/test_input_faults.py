"""Issue #24, item 6: inputs that are not what they claim, from the outside. A damaged backup
file of any kind is moved aside; a params file that is empty, a device, a FIFO or huge is
refused in one line; a file name that is not UTF-8 is reported, and predict's JSON stays
valid UTF-8.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from ferflow.config import MAX_PARAMS_BYTES
from ferflow.training.backup import EPOCHS_FILE, EpochBackup, resumable_fit
from ferflow.training.callbacks import EpochRecorder
from tests.conftest import REPO

ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "PYTHONIOENCODING": "utf-8",  # strict: a name that is not UTF-8 cannot slip out as raw bytes
}


def ferflow(*argv: str, cwd=REPO, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real `ferflow` process on this checkout's source (a local SQLite store in `cwd`)."""
    return subprocess.run(
        [sys.executable, "-m", "ferflow.cli", *argv],
        capture_output=True,
        text=True,
        env={**ENV, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db"},
        cwd=cwd,
        timeout=timeout,
    )


# --- params files ---------------------------------------------------------------------------


def _fifo(tmp_path):
    path = tmp_path / "params.fifo"
    os.mkfifo(path)  # opening it for reading would block until a writer came
    return path


def _empty(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing but a comment\n")
    return path


def _huge(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("base:\n" + "  # padding\n" * (MAX_PARAMS_BYTES // 10))
    return path


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda _: "/dev/zero", "is not a regular file"),
        (_fifo, "is not a regular file"),
        (_empty, "is empty"),
        (_huge, "over the 1,048,576 a params file may hold"),
    ],
    ids=["device", "fifo", "empty", "huge"],
)
def test_a_params_file_that_is_not_one_is_refused_in_one_line(make, said, tmp_path):
    # given a params "file" that is a device, a FIFO, empty, or far too large
    path = make(tmp_path)
    # when a command loads it
    result = ferflow("train", "--params", str(path), "--data", str(tmp_path), timeout=60)
    # then it is refused at once, in one line naming the file
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert str(path) in result.stderr and said in result.stderr


# --- file names that are not UTF-8 ----------------------------------------------------------

NOT_UTF8 = b"caf\xe9.png"  # Latin-1 "café.png"


def _write_png(folder: bytes, name: bytes, value: int) -> None:
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as handle:
        Image.new("L", (48, 48), value).save(handle, format="PNG")


def test_predict_reports_a_file_name_that_is_not_utf8_and_its_json_stays_utf8(tmp_path):
    from tests.unit.test_evaluate import centre_model

    # given a folder with a file whose name is not UTF-8, and a model file
    model = tmp_path / "model.keras"
    centre_model(path=model)
    faces = os.fsencode(tmp_path / "faces")
    _write_png(faces, NOT_UTF8, 100)
    _write_png(faces, b"plain.png", 100)
    # when predict writes JSON to a strict UTF-8 stdout
    result = ferflow("predict", os.fsdecode(faces), "--model", str(model), "--format", "json")
    # then it exits 0, its output is valid UTF-8 JSON, and the odd name shows its byte
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout.encode("utf-8").decode("utf-8"))
    assert sorted(os.path.basename(r["path"]) for r in rows) == ["caf\\xe9.png", "plain.png"]


def test_ingest_reports_a_file_name_that_is_not_utf8_in_one_listing(tmp_path):
    # given a dataset folder where one train image's name is not UTF-8
    raw = os.fsencode(tmp_path / "raw")
    for split in (b"train", b"test"):
        for name in (b"angry", b"disgust", b"fear", b"happy", b"neutral", b"sad", b"surprise"):
            _write_png(os.path.join(raw, split, name), b"0.png", 60)
    _write_png(os.path.join(raw, b"train", b"happy"), NOT_UTF8, 99)
    # when it is ingested (on_bad_file=error, the default)
    result = ferflow("ingest", os.fsdecode(raw), "--out", str(tmp_path / "prepared"), timeout=120)
    # then the file is named (its byte escaped) and what to do is said; no traceback
    assert result.returncode == 2, result.stderr
    assert "train/happy/caf\\xe9.png: file name is not UTF-8" in result.stderr
    assert "Traceback" not in result.stderr


# --- damaged backup files -------------------------------------------------------------------


def _model() -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    return model


@pytest.mark.parametrize("content", [b'[{"epoch": 0, "loss": 1.2', b"\x00\xff garbage", b'{"epoch": 1}'])
def test_an_unreadable_epochs_file_is_moved_aside_with_its_weights(content, tmp_path, caplog):
    # given a backup whose epochs.json is truncated, garbage or not a list of records
    model = _model()
    backup = EpochBackup(tmp_path)
    backup.set_model(model)
    backup.on_epoch_end(2)
    backup.close()
    (tmp_path / EPOCHS_FILE).write_bytes(content)
    # when a phase resumes from it
    with caplog.at_level(logging.WARNING), resumable_fit(_model(), tmp_path) as (_, start):
        recorder = EpochRecorder("train", 0, tmp_path)
    # then it starts afresh: both files kept aside, with a warning
    assert start.epoch == 0 and recorder.records == []
    assert not (tmp_path / EPOCHS_FILE).exists() and not (tmp_path / EpochBackup.FILE).exists()
    assert len(list(tmp_path.glob(f"{EPOCHS_FILE}.corrupt-*"))) == 1
    assert len(list(tmp_path.glob(f"{EpochBackup.FILE}.corrupt-*"))) == 1
    assert "starting this phase afresh" in caplog.text


def test_a_readable_epochs_file_resumes(tmp_path):
    model = _model()
    backup = EpochBackup(tmp_path)
    backup.set_model(model)
    backup.on_epoch_end(1)
    backup.close()
    records = [{"epoch": 0, "phase": "train"}, {"epoch": 1, "phase": "train"}]
    (tmp_path / EPOCHS_FILE).write_text(json.dumps(records))

    with resumable_fit(_model(), tmp_path) as (_, start):
        recorder = EpochRecorder("train", 0, tmp_path)

    assert start.epoch == 2 and [r["epoch"] for r in recorder.records] == [0, 1]


@pytest.mark.slow
def test_train_reruns_past_a_garbage_epochs_file(tmp_path):
    # given a prepared dataset and a phase-1 backup whose epochs.json is garbage
    from ferflow.commands.data import synthesize
    from ferflow.stages import Layout, ingest
    from tests.conftest import small_params

    params = small_params("model.input_size=32")
    layout = Layout.from_params(params, tmp_path).with_raw(tmp_path / "raw")
    synthesize(params, layout.raw)
    ingest(params, layout)
    backup = layout.backup("train")
    backup.mkdir(parents=True)
    (backup / EPOCHS_FILE).write_bytes(b'[{"epoch": 0, "lo')
    np.savez(backup / EpochBackup.FILE, epoch=np.int64(1), n_weights=0, n_optimizer=0)
    # when `ferflow train` runs
    result = ferflow(
        "train",
        "--data",
        str(layout.prepared),
        "--models",
        str(layout.models),
        "--params",
        str(REPO / "params.yaml"),
        *[f"--set={o}" for o in ("model.weights=none", "model.input_size=32", "train.epochs=1")],
        cwd=tmp_path,
        timeout=600,
    )
    # then it trains from epoch 1, says so, and keeps the damaged files aside
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "starting this phase afresh" in result.stderr
    history = json.loads(layout.history_file.read_text())["epochs"]
    assert [r["epoch"] for r in history] == [0]
    assert layout.head_model.exists()
