"""Ingest: folder / zip / fer2013.csv into the canonical prepared dataset (tiny synthetic inputs)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ferflow.cli import main as cli_main
from ferflow.config import FER_CLASSES
from ferflow.data.dataset import IMAGES_FILE, INFO_FILE, MANIFEST_COLUMNS, MANIFEST_FILE, load_prepared
from ferflow.data.ingest import (
    FER2013_CSV_CLASSES,
    REJECTED_FILE,
    IngestError,
    assign_validation,
    ingest,
    read_source,
)
from tests.conftest import small_params
from tests.data.factories import (
    csv_from_folder,
    pixels_text,
    random_pixels,
    tree_hashes,
    write_fer_csv,
    write_fer_folder,
    write_image,
    zip_folder,
)

OUTPUT_FILES = (IMAGES_FILE, MANIFEST_FILE, INFO_FILE, REJECTED_FILE)


@pytest.fixture
def fer_folder(tmp_path: Path) -> Path:
    """5 train and 2 test JPEGs per class."""
    return write_fer_folder(tmp_path / "fer")


def _output_bytes(out_dir: Path) -> dict[str, bytes]:
    return {name: (out_dir / name).read_bytes() for name in OUTPUT_FILES}


# --- the canonical output -----------------------------------------------------------------


def test_folder_ingest_writes_the_canonical_dataset(fer_folder, tmp_path, params):
    # when
    ingest(fer_folder, tmp_path / "out", params)

    # then
    data = load_prepared(tmp_path / "out")
    assert data.images.shape == (7 * 7, 48, 48) and data.images.dtype == np.uint8
    assert tuple(data.manifest.columns) == MANIFEST_COLUMNS
    assert data.classes == FER_CLASSES
    counts = data.manifest.groupby("split").size().to_dict()
    assert counts == {"train": 28, "val": 7, "test": 14}
    assert {s: sum(c.values()) for s, c in data.info["counts"].items()} == counts
    assert data.info["source_kind"] == "folder"
    assert data.info["params_digest"] == params.section_digest("ingest", "base")


def test_rows_are_ordered_by_split_then_source(fer_folder, params):
    # when
    _, manifest = read_source(fer_folder, params)

    # then
    split_rank = manifest["split"].map({"train": 0, "val": 1, "test": 2})
    expected = manifest.assign(rank=split_rank).sort_values(["rank", "source"], kind="stable")
    assert list(manifest["source"]) == list(expected["source"])


def test_manifest_hashes_and_statistics_describe_the_stored_pixels(fer_folder, params):
    # when
    images, manifest = read_source(fer_folder, params)

    # then
    import hashlib

    assert list(manifest["sha256"]) == [hashlib.sha256(image.tobytes()).hexdigest() for image in images]
    np.testing.assert_allclose(manifest["mean"], images.reshape(len(images), -1).mean(axis=1))
    np.testing.assert_allclose(manifest["std"], images.reshape(len(images), -1).std(axis=1))


def test_same_input_and_params_give_byte_identical_output(fer_folder, tmp_path, params):
    # when
    ingest(fer_folder, tmp_path / "a", params)
    ingest(fer_folder, tmp_path / "b", params)

    # then
    assert _output_bytes(tmp_path / "a") == _output_bytes(tmp_path / "b")


def test_two_worker_processes_give_the_same_output_as_one(fer_folder, tmp_path, params):
    # when
    ingest(fer_folder, tmp_path / "serial", params, workers=1)
    ingest(fer_folder, tmp_path / "pool", params, workers=2)

    # then
    assert _output_bytes(tmp_path / "serial") == _output_bytes(tmp_path / "pool")


def test_folder_and_its_zip_give_the_same_dataset(fer_folder, tmp_path, params):
    # given: the zip wraps everything in fer2013/ like the Kaggle download
    archive = zip_folder(fer_folder, tmp_path / "fer2013.zip", wrapper="fer2013")

    # when
    folder_images, folder_manifest = read_source(fer_folder, params)
    zip_images, zip_manifest = read_source(archive, params)

    # then: the same rows; `source` keeps the zip's wrapping folder so a person can find the file
    assert np.array_equal(folder_images, zip_images)
    same = [column for column in MANIFEST_COLUMNS if column != "source"]
    pd.testing.assert_frame_equal(folder_manifest[same], zip_manifest[same])
    assert list(zip_manifest["source"]) == ["fer2013/" + path for path in folder_manifest["source"]]


def test_a_single_wrapping_folder_is_looked_through(fer_folder, tmp_path, params):
    # given: the zip unpacked as is, with fer2013/ on top
    wrapped = tmp_path / "unpacked"
    shutil.copytree(fer_folder, wrapped / "fer2013")

    # when
    plain_images, plain_manifest = read_source(fer_folder, params)
    wrapped_images, wrapped_manifest = read_source(wrapped, params)

    # then
    assert np.array_equal(plain_images, wrapped_images)
    assert list(wrapped_manifest["id"]) == list(plain_manifest["id"])


def test_csv_of_the_decoded_pixels_gives_the_same_rows_as_the_folder(fer_folder, tmp_path, params):
    # given
    csv_path = csv_from_folder(fer_folder, tmp_path / "fer2013.csv")

    # when
    folder_images, folder_manifest = read_source(fer_folder, params)
    csv_images, csv_manifest = read_source(csv_path, params)

    # then
    assert np.array_equal(folder_images, csv_images)
    columns = ["sha256", "label", "label_index", "split"]
    pd.testing.assert_frame_equal(folder_manifest[columns], csv_manifest[columns])


def test_csv_emotion_codes_follow_the_challenge_order_not_the_folder_order(tmp_path, params):
    # given: code 6 is Neutral and 4 is Sad in fer2013.csv
    pixels = pixels_text(random_pixels(1))
    csv_path = write_fer_csv(tmp_path / "fer2013.csv", [(6, pixels, "PublicTest"), (4, pixels, "PublicTest")])

    # when
    _, manifest = read_source(csv_path, params)

    # then
    assert list(manifest["label"]) == ["neutral", "sad"]


def test_csv_private_test_rows_are_skipped_by_default_and_kept_on_request(tmp_path):
    # given
    rows = [
        (0, pixels_text(random_pixels(n)), usage) for n, usage in enumerate(["PublicTest", "PrivateTest"])
    ]
    csv_path = write_fer_csv(tmp_path / "fer2013.csv", rows)

    # when
    _, default = read_source(csv_path, small_params())
    _, kept = read_source(csv_path, small_params("ingest.csv_private_test=test"))

    # then
    assert len(default) == 1
    assert list(kept["split"]) == ["test", "test"]


def test_folder_of_class_folders_without_splits_is_all_test(tmp_path, params):
    # given
    batch = write_fer_folder(tmp_path / "batch", test_per_class=2, splits=False)

    # when
    images, manifest = read_source(batch, params)

    # then
    assert set(manifest["split"]) == {"test"}
    assert len(images) == 14
    assert not (batch / MANIFEST_FILE).exists()


# --- the validation split -----------------------------------------------------------------


def test_validation_split_is_stratified_by_class(tmp_path, params):
    # given: 10 train images per class
    folder = write_fer_folder(tmp_path / "fer", train_per_class=10, test_per_class=1)

    # when
    _, manifest = read_source(folder, params)

    # then: 20% of each class
    val_counts = manifest[manifest["split"] == "val"].groupby("label").size()
    assert val_counts.to_dict() == dict.fromkeys(FER_CLASSES, 2)


def test_identical_images_stay_on_one_side_of_the_split(tmp_path, params):
    # given: each of 4 happy images copied 5 times
    folder = write_fer_folder(tmp_path / "fer", train_per_class=5, test_per_class=1)
    for n in range(4):
        for copy in range(5):
            write_image(folder / "train" / "happy" / f"dup_{n}_{copy}.png", random_pixels(10_000 + n))

    # when
    _, manifest = read_source(folder, params)

    # then
    pool = manifest[manifest["split"] != "test"]
    sides_per_image = pool.groupby("sha256")["split"].nunique()
    assert (sides_per_image == 1).all()
    assert (pool.groupby("sha256").size() == 5).sum() == 4


def test_without_grouping_duplicates_are_split_row_by_row():
    # given: 10 rows of one class with identical pixels
    labels = np.zeros(10, dtype=np.int64)

    # when
    grouped = assign_validation(labels, ["same"] * 10, 0.2, seed=1, group_duplicates=True)
    ungrouped = assign_validation(labels, ["same"] * 10, 0.2, seed=1, group_duplicates=False)

    # then: one group of 10 cannot fit a target of 2; single rows can
    assert grouped.sum() == 0
    assert ungrouped.sum() == 2


def test_validation_split_depends_on_the_seed():
    # given
    labels = np.zeros(50, dtype=np.int64)
    hashes = [f"{n:04d}" for n in range(50)]

    # when
    first = assign_validation(labels, hashes, 0.2, seed=1, group_duplicates=True)
    second = assign_validation(labels, hashes, 0.2, seed=2, group_duplicates=True)

    # then
    assert first.sum() == second.sum() == 10
    assert not np.array_equal(first, second)


# --- non-canonical images -----------------------------------------------------------------


def test_color_and_large_images_are_converted_and_counted(fer_folder, params, caplog):
    # given: an RGB 64x64 PNG
    write_image(fer_folder / "test" / "happy" / "big.png", random_pixels(99, size=64), mode="RGB")

    # when
    with caplog.at_level(logging.INFO, logger="ferflow.data.ingest"):
        images, manifest = read_source(fer_folder, params)

    # then
    row = manifest[manifest["source"] == "test/happy/big.png"].iloc[0]
    assert (row["width"], row["height"], row["mode"], row["converted"]) == (64, 64, "RGB", True)
    assert images.shape[1:] == (48, 48)
    assert manifest["converted"].sum() == 1
    assert "converted 1 of" in caplog.text


def test_non_canonical_images_are_rejected_on_request(fer_folder):
    # given
    write_image(fer_folder / "test" / "happy" / "big.png", random_pixels(99, size=64), mode="RGB")

    # when / then
    with pytest.raises(IngestError, match=r"test/happy/big\.png: not canonical: 64x64 mode RGB"):
        read_source(fer_folder, small_params("ingest.non_canonical=reject"))


# --- bad input ----------------------------------------------------------------------------


def _truncated_jpeg(path: Path) -> None:
    data = write_image(path, random_pixels(77)).read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _valid_jpeg(path: Path) -> None:
    write_image(path, random_pixels(78))


BAD_FILES = {
    "truncated": ("train/happy/cut.jpg", _truncated_jpeg, "truncated"),
    "zero bytes": ("train/happy/empty.jpg", lambda p: p.write_bytes(b""), "empty file"),
    "text named .jpg": ("train/sad/note.jpg", lambda p: p.write_text("hello"), "not an image"),
    "stray text file": ("test/sad/README.txt", lambda p: p.write_text("hi"), "not an image file"),
    "file outside a class folder": ("train/stray.jpg", _valid_jpeg, "stray file"),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_bad_file_raises_an_error_naming_it_and_leaves_the_input_alone(case, fer_folder, tmp_path, params):
    # given
    relative, write_bad_file, reason = BAD_FILES[case]
    write_bad_file(fer_folder / relative)
    before = tree_hashes(fer_folder)

    # when
    with pytest.raises(IngestError) as raised:
        ingest(fer_folder, tmp_path / "out", params)

    # then
    assert relative in str(raised.value) and reason in str(raised.value)
    assert tree_hashes(fer_folder) == before
    assert not (tmp_path / "out").exists()


def test_image_with_too_many_pixels_is_rejected_before_decoding(fer_folder, tmp_path):
    # given: a bound of 48x48 pixels and one 100x100 image
    write_image(fer_folder / "train" / "happy" / "huge.png", random_pixels(5, size=100))

    # when / then
    with pytest.raises(
        IngestError, match=r"huge\.png: 100x100 = 10000 pixels exceeds ingest\.max_image_pixels"
    ):
        read_source(fer_folder, small_params("ingest.max_image_pixels=2304"))


def _png_claiming_size(path: Path, width: int, height: int) -> Path:
    """A 1x1 PNG whose header claims width x height (a decompression bomb's header)."""
    import struct
    import zlib

    data = bytearray(write_image(path, np.zeros((1, 1), dtype=np.uint8)).read_bytes())
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("width", "message"),
    [(3000, r"3000x3000 = 9000000 pixels exceeds"), (20_000, r"decompression bomb")],
    ids=["above our bound", "above PIL's bound"],
)
def test_decompression_bomb_header_is_rejected_with_default_params(width, message, fer_folder, params):
    # given: a tiny file that claims millions of pixels
    _png_claiming_size(fer_folder / "train" / "happy" / "bomb.png", width, width)

    # when / then
    with pytest.raises(IngestError, match=rf"bomb\.png: .*{message}"):
        read_source(fer_folder, params)


def test_file_larger_than_the_bound_is_rejected(fer_folder):
    # when / then
    with pytest.raises(IngestError, match=r"exceeds ingest\.max_file_bytes=10"):
        read_source(fer_folder, small_params("ingest.max_file_bytes=10"))


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_pointing_outside_the_dataset_is_rejected(fer_folder, tmp_path, params):
    # given
    outside = write_image(tmp_path / "elsewhere" / "secret.jpg", random_pixels(3))
    (fer_folder / "train" / "happy" / "link.jpg").symlink_to(outside)

    # when / then
    with pytest.raises(IngestError, match=r"train/happy/link\.jpg: symlink pointing outside the dataset"):
        read_source(fer_folder, params)


def test_error_lists_ten_bad_files_and_counts_the_rest(fer_folder, params):
    # given
    for n in range(12):
        (fer_folder / "train" / "fear" / f"bad_{n:02d}.jpg").write_bytes(b"")

    # when
    with pytest.raises(IngestError) as raised:
        read_source(fer_folder, params)

    # then
    message = str(raised.value)
    assert "12 bad file(s)" in message and "... and 2 more" in message
    assert message.count("empty file") == 10


def test_quarantine_skips_bad_files_and_lists_them(fer_folder, tmp_path, caplog):
    # given
    (fer_folder / "train" / "fear" / "empty.jpg").write_bytes(b"")
    (fer_folder / "test" / "sad" / "notes.txt").write_text("x")

    # when
    with caplog.at_level(logging.WARNING, logger="ferflow.data.ingest"):
        ingest(fer_folder, tmp_path / "out", small_params("ingest.on_bad_file=quarantine"))

    # then
    rejected = pd.read_csv(tmp_path / "out" / REJECTED_FILE)
    assert list(rejected["source"]) == ["test/sad/notes.txt", "train/fear/empty.jpg"]
    assert len(load_prepared(tmp_path / "out").manifest) == 7 * 7
    assert "quarantined 2 bad file(s)" in caplog.text


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda root: (root / "train" / "joy").mkdir(),
            r"unknown class folder\(s\) \['train/joy'\]; expected only angry",
        ),
        (lambda root: shutil.rmtree(root / "test"), r"missing split folder test/"),
        (lambda root: (root / "test" / "sad2").mkdir(), r"unknown class folder"),
        (lambda root: (root / "extra").mkdir(), r"unknown folder\(s\) \['extra'\] next to train/ and test/"),
    ],
    ids=["unknown class", "missing test split", "misspelled class", "unknown top folder"],
)
def test_layout_problem_raises_an_error_that_says_what_is_expected(make, message, fer_folder, params):
    # given
    make(fer_folder)

    # when / then
    with pytest.raises(IngestError, match=message):
        read_source(fer_folder, params)


def test_unknown_class_folder_without_splits_is_an_error(tmp_path, params):
    # given
    batch = write_fer_folder(tmp_path / "batch", test_per_class=1, splits=False)
    write_image(batch / "joy" / "a.jpg", random_pixels(1))

    # when / then
    with pytest.raises(IngestError, match=r"unknown class folder\(s\) \['joy'\]; expected only angry"):
        read_source(batch, params)


def test_missing_class_folder_is_a_warning_not_an_error(fer_folder, params, caplog):
    # given
    shutil.rmtree(fer_folder / "test" / "disgust")

    # when
    with caplog.at_level(logging.WARNING, logger="ferflow.data.ingest"):
        _, manifest = read_source(fer_folder, params)

    # then
    assert "no class folder for disgust in test/" in caplog.text
    assert "disgust" not in set(manifest.loc[manifest["split"] == "test", "label"])


def test_empty_class_folder_is_an_error(fer_folder, params):
    # given
    for path in (fer_folder / "train" / "disgust").iterdir():
        path.unlink()

    # when / then
    with pytest.raises(IngestError, match=r"class folder train/disgust/ is empty"):
        read_source(fer_folder, params)


def test_hidden_files_are_skipped(fer_folder, params):
    # given
    (fer_folder / ".DS_Store").write_bytes(b"\0\1")
    (fer_folder / "train" / "happy" / "._Training_1.jpg").write_bytes(b"junk")

    # when
    images, _ = read_source(fer_folder, params)

    # then
    assert len(images) == 7 * 7


def test_output_folder_inside_the_source_is_refused(fer_folder, params):
    # when / then
    with pytest.raises(IngestError, match="inside the source folder"):
        ingest(fer_folder, fer_folder / "prepared", params)


# --- zips -----------------------------------------------------------------------------------


def _zip_with_member(folder: Path, zip_path: Path, member: zipfile.ZipInfo | str, data: bytes) -> Path:
    zip_folder(folder, zip_path)
    with zipfile.ZipFile(zip_path, "a") as archive:
        archive.writestr(member, data)
    return zip_path


def _symlink_member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (0o120777 << 16) | 0  # S_IFLNK | rwx
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("../evil.jpg", r"\.\./evil\.jpg: '\.\.' in the member path"),
        ("fer2013/train/happy/../../../evil.jpg", r"'\.\.' in the member path"),
        ("/etc/evil.jpg", r"/etc/evil\.jpg: absolute path"),
        (_symlink_member("fer2013/train/happy/link.jpg"), r"link\.jpg: symbolic link member"),
    ],
    ids=["dot-dot", "nested dot-dot", "absolute", "symlink"],
)
def test_unsafe_zip_member_raises_an_error_naming_it(member, message, fer_folder, tmp_path, params):
    # given
    archive = _zip_with_member(fer_folder, tmp_path / "fer.zip", member, b"/etc/passwd")
    before = tree_hashes(tmp_path)

    # when / then
    with pytest.raises(IngestError, match=message):
        ingest(archive, tmp_path / "out", params)
    assert tree_hashes(tmp_path) == before


def test_zip_junk_from_macos_is_skipped(fer_folder, tmp_path, params):
    # given
    archive = _zip_with_member(fer_folder, tmp_path / "fer.zip", "__MACOSX/fer2013/._x.jpg", b"junk")
    with zipfile.ZipFile(archive, "a") as handle:
        handle.writestr("fer2013/.DS_Store", b"junk")

    # when
    images, _ = read_source(archive, params)

    # then
    assert len(images) == 7 * 7


def test_zip_larger_than_the_bound_is_refused_before_reading(fer_folder, tmp_path):
    # given
    archive = zip_folder(fer_folder, tmp_path / "fer.zip")

    # when / then
    with pytest.raises(IngestError, match=r"exceeds ingest\.max_zip_bytes=1000"):
        read_source(archive, small_params("ingest.max_zip_bytes=1000"))


def test_file_named_zip_that_is_not_a_zip_is_refused(tmp_path, params):
    # given
    fake = tmp_path / "fer.zip"
    fake.write_text("not a zip")

    # when / then
    with pytest.raises(IngestError, match="not a zip archive"):
        read_source(fake, params)


# --- fer2013.csv errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ((0, "1 2 3", "Training"), r"line 3: 3 pixel values, expected 2304"),
        ((0, " ".join(["7"] * 2303 + ["x"]), "Training"), r"line 3: pixel value 'x' is not an integer"),
        ((0, " ".join(["300"] * 2304), "Training"), r"line 3: pixel values must be 0\.\.255"),
        ((7, pixels_text(random_pixels(2)), "Training"), r"line 3: emotion 7 is outside 0\.\.6"),
        ((0, pixels_text(random_pixels(2)), "Validation"), r"line 3: unknown Usage 'Validation'"),
    ],
    ids=["pixel count", "non-integer pixel", "pixel range", "label", "usage"],
)
def test_bad_csv_row_raises_an_error_naming_the_line(row, message, tmp_path, params):
    # given: line 2 is good, line 3 is bad
    good = (FER2013_CSV_CLASSES.index("happy"), pixels_text(random_pixels(1)), "Training")
    csv_path = write_fer_csv(tmp_path / "fer2013.csv", [good, row])

    # when / then
    with pytest.raises(IngestError, match=message):
        read_source(csv_path, params)


def test_csv_without_the_expected_columns_is_refused(tmp_path, params):
    # given
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("emotion,pixels\n0,1 2 3\n")

    # when / then
    with pytest.raises(IngestError, match=r"missing column\(s\) \['Usage'\]"):
        read_source(csv_path, params)


# --- command line ---------------------------------------------------------------------------


def test_cli_ingest_writes_the_dataset_and_reports_errors_in_one_line(fer_folder, tmp_path, capsys):
    # given
    params_file = str(Path(__file__).resolve().parents[2] / "params.yaml")

    # when
    ok = cli_main(["ingest", str(fer_folder), "--out", str(tmp_path / "out"), "--params", params_file])
    shutil.rmtree(fer_folder / "test")
    failed = cli_main(["ingest", str(fer_folder), "--out", str(tmp_path / "out2"), "--params", params_file])

    # then
    assert ok == 0 and json.loads((tmp_path / "out" / INFO_FILE).read_text())["rows"] == 49
    assert failed == 2
    assert "missing split folder test/" in capsys.readouterr().err
