"""Synthetic faces: the download layout, determinism, and that a small model can learn them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ferflow.config import FER_CLASSES
from ferflow.data.synth import SynthError, draw_faces, save_preview, write_synthetic_dataset


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_writes_the_download_layout_with_the_asked_counts(tmp_path):
    # given / when
    out = write_synthetic_dataset(tmp_path / "synth", FER_CLASSES, per_class=3, test_per_class=2, seed=5)

    # then
    for name in FER_CLASSES:
        assert len(list((out / "train" / name).glob("Training_*.jpg"))) == 3
        assert len(list((out / "test" / name).glob("PublicTest_*.jpg"))) == 2
    assert sorted(p.name for p in out.iterdir()) == ["test", "train"]


def test_images_are_48x48_grayscale_jpegs(tmp_path):
    out = write_synthetic_dataset(tmp_path, ("happy", "sad"), per_class=2, test_per_class=1, seed=5)

    for path in out.rglob("*.jpg"):
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "L", (48, 48))


def test_same_seed_writes_byte_identical_files(tmp_path):
    # given two writes with the same arguments into different folders
    first = write_synthetic_dataset(tmp_path / "a", FER_CLASSES, per_class=2, test_per_class=1, seed=9)
    second = write_synthetic_dataset(tmp_path / "b", FER_CLASSES, per_class=2, test_per_class=1, seed=9)

    # then every file has the same name and the same bytes
    assert _files(first) == _files(second)
    assert len(_files(first)) == 3 * len(FER_CLASSES)


def test_another_seed_draws_other_faces():
    first, _ = draw_faces(2, FER_CLASSES, seed=1)
    second, _ = draw_faces(2, FER_CLASSES, seed=2)

    assert not np.array_equal(first, second)


def test_train_and_test_faces_differ_for_the_same_seed():
    train, _ = draw_faces(3, ("neutral",), seed=1, split="train")
    test, _ = draw_faces(3, ("neutral",), seed=1, split="test")

    assert not any(np.array_equal(a, b) for a in train for b in test)


def test_draw_faces_returns_uint8_images_and_labels_in_class_order():
    images, labels = draw_faces(4, ("sad", "angry", "surprise"), seed=0, size=32)

    assert images.shape == (12, 32, 32) and images.dtype == np.uint8
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_faces_are_not_blank():
    images, _ = draw_faces(5, FER_CLASSES, seed=0)

    assert images.reshape(len(images), -1).std(axis=1).min() > 10


def test_unknown_class_is_an_error_naming_it():
    with pytest.raises(SynthError, match="contempt"):
        draw_faces(1, ("happy", "contempt"), seed=0)


def test_preview_grid_has_one_row_per_class(tmp_path):
    path = save_preview(tmp_path / "preview.png", FER_CLASSES, per_class=3, zoom=1)

    with Image.open(path) as image:
        assert image.size[1] == 48 * len(FER_CLASSES)
        assert image.size[0] > 48 * 3


def _gradient_histograms(images: np.ndarray, cell: int = 6, bins: int = 9) -> np.ndarray:
    """HOG-like features: per 6x6 cell, a normalised histogram of gradient orientations."""
    pixels = images.astype(np.float32)
    gx = np.zeros_like(pixels)
    gy = np.zeros_like(pixels)
    gx[:, :, 1:-1] = pixels[:, :, 2:] - pixels[:, :, :-2]
    gy[:, 1:-1, :] = pixels[:, 2:, :] - pixels[:, :-2, :]
    magnitude = np.hypot(gx, gy)
    orientation = np.minimum((np.mod(np.arctan2(gy, gx), np.pi) / np.pi * bins).astype(int), bins - 1)
    n, side, _ = pixels.shape
    cells = side // cell
    features = np.stack(
        [
            np.where(orientation == k, magnitude, 0.0).reshape(n, cells, cell, cells, cell).sum(axis=(2, 4))
            for k in range(bins)
        ],
        axis=-1,
    )
    features /= np.linalg.norm(features, axis=-1, keepdims=True) + 1e-6
    return features.reshape(n, -1)


def test_a_small_linear_model_learns_the_emotions():
    # given 60 training and 30 test faces per class (train and test streams are independent)
    train_images, train_labels = draw_faces(60, FER_CLASSES, seed=0, split="train")
    test_images, test_labels = draw_faces(30, FER_CLASSES, seed=0, split="test")

    # when a logistic regression is fitted on gradient histograms
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.1))
    model.fit(_gradient_histograms(train_images), train_labels)
    accuracy = model.score(_gradient_histograms(test_images), test_labels)

    # then it is far above chance (1/7 = 0.14); measured 0.69-0.71 over seeds 0-2
    assert accuracy > 0.5
