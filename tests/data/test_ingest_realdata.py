"""Ingest of the real FER2013 zip (skipped unless FERFLOW_FER2013_ZIP is set).

The zip is ingested once per test session (about a minute on 2 shared cores); every test
here reads that one result.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ferflow.data.dataset import PreparedData, load_prepared
from ferflow.data.ingest import ingest

# Per-class counts of shared/data/README.md.
TRAIN_COUNTS = {
    "angry": 3995,
    "disgust": 436,
    "fear": 4097,
    "happy": 7215,
    "neutral": 4965,
    "sad": 4830,
    "surprise": 3171,
}
TEST_COUNTS = {
    "angry": 467,
    "disgust": 56,
    "fear": 496,
    "happy": 895,
    "neutral": 607,
    "sad": 653,
    "surprise": 415,
}


@pytest.fixture(scope="session")
def fer2013_prepared(fer2013_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    from tests.conftest import small_params

    out_dir = tmp_path_factory.mktemp("fer2013_prepared")
    ingest(fer2013_zip, out_dir, small_params())
    return load_prepared(out_dir)


def test_real_zip_gives_the_documented_train_and_test_counts(fer2013_prepared):
    # when
    manifest = fer2013_prepared.manifest
    pool = manifest[manifest["split"].isin(["train", "val"])]
    test = manifest[manifest["split"] == "test"]

    # then
    assert len(pool) == 28_709 and len(test) == 3_589
    assert pool.groupby("label").size().to_dict() == TRAIN_COUNTS
    assert test.groupby("label").size().to_dict() == TEST_COUNTS


def test_real_zip_validation_share_is_about_20_percent_in_every_class(fer2013_prepared):
    # when
    pool = fer2013_prepared.manifest[fer2013_prepared.manifest["split"].isin(["train", "val"])]
    val_share = (pool["split"] == "val").groupby(pool["label"]).mean()

    # then: duplicate grouping may move a few images, never a percentage point
    assert ((val_share - 0.2).abs() <= 0.01).all(), val_share.to_dict()


def test_real_zip_images_are_all_canonical_48x48_grayscale(fer2013_prepared):
    # then
    assert fer2013_prepared.images.shape == (32_298, 48, 48)
    assert not fer2013_prepared.manifest["converted"].any()
    assert set(fer2013_prepared.manifest["mode"]) == {"L"}


def test_real_zip_duplicates_never_straddle_train_and_val(fer2013_prepared):
    # when
    manifest = fer2013_prepared.manifest
    pool = manifest[manifest["split"].isin(["train", "val"])]

    # then
    assert (pool.groupby("sha256")["split"].nunique() == 1).all()
