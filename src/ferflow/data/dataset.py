"""The canonical prepared dataset that ingest writes and every later stage reads.

A prepared dataset is a folder holding:

- `images.npy`: uint8 array of shape (N, S, S), S = base.image_size, grayscale pixels;
- `manifest.csv`: one row per image, in the same order as `images.npy`, with the columns
  in `MANIFEST_COLUMNS`;
- `dataset.json`: class names, counts per split and class, and provenance.

Rows are ordered by split (train, val, test), then by source path, so that the same input
and params always give byte-identical files.

Which train rows training uses is decided by the `validate` stage (the data contract's
blank-image and leakage policies) and written beside its report as `TrainingRows`
(reports/training_rows.json): training reads that file and knows nothing of the policies.

`load_prepared` checks the three files agree before anything reads pixels: a truncated or
inconsistent folder (an interrupted write or copy, a full disk, a partial `dvc pull`) is a
`PreparedDataError` (CLI exit code 3) naming the file and what is wrong, not a numpy
traceback. The check costs a header read and a stat, not a read of the images.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ferflow.errors import EXIT_PREPARED_DATA, FerflowError
from ferflow.files import file_sha256, write_json, written_whole

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


class PreparedDataError(DatasetError):
    """The prepared dataset on disk is unreadable, truncated or inconsistent: exit code 3.

    Neither a user error (exit 2: the path and params are fine) nor a failed data contract
    (exit 1: the contract never ran): the files `ferflow ingest` wrote are damaged, e.g.
    `images.npy` holds fewer images than its header or `manifest.csv` says. The message
    names the file and what is wrong; the fix is to re-run `ferflow ingest` (or
    `dvc repro ingest` / `dvc pull`). Raw data is never touched.
    """

    exit_code = EXIT_PREPARED_DATA


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
    # Each file whole or not at all (a full disk leaves no half-written .npy behind).
    with written_whole(out_dir / IMAGES_FILE) as path:
        np.save(path, np.ascontiguousarray(images, dtype=np.uint8), allow_pickle=False)
    with written_whole(out_dir / MANIFEST_FILE) as path:
        manifest.loc[:, list(MANIFEST_COLUMNS)].to_csv(
            path, index=False, lineterminator="\n", float_format="%.6f"
        )
    write_json(out_dir / INFO_FILE, info)


def load_prepared(data_dir: str | Path, mmap: bool = False) -> PreparedData:
    """Read a prepared dataset written by `ferflow ingest`.

    Raises `DatasetError` when there is no prepared dataset at `data_dir` at all (run ingest
    first), `PreparedDataError` when one is there but truncated, unreadable or inconsistent.
    """
    data_dir = Path(data_dir)
    _check_files_present(data_dir)
    images_path = data_dir / IMAGES_FILE
    count = _check_images_file(images_path)
    manifest = _read_manifest(data_dir / MANIFEST_FILE)
    info = _read_info(data_dir / INFO_FILE)
    if count != len(manifest):
        raise PreparedDataError(
            f"{images_path} holds {count:,} images but {data_dir / MANIFEST_FILE} has "
            f"{len(manifest):,} rows: the two files are from different runs or one was cut short; "
            f"{_RERUN.format(data_dir=data_dir)}"
        )
    _check_info(data_dir, manifest, info)
    try:
        images = np.load(images_path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise PreparedDataError(
            f"{images_path} is unreadable ({err}); {_RERUN.format(data_dir=data_dir)}"
        ) from err
    size = info.get("image_size")
    if isinstance(size, int) and images.shape[1:] != (size, size):
        raise PreparedDataError(
            f"{images_path} has images of shape {images.shape[1:]} but {data_dir / INFO_FILE} says "
            f"image_size {size}; {_RERUN.format(data_dir=data_dir)}"
        )
    return PreparedData(images, manifest, tuple(info["classes"]), info)


_RERUN = "re-run `ferflow ingest SOURCE --out {data_dir}` (or `dvc repro ingest`) to rewrite it"


def _looks_raw(path: Path) -> bool:
    """A zip, a fer2013.csv or a folder with train/ and test/: what `ferflow ingest` reads."""
    if path.is_file():
        return path.suffix.lower() in (".zip", ".csv")
    return (path / "train").is_dir() or any(path.glob("*/train"))


def _check_files_present(data_dir: Path) -> None:
    names = (IMAGES_FILE, MANIFEST_FILE, INFO_FILE)
    missing = [name for name in names if not (data_dir / name).is_file()]
    if len(missing) == len(names) and _looks_raw(data_dir):  # the source given where its output goes
        raise DatasetError(
            f"{data_dir} is a raw dataset, not a prepared one: run `ferflow ingest {data_dir} "
            "--out data/prepared`, then pass data/prepared (the default data.prepared)"
        )
    if len(missing) == len(names):  # nothing there: ingest never ran here, or a wrong path
        raise DatasetError(
            f"{data_dir} holds no prepared dataset (no {', '.join(names)}); "
            f"run `ferflow ingest SOURCE --out {data_dir}` first"
        )
    if missing:
        raise PreparedDataError(
            f"{data_dir / missing[0]} is missing but {data_dir} holds "
            f"{', '.join(n for n in names if n not in missing)}: the prepared dataset is incomplete; "
            f"{_RERUN.format(data_dir=data_dir)}"
        )


def _check_images_file(path: Path) -> int:
    """The number of images the header of `images.npy` declares, after checking the file holds them.

    Reads the header only: a truncated file (interrupted write, full disk) is caught by
    comparing the file size with what the header's shape needs.
    """
    rerun = _RERUN.format(data_dir=path.parent)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version not in readers:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, fortran_order, dtype = readers[version](handle)
            offset = handle.tell()
        file_size = path.stat().st_size
    except (ValueError, OSError, EOFError) as err:
        raise PreparedDataError(f"{path} is not a readable .npy array ({err}); {rerun}") from err
    if dtype != np.uint8 or len(shape) != 3 or fortran_order:
        raise PreparedDataError(
            f"{path} holds a {dtype} array of shape {shape}{' (Fortran order)' if fortran_order else ''}; "
            f"expected uint8 images (N, S, S) in C order; {rerun}"
        )
    count = int(shape[0])
    image_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    needed = offset + count * image_bytes
    if file_size < needed:
        held = (file_size - offset) // image_bytes if image_bytes else 0
        raise PreparedDataError(
            f"{path} holds {held:,} of {count:,} images: truncated ({file_size:,} of {needed:,} bytes); "
            f"{rerun}"
        )
    if file_size > needed:
        raise PreparedDataError(
            f"{path} has {file_size - needed:,} bytes after its {count:,} images: it was not written "
            f"by one `np.save`; {rerun}"
        )
    return count


def _read_manifest(path: Path) -> pd.DataFrame:
    rerun = _RERUN.format(data_dir=path.parent)
    try:
        manifest = pd.read_csv(path, dtype={"id": str, "source": str, "label": str})
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise PreparedDataError(f"{path} is not a readable CSV ({err}); {rerun}") from err
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise PreparedDataError(f"{path} lacks columns {missing}; {rerun}")
    empty = manifest.loc[:, list(MANIFEST_COLUMNS)].isna().any(axis=1).to_numpy()  # ingest fills all
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise PreparedDataError(
            f"{path} line {row + 2:,} has empty fields (id {manifest.iloc[row]['id']!r}); "
            f"the file was cut short or edited; {rerun}"
        )
    unknown = sorted(set(manifest["split"]) - set(SPLITS))
    if unknown:
        raise PreparedDataError(f"{path} has unknown splits {unknown} (expected {list(SPLITS)}); {rerun}")
    return manifest


def _read_info(path: Path) -> dict[str, Any]:
    rerun = _RERUN.format(data_dir=path.parent)
    try:
        info = json.loads(path.read_text())
    except (ValueError, OSError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise PreparedDataError(f"{path} is not readable JSON ({err}); {rerun}") from err
    if not isinstance(info, dict) or not isinstance(info.get("classes"), list):
        raise PreparedDataError(f"{path} has no 'classes' list; {rerun}")
    return info


def _check_info(data_dir: Path, manifest: pd.DataFrame, info: dict[str, Any]) -> None:
    """dataset.json's row count, counts per split and class, and classes agree with the manifest."""
    manifest_path, info_path = data_dir / MANIFEST_FILE, data_dir / INFO_FILE
    rerun = _RERUN.format(data_dir=data_dir)
    rows = info.get("rows")
    if isinstance(rows, int) and rows != len(manifest):
        raise PreparedDataError(
            f"{manifest_path} has {len(manifest):,} rows but {info_path} says {rows:,}; {rerun}"
        )
    classes = info["classes"]
    index = pd.to_numeric(manifest["label_index"], errors="coerce")
    if not index.between(0, len(classes) - 1).all():
        raise PreparedDataError(
            f"{manifest_path} has label_index values outside 0..{len(classes) - 1} "
            f"({len(classes)} classes in {info_path}); {rerun}"
        )
    counts = info.get("counts")
    if not isinstance(counts, dict):
        return
    actual = manifest.groupby(["split", "label"]).size().to_dict()
    for split, per_class in counts.items():
        for label, expected in (per_class or {}).items():
            found = int(actual.get((split, label), 0))
            if found != expected:
                raise PreparedDataError(
                    f"{manifest_path} has {found:,} {split}/{label} rows but {info_path} counts "
                    f"{expected:,}; {rerun}"
                )


def manifest_digest(data_dir: str | Path) -> str:
    """sha256 of manifest.csv: identifies the exact dataset a model was trained on."""
    return file_sha256(Path(data_dir) / MANIFEST_FILE)


@dataclass(frozen=True)
class TrainingRows:
    """The train rows training uses: every row of the train split but the `dropped` ones
    (positions in the split, by reason: "blank", "leaked"), for the dataset whose manifest
    has sha256 `manifest_sha256`. Written by `validate`, read by `train` and `finetune`."""

    manifest_sha256: str
    train_rows: int
    dropped: dict[str, list[int]]

    def mask(self) -> np.ndarray:
        keep = np.ones(self.train_rows, dtype=bool)
        for positions in self.dropped.values():
            keep[np.asarray(positions, dtype=np.int64)] = False
        return keep

    def digest(self) -> str:
        """sha256 of the rows left out: what of this file shapes a trained model."""
        left_out = sorted({p for positions in self.dropped.values() for p in positions})
        return hashlib.sha256(json.dumps(left_out).encode()).hexdigest()


def write_training_rows(path: Path, data_dir: Path, drops: dict[str, np.ndarray]) -> TrainingRows:
    """Write which train rows of the prepared dataset in `data_dir` training uses: `drops`
    maps a reason to a boolean mask over the train split (True: leave the row out)."""
    manifest = _read_manifest(Path(data_dir) / MANIFEST_FILE)
    train_rows = int((manifest["split"] == "train").sum())
    rows = TrainingRows(
        manifest_digest(data_dir),
        train_rows,
        {reason: np.flatnonzero(np.asarray(mask, dtype=bool)).tolist() for reason, mask in drops.items()},
    )
    write_json(
        path, {"manifest_sha256": rows.manifest_sha256, "train_rows": train_rows, "dropped": rows.dropped}
    )
    return rows


def read_training_rows(path: Path, data_dir: Path, digest: str | None = None) -> TrainingRows | None:
    """The training rows in `path` for the prepared dataset in `data_dir` (whose
    `manifest_digest`, when the caller has it, is `digest`); None when there is no such
    file. A file that is unreadable or written for other data is an error naming the
    command that rewrites it."""
    if not path.exists():
        return None
    rerun = f"run `ferflow validate {data_dir} --reports {path.parent}` (or `dvc repro validate`)"
    try:
        raw = json.loads(path.read_text())
        rows = TrainingRows(
            str(raw["manifest_sha256"]),
            int(raw["train_rows"]),
            {str(k): [int(p) for p in v] for k, v in dict(raw["dropped"]).items()},
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"{path} is unreadable ({type(err).__name__}: {err}); {rerun}") from err
    now = digest or manifest_digest(data_dir)
    if rows.manifest_sha256 != now:
        raise DatasetError(
            f"{path} was written by `ferflow validate` for other data (manifest "
            f"{rows.manifest_sha256[:8]}, the prepared data in {data_dir} has {now[:8]}); {rerun}"
        )
    return rows
