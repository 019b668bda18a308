"""Data contract, fast parts (no Great Expectations run): hashing, tables, policies, masks."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ferflow.contract.checks import CHECK_IDS, UnknownCheckError, severities
from ferflow.contract.expectations import EXPLAIN, explain
from ferflow.contract.hashing import hamming, near_duplicate_pairs, phash
from ferflow.contract.tables import build_tables, class_profile
from ferflow.contract.validation import training_mask
from ferflow.data.dataset import PreparedData, load_prepared, write_prepared
from ferflow.data.synth import draw_faces
from tests.conftest import small_params
from tests.data.factories import manifest_row

SPLIT_SIZES = {"train": 12, "val": 3, "test": 4}


def synthetic_prepared(
    classes: tuple[str, ...], sizes: dict[str, int] = SPLIT_SIZES, seed: int = 3
) -> tuple[np.ndarray, pd.DataFrame]:
    """Distinct synthetic faces for every split and class, with a matching manifest."""
    images, rows = [], []
    for offset, (split, n) in enumerate(sizes.items()):
        faces, labels = draw_faces(n, classes, seed + offset, split="train" if split != "test" else "test")
        for index, (face, label) in enumerate(zip(faces, labels, strict=True)):
            images.append(face)
            rows.append(manifest_row(split, classes[label], index, face, label_index=int(label)))
    return np.stack(images), pd.DataFrame(rows)


def replace_image(images: np.ndarray, manifest: pd.DataFrame, row: int, image: np.ndarray) -> None:
    images[row] = image
    manifest.loc[row, ["sha256", "mean", "std"]] = [
        hashlib.sha256(image.tobytes()).hexdigest(),
        float(image.mean()),
        float(image.std()),
    ]


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L"))


@pytest.fixture(scope="module")
def faces() -> tuple[np.ndarray, pd.DataFrame]:
    return synthetic_prepared(small_params().base.classes)


def first_row(manifest: pd.DataFrame, split: str, label: str | None = None) -> int:
    mask = manifest["split"] == split
    if label is not None:
        mask &= manifest["label"] == label
    return int(np.flatnonzero(mask)[0])


def prepare(tmp_path: Path, images: np.ndarray, manifest: pd.DataFrame, classes) -> PreparedData:
    write_prepared(tmp_path / "prepared", images, manifest, {"classes": list(classes)})
    return load_prepared(tmp_path / "prepared")


# --- perceptual hashing ---------------------------------------------------------------


def test_reencoded_jpeg_copy_has_a_close_phash(faces):
    images, _ = faces
    original = images[0]

    copy = jpeg_roundtrip(original, quality=40)
    distance = hamming(phash(original[None]), phash(copy[None]))[0]

    assert not np.array_equal(original, copy)
    assert distance <= small_params().validation.near_duplicate_distance


def test_different_faces_have_distant_phashes(faces):
    images, _ = faces
    hashes = phash(images[:40])

    distances = hamming(hashes[:, None], hashes[None, :])[~np.eye(40, dtype=bool)]

    assert np.median(distances) > 12


def test_multi_index_search_finds_exactly_the_brute_force_pairs():
    rng = np.random.default_rng(0)
    query = rng.integers(0, 2**63, 400, dtype=np.uint64)
    reference = rng.integers(0, 2**63, 2000, dtype=np.uint64)
    for i, flips in [(3, 0b1), (50, 0b1011), (77, 0b11110), (90, 0b1111)]:
        reference[i * 7] = query[i] ^ np.uint64(flips << 20)

    i, j, d = near_duplicate_pairs(query, reference, distance=4)

    brute = np.bitwise_count(query[:, None] ^ reference[None, :])
    expected = sorted(zip(*np.nonzero(brute <= 4), strict=True))
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == [(int(a), int(b)) for a, b in expected]
    assert (d == brute[i, j]).all()
    assert len(expected) >= 3  # the planted pairs within 4 bits


# --- policies -------------------------------------------------------------------------


def test_unknown_check_in_severity_names_it():
    params = small_params("validate.severity={near_dupes: warning}")

    with pytest.raises(UnknownCheckError, match="near_dupes"):
        severities(params)


def test_rejecting_non_canonical_images_makes_size_and_mode_errors():
    convert = severities(small_params())
    reject = severities(small_params("ingest.non_canonical=reject"))

    assert convert["image_size"] == "warning"
    assert reject["image_size"] == "error"
    assert reject["image_mode"] == "error"


def test_severity_from_params_overrides_the_default():
    result = severities(small_params("validate.severity={cross_split_duplicates: error}"))

    assert result["cross_split_duplicates"] == "error"


def test_every_check_has_an_explanation():
    assert set(EXPLAIN) == set(CHECK_IDS)


# --- computed tables --------------------------------------------------------------------


def test_copy_of_train_image_in_test_names_both_files(tmp_path, faces):
    params = small_params()
    images, manifest = faces[0].copy(), faces[1].copy()
    train_row, test_row = first_row(manifest, "train"), first_row(manifest, "test")
    replace_image(images, manifest, test_row, images[train_row])

    tables = build_tables(prepare(tmp_path, images, manifest, params.base.classes), tmp_path, params, None)
    observed, examples = explain("cross_split_duplicates", tables, params)

    assert observed["copies_of_train"] == 1
    assert examples == [f"{manifest.loc[test_row, 'source']} = {manifest.loc[train_row, 'source']}"]


def test_reencoded_copy_in_test_is_a_near_duplicate(tmp_path, faces):
    params = small_params()
    images, manifest = faces[0].copy(), faces[1].copy()
    train_row, test_row = first_row(manifest, "train"), first_row(manifest, "test")
    replace_image(images, manifest, test_row, jpeg_roundtrip(images[train_row], quality=50))

    tables = build_tables(prepare(tmp_path, images, manifest, params.base.classes), tmp_path, params, None)
    observed, examples = explain("near_duplicates", tables, params)

    assert observed["near_copies_of_train"] >= 1
    assert any(
        e.startswith(f"{manifest.loc[test_row, 'source']} ~ {manifest.loc[train_row, 'source']}")
        for e in examples
    )


def test_same_pixels_with_two_labels_are_conflicting(tmp_path, faces):
    params = small_params()
    images, manifest = faces[0].copy(), faces[1].copy()
    happy, sad = first_row(manifest, "train", "happy"), first_row(manifest, "train", "sad")
    replace_image(images, manifest, sad, images[happy])

    tables = build_tables(prepare(tmp_path, images, manifest, params.base.classes), tmp_path, params, None)
    observed, examples = explain("conflicting_labels", tables, params)

    assert observed == {"images": 2, "groups": 1}
    assert "(happy)" in examples[0]
    assert "(sad)" in examples[0]


def test_drift_example_shows_reference_and_new_share(tmp_path, faces):
    params = small_params()
    images, manifest = faces
    reference = class_profile(manifest, params.base.classes)
    keep = ~((manifest["split"] == "train") & (manifest["label"] == "angry") & (manifest.index % 5 != 0))

    prepared = prepare(
        tmp_path, images[keep.to_numpy()], manifest[keep].reset_index(drop=True), params.base.classes
    )
    observed, examples = explain("class_drift", build_tables(prepared, tmp_path, params, reference), params)

    assert observed["max_drift"] > params.validation.max_drift
    assert examples[0].startswith("train/angry: share 0.143 -> ")


def test_no_reference_means_no_drift(tmp_path, faces):
    params = small_params()
    tables = build_tables(prepare(tmp_path, *faces, params.base.classes), tmp_path, params, None)

    assert explain("class_drift", tables, params) == ("no reference", [])


# --- training mask ----------------------------------------------------------------------


def test_training_mask_drops_blank_train_images_only_when_asked(tmp_path, faces):
    params = small_params()
    images, manifest = faces[0].copy(), faces[1].copy()
    blank_train, blank_test = first_row(manifest, "train"), first_row(manifest, "test")
    for row in (blank_train, blank_test):
        replace_image(images, manifest, row, np.zeros((48, 48), dtype=np.uint8))
    prepared = prepare(tmp_path, images, manifest, params.base.classes)

    kept_by_default = training_mask(prepared, params)
    kept_when_dropping = training_mask(prepared, small_params("validate.drop_blank_from_train=true"))

    n_train = len(prepared.split("train")[1])
    assert kept_by_default.shape == (n_train,)
    assert kept_by_default.all()
    assert kept_when_dropping.sum() == n_train - 1
    assert not kept_when_dropping[blank_train]


def test_leakage_drop_leaves_copied_train_images_out_of_training(tmp_path, faces):
    # given a test image that copies one train image exactly and another that re-encodes a second
    params = small_params()
    images, manifest = faces[0].copy(), faces[1].copy()
    train_rows = manifest.index[manifest["split"] == "train"][:2].tolist()
    test_rows = manifest.index[manifest["split"] == "test"][:2].tolist()
    replace_image(images, manifest, test_rows[0], images[train_rows[0]])
    replace_image(images, manifest, test_rows[1], jpeg_roundtrip(images[train_rows[1]], quality=50))
    prepared = prepare(tmp_path, images, manifest, params.base.classes)
    # when the training mask is taken under each policy
    warn = training_mask(prepared, params)
    drop = training_mask(prepared, small_params("validate.leakage=drop"))
    # then `warn` trains on everything and `drop` leaves out exactly those two train images
    position = {row: i for i, row in enumerate(manifest.index[manifest["split"] == "train"])}
    assert warn.all()
    assert sorted(np.flatnonzero(~drop)) == sorted(position[row] for row in train_rows)


def test_validate_writes_the_train_rows_and_training_takes_exactly_those(tmp_path, faces, caplog):
    import logging

    from ferflow.contract.validation import validate_dataset
    from ferflow.data.dataset import DatasetError, read_training_rows
    from ferflow.training.train import load_training_data

    # given a prepared dataset with one blank train image, and the policy to drop blanks
    params = small_params("validate.drop_blank_from_train=true")
    images, manifest = faces[0].copy(), faces[1].copy()
    blank = first_row(manifest, "train")
    replace_image(images, manifest, blank, np.zeros((48, 48), dtype=np.uint8))
    prepared = prepare(tmp_path, images, manifest, params.base.classes)
    data_dir, rows_file = tmp_path / "prepared", tmp_path / "reports" / "training_rows.json"
    n_train = len(prepared.split("train")[1])
    # when validate runs, then it names the blank row as left out, by reason
    validate_dataset(data_dir, params, tmp_path / "reports")
    rows = read_training_rows(rows_file, data_dir)
    assert rows is not None and rows.dropped == {"blank": [blank]} and rows.train_rows == n_train
    # and training takes every other train row (it reads no validate.* param)
    (x_train, _), _ = load_training_data(data_dir, rows_file)
    assert len(x_train) == n_train - 1
    # without the file it trains on every row and says so
    with caplog.at_level(logging.WARNING):
        (x_all, _), _ = load_training_data(data_dir, tmp_path / "none" / "training_rows.json")
    assert len(x_all) == n_train and "ferflow validate" in caplog.text
    # and a file written for other data is refused, naming the command that rewrites it
    prepare(tmp_path, images[::-1].copy(), manifest.iloc[::-1].reset_index(drop=True), params.base.classes)
    with pytest.raises(DatasetError, match=r"for other data .*ferflow validate"):
        load_training_data(data_dir, rows_file)


def test_leakage_error_makes_train_copies_break_the_contract():
    assert severities(small_params())["cross_split_duplicates"] == "warning"
    strict = severities(small_params("validate.leakage=error"))
    assert strict["cross_split_duplicates"] == strict["near_duplicates"] == "error"
    # an explicit severity still wins
    mixed = severities(small_params("validate.leakage=error", "validate.severity={near_duplicates: warning}"))
    assert mixed["near_duplicates"] == "warning"


def test_unknown_label_and_missing_class_are_named(tmp_path, faces):
    params = small_params()
    images, manifest = faces[0].copy(), faces[1].copy()
    manifest.loc[manifest["label"] == "disgust", "label"] = "contempt"

    tables = build_tables(prepare(tmp_path, images, manifest, params.base.classes), tmp_path, params, None)
    observed, examples = explain("label_set", tables, params)

    assert observed == {"unknown_labels": ["contempt"], "missing_classes": ["disgust"]}
    assert examples[0] == "missing class 'disgust'"
    assert "(unknown class 'contempt')" in examples[1]
