"""The canonical prepared dataset that ingest writes and every later stage reads.

A prepared dataset is a folder holding:

- `images.npy`: uint8 array of shape (N, S, S), S = base.image_size, grayscale pixels;
- `manifest.csv`: one row per image, in the same order as `images.npy`, with the columns
  in `MANIFEST_COLUMNS`;
- `dataset.json`: class names, counts per split and class, and provenance.

Rows are ordered by split (train, val, test), then by source path, so that the same input
and params always give byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ferflow.errors import FerflowError

SPLITS = ("train", "val", "test")
IMAGES_FILE = "images.npy"
MANIFEST_FILE = "manifest.csv"
INFO_FILE = "dataset.json"

MANIFEST_COLUMNS = (
    "id",  # stable row id: the source path inside the dataset, or csv:<row>
    "source",  # path of the original file relative to the source root, or csv row number
    "split",  # train | val | test
    "label",  # class folder name, e.g. "happy"
    "label_index",  # index into base.classes
    "sha256",  # of the canonical pixels (uint8, row-major)
    "width",  # of the original image
    "height",
    "mode",  # PIL mode of the original image ("L" for FER2013)
    "converted",  # True when the original was resized or converted to grayscale
    "mean",  # pixel mean of the canonical image
    "std",  # pixel std of the canonical image
)


class DatasetError(FerflowError, ValueError):
    """A prepared dataset is missing or inconsistent; the message names the file."""


@dataclass(frozen=True)
class PreparedData:
    images: np.ndarray
    manifest: pd.DataFrame
    classes: tuple[str, ...]
    info: dict[str, Any]

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Images (n, S, S) uint8 and integer labels (n,) of one split."""
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r}; expected one of {SPLITS}")
        mask = (self.manifest["split"] == name).to_numpy()
        return self.images[mask], self.manifest["label_index"].to_numpy()[mask].astype(np.int64)


def write_prepared(out_dir: Path, images: np.ndarray, manifest: pd.DataFrame, info: dict[str, Any]) -> None:
    """Write the three files deterministically."""
    if len(images) != len(manifest):
        raise DatasetError(f"{len(images)} images but {len(manifest)} manifest rows")
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / IMAGES_FILE, np.ascontiguousarray(images, dtype=np.uint8), allow_pickle=False)
    manifest.loc[:, list(MANIFEST_COLUMNS)].to_csv(
        out_dir / MANIFEST_FILE, index=False, lineterminator="\n", float_format="%.6f"
    )
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def load_prepared(data_dir: str | Path, mmap: bool = False) -> PreparedData:
    """Read a prepared dataset written by `ferflow ingest`."""
    data_dir = Path(data_dir)
    for name in (IMAGES_FILE, MANIFEST_FILE, INFO_FILE):
        if not (data_dir / name).exists():
            raise DatasetError(
                f"{data_dir / name} is missing; run `ferflow ingest SOURCE --out {data_dir}` first"
            )
    images = np.load(data_dir / IMAGES_FILE, mmap_mode="r" if mmap else None, allow_pickle=False)
    manifest = pd.read_csv(data_dir / MANIFEST_FILE, dtype={"id": str, "source": str, "label": str})
    info = json.loads((data_dir / INFO_FILE).read_text())
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise DatasetError(f"{data_dir / MANIFEST_FILE} lacks columns {missing}; re-run ingest")
    if len(images) != len(manifest):
        raise DatasetError(
            f"{data_dir}: {len(images)} images in {IMAGES_FILE} but {len(manifest)} rows in "
            f"{MANIFEST_FILE}; the folder is corrupt, re-run ingest"
        )
    return PreparedData(images, manifest, tuple(info["classes"]), info)


def manifest_digest(data_dir: str | Path) -> str:
    """sha256 of manifest.csv: identifies the exact dataset a model was trained on."""
    import hashlib

    return hashlib.sha256((Path(data_dir) / MANIFEST_FILE).read_bytes()).hexdigest()
