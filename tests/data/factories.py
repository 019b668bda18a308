"""Small FER-layout datasets for tests: folders of JPEG/PNG files, zips of them, fer2013.csv.

Images are random noise plus a per-image gradient, so every file has distinct pixels
unless a test copies one on purpose.
"""

from __future__ import annotations

import csv
import hashlib
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ferflow.config import FER_CLASSES
from ferflow.data.ingest import FER2013_CSV_CLASSES

USAGE_OF_POOL = {"train": "Training", "test": "PublicTest"}


def random_pixels(seed: int, size: int = 48) -> np.ndarray:
    """A (size, size) uint8 image that differs for every seed."""
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 120, size)[None, :] + rng.uniform(0, 60)
    noise = rng.integers(0, 100, size=(size, size))
    return np.clip(gradient + noise, 0, 255).astype(np.uint8)


def write_image(path: Path, pixels: np.ndarray, mode: str = "L") -> Path:
    """Save `pixels` (grayscale) as `path` (format from the suffix), converted to `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def write_fer_folder(
    root: Path,
    train_per_class: int = 5,
    test_per_class: int = 2,
    classes: Sequence[str] = FER_CLASSES,
    suffix: str = ".jpg",
    size: int = 48,
    splits: bool = True,
    seed: int = 0,
) -> Path:
    """`root/train/<class>/Training_<n>.jpg` and `root/test/<class>/PublicTest_<n>.jpg`.

    With `splits=False`: `root/<class>/img_<n>.jpg` (the layout of a new labelled batch).
    """
    counter = seed * 100_000
    for pool, per_class, prefix in (
        ("train", train_per_class, "Training"),
        ("test", test_per_class, "PublicTest"),
    ):
        if not splits and pool == "train":
            continue
        for name in classes:
            folder = root / pool / name if splits else root / name
            for _ in range(per_class):
                counter += 1
                write_image(folder / f"{prefix}_{counter}{suffix}", random_pixels(counter, size))
    return root


def zip_folder(folder: Path, zip_path: Path, wrapper: str | None = "fer2013") -> Path:
    """Zip every file under `folder`, inside one `wrapper/` folder like the Kaggle download."""
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = path.relative_to(folder).as_posix()
            archive.write(path, f"{wrapper}/{relative}" if wrapper else relative)
    return zip_path


def write_fer_csv(path: Path, rows: Iterable[tuple[int | str, str, str]]) -> Path:
    """fer2013.csv from (emotion, pixels text, Usage) rows."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["emotion", "pixels", "Usage"])
        writer.writerows(rows)
    return path


def pixels_text(pixels: np.ndarray) -> str:
    return " ".join(str(int(v)) for v in pixels.reshape(-1))


def csv_from_folder(folder: Path, csv_path: Path) -> Path:
    """fer2013.csv holding the *decoded* pixels of a download-layout folder.

    Rows follow the folder's order (pool, then path), so ingest orders both the same way.
    """
    rows = []
    for pool in ("train", "test"):
        for image_path in sorted((folder / pool).glob("*/*"), key=lambda p: p.as_posix()):
            label = image_path.parent.name
            pixels = np.asarray(Image.open(image_path).convert("L"))
            rows.append((FER2013_CSV_CLASSES.index(label), pixels_text(pixels), USAGE_OF_POOL[pool]))
    return write_fer_csv(csv_path, rows)


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (to assert that raw input is never modified)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def manifest_row(split: str, label: str, index: int, image: np.ndarray, **extra) -> dict:
    """A manifest row as ingest would write it for a canonical 48x48 grayscale image."""
    source = f"{split}/{label}/{index}.jpg"
    row = {
        "id": source,
        "source": source,
        "split": split,
        "label": label,
        "label_index": 0,
        "sha256": hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest(),
        "width": image.shape[1],
        "height": image.shape[0],
        "mode": "L",
        "converted": False,
        "mean": float(image.mean()),
        "std": float(image.std()),
    }
    row.update(extra)
    return row
