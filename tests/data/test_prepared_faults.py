"""Issue #13, faults an operator meets: a truncated or inconsistent prepared dataset is one
clear `PreparedDataError` (exit code 3) naming the file, never a numpy traceback.

A real `ingest` of a tiny synthetic download writes the prepared folder; each test damages a
copy of it the way an interrupted write, a full disk or a half-finished copy would.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ferflow.config import FER_CLASSES
from ferflow.data.dataset import (
    IMAGES_FILE,
    INFO_FILE,
    MANIFEST_FILE,
    DatasetError,
    PreparedDataError,
    load_prepared,
    write_prepared,
)
from ferflow.data.ingest import ingest
from ferflow.errors import EXIT_CONTRACT_FAILED, EXIT_PREPARED_DATA, EXIT_USER_ERROR, FerflowError
from tests.data.factories import manifest_row, random_pixels, tree_hashes, write_fer_folder

ROWS = 7 * 7  # 5 train + 2 test JPEGs for each of the 7 classes


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return write_fer_folder(tmp_path_factory.mktemp("raw") / "fer2013")


@pytest.fixture(scope="module")
def pristine(raw, tmp_path_factory, params) -> Path:
    out = tmp_path_factory.mktemp("pristine") / "prepared"
    ingest(raw, out, params, workers=1)
    return out


@pytest.fixture
def prepared(pristine, tmp_path) -> Path:
    """A fresh copy of the ingested dataset, to damage."""
    return Path(shutil.copytree(pristine, tmp_path / "prepared"))


def _load_fails(data_dir: Path, mmap: bool = False) -> PreparedDataError:
    with pytest.raises(PreparedDataError) as failure:
        load_prepared(data_dir, mmap=mmap)
    error = failure.value
    assert error.exit_code == 3
    assert "ferflow ingest" in str(error)
    assert "\n" not in str(error)  # one line: what the CLI prints
    return error


def _drop_manifest_row(data_dir: Path, row: int) -> None:
    lines = (data_dir / MANIFEST_FILE).read_text().splitlines(keepends=True)
    del lines[row + 1]  # + the header
    (data_dir / MANIFEST_FILE).write_text("".join(lines))


# --- the error and its exit code --------------------------------------------------------


def test_prepared_data_error_has_its_own_exit_code():
    assert issubclass(PreparedDataError, DatasetError) and issubclass(PreparedDataError, FerflowError)
    assert PreparedDataError.exit_code == EXIT_PREPARED_DATA == 3
    assert len({EXIT_CONTRACT_FAILED, EXIT_USER_ERROR, EXIT_PREPARED_DATA}) == 3
    assert getattr(DatasetError("x"), "exit_code", EXIT_USER_ERROR) == 2  # what the CLI falls back to


def test_an_intact_dataset_loads_with_and_without_mmap(prepared):
    for mmap in (False, True):
        data = load_prepared(prepared, mmap=mmap)
        assert data.images.shape == (ROWS, 48, 48) and len(data.manifest) == ROWS
    assert isinstance(load_prepared(prepared, mmap=True).images, np.memmap)


# --- images.npy -------------------------------------------------------------------------


@pytest.mark.parametrize("mmap", [True, False])
def test_a_truncated_images_file_says_how_many_images_it_holds(prepared, raw, mmap):
    # given images.npy cut to half its size (an interrupted write or copy)
    raw_before = tree_hashes(raw)
    path = prepared / IMAGES_FILE
    size = path.stat().st_size
    os.truncate(path, size // 2)
    held = (size // 2 - (size - ROWS * 48 * 48)) // (48 * 48)

    # when / then
    error = _load_fails(prepared, mmap=mmap)
    assert str(path) in str(error)
    assert f"holds {held} of {ROWS} images: truncated" in str(error)
    # and nothing was deleted or rewritten, the raw data least of all
    assert tree_hashes(raw) == raw_before
    assert path.stat().st_size == size // 2
    assert {p.name for p in prepared.iterdir()} >= {IMAGES_FILE, MANIFEST_FILE, INFO_FILE}


def test_an_images_file_cut_inside_its_header_is_not_a_readable_array(prepared):
    os.truncate(prepared / IMAGES_FILE, 20)

    error = _load_fails(prepared, mmap=True)

    assert f"{prepared / IMAGES_FILE} is not a readable .npy array" in str(error)


def test_an_images_file_that_is_not_npy_at_all(prepared):
    (prepared / IMAGES_FILE).write_bytes(b"<html>502 Bad Gateway</html>")

    assert "not a readable .npy array" in str(_load_fails(prepared))


def test_bytes_after_the_images_are_reported(prepared):
    with (prepared / IMAGES_FILE).open("ab") as handle:
        handle.write(b"\0" * 100)

    assert f"100 bytes after its {ROWS} images" in str(_load_fails(prepared))


def test_a_missing_images_file_beside_the_others_is_an_incomplete_dataset(prepared):
    (prepared / IMAGES_FILE).unlink()

    error = _load_fails(prepared)

    assert f"{prepared / IMAGES_FILE} is missing" in str(error) and "incomplete" in str(error)


def test_no_prepared_dataset_at_all_is_a_user_error_not_exit_3(tmp_path):
    # nothing there: ingest never ran or the path is wrong (exit 2), not damaged data (exit 3)
    with pytest.raises(DatasetError, match="holds no prepared dataset") as failure:
        load_prepared(tmp_path / "nowhere")
    assert not isinstance(failure.value, PreparedDataError)


@pytest.mark.parametrize("raw", ["fer2013.zip", "fer2013.csv", "folder"])
def test_a_raw_dataset_given_as_prepared_data_names_the_ingest_command(raw, tmp_path):
    # given the raw source where the prepared data belongs (`ferflow validate data/raw/fer2013.zip`)
    source = tmp_path / raw
    if raw == "folder":
        (source / "train" / "happy").mkdir(parents=True)
    else:
        source.write_bytes(b"raw")
    # then the hint ingests from it, never into it
    with pytest.raises(DatasetError) as failure:
        load_prepared(source)
    said = str(failure.value)
    assert f"run `ferflow ingest {source} --out data/prepared`" in said
    assert f"--out {source}" not in said


# --- manifest.csv and dataset.json --------------------------------------------------------


def test_a_deleted_manifest_row_names_both_files(prepared):
    _drop_manifest_row(prepared, 10)

    error = str(_load_fails(prepared, mmap=True))

    assert f"{prepared / IMAGES_FILE} holds {ROWS} images" in error
    assert f"{prepared / MANIFEST_FILE} has {ROWS - 1} rows" in error


def test_a_manifest_cut_in_the_middle_of_a_row(prepared):
    path = prepared / MANIFEST_FILE
    text = path.read_text()
    path.write_text(text[: len(text) - 40])  # the last row loses its last fields

    error = str(_load_fails(prepared))

    assert f"{path} line {ROWS + 1} has empty fields" in error


def test_an_empty_manifest(prepared):
    (prepared / MANIFEST_FILE).write_text("")

    assert f"{prepared / MANIFEST_FILE} is not a readable CSV" in str(_load_fails(prepared))


def test_dataset_json_cut_short(prepared):
    path = prepared / INFO_FILE
    path.write_text(path.read_text()[:30])

    assert f"{path} is not readable JSON" in str(_load_fails(prepared))


def test_dataset_json_counts_that_disagree_with_the_manifest(prepared):
    # given one row removed from both images and manifest, consistently, but not from dataset.json
    images = np.load(prepared / IMAGES_FILE)
    np.save(prepared / IMAGES_FILE, images[1:], allow_pickle=False)
    _drop_manifest_row(prepared, 0)

    error = str(_load_fails(prepared))

    assert f"{prepared / MANIFEST_FILE} has {ROWS - 1} rows but {prepared / INFO_FILE} says {ROWS}" in error


def test_dataset_json_class_counts_that_disagree(prepared):
    path = prepared / INFO_FILE
    info = json.loads(path.read_text())
    info["counts"]["train"]["happy"] += 1
    info["counts"]["train"]["sad"] -= 1
    path.write_text(json.dumps(info))

    error = str(_load_fails(prepared))

    assert "train/happy rows but" in error and str(path) in error


# --- datasets written directly with write_prepared -----------------------------------------


def _tiny(out: Path, size: int = 48, info: dict | None = None) -> Path:
    images = np.stack([random_pixels(seed, size) for seed in range(6)])
    rows = [
        manifest_row("train", FER_CLASSES[i % 2], i, image, label_index=i % 2)
        for i, image in enumerate(images)
    ]
    write_prepared(out, images, pd.DataFrame(rows), info or {"classes": list(FER_CLASSES)})
    return out


def test_a_minimal_dataset_json_is_still_checked_against_the_images(tmp_path):
    data_dir = _tiny(tmp_path / "prepared")
    assert len(load_prepared(data_dir).manifest) == 6
    os.truncate(data_dir / IMAGES_FILE, (data_dir / IMAGES_FILE).stat().st_size - 1)

    assert "holds 5 of 6 images: truncated" in str(_load_fails(data_dir, mmap=True))


def test_images_of_another_size_than_dataset_json_says(tmp_path):
    data_dir = _tiny(tmp_path / "prepared", size=32, info={"classes": list(FER_CLASSES), "image_size": 48})

    assert "shape (32, 32) but" in str(_load_fails(data_dir))


def test_a_label_index_outside_the_classes(tmp_path):
    data_dir = _tiny(tmp_path / "prepared", info={"classes": ["angry"]})

    assert "label_index values outside 0..0" in str(_load_fails(data_dir))


def test_the_cli_exits_3_with_one_line_on_a_truncated_dataset(prepared, tmp_path, capsys):
    # given a prepared dataset whose images.npy was cut in half
    from ferflow.cli import main

    images = prepared / IMAGES_FILE
    os.truncate(images, images.stat().st_size // 2)
    # when the contract is checked through the CLI
    code = main(["validate", str(prepared), "--reports", str(tmp_path / "reports")])
    # then it exits 3 (not 1: the contract never ran) with one line naming the file
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_PREPARED_DATA
    assert len(err) == 1 and str(images) in err[0] and "truncated" in err[0]
    assert "Traceback" not in "\n".join(err)
