"""The tables the contract's expectations run on, computed from a prepared dataset.

Great Expectations checks columns of DataFrames. Properties that need the pixels or the
whole dataset at once (blank images, duplicates across splits, near copies, class shares)
are computed here with numpy/pandas into plain columns (`is_blank`, `train_copy`,
`near_train_copy`, `drift`, ...), so each expectation stays a one-line, readable rule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ferflow.config import Params
from ferflow.contract.hashing import MIN_CORRELATION, near_duplicate_pairs, phash, thumbnail_correlation
from ferflow.data.dataset import SPLITS, PreparedData

log = logging.getLogger(__name__)

REJECTED_FILE = "rejected.csv"


@dataclass(frozen=True)
class ContractTables:
    images: pd.DataFrame  # one row per image: the manifest plus computed columns
    classes: pd.DataFrame  # one row per (split, class) of base.classes x splits present
    splits: pd.DataFrame  # one row per expected split: rows, blank share
    rejected: pd.DataFrame  # rejected.csv: source, reason
    profile: dict[str, Any]


def read_rejected(data_dir: Path) -> pd.DataFrame:
    """rejected.csv (quarantined inputs) or an empty table when ingest rejected nothing."""
    path = data_dir / REJECTED_FILE
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame({"source": pd.Series(dtype=str), "reason": pd.Series(dtype=str)})
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def class_profile(manifest: pd.DataFrame, classes: tuple[str, ...]) -> dict[str, Any]:
    """Counts and shares of each class per split: what drift is measured against."""
    splits: dict[str, Any] = {}
    for split in SPLITS:
        labels = manifest.loc[manifest["split"] == split, "label"]
        if labels.empty:
            continue
        counts = {c: int((labels == c).sum()) for c in classes}
        total = len(labels)
        splits[split] = {
            "rows": total,
            "counts": counts,
            "shares": {c: round(n / total, 6) for c, n in counts.items()},
        }
    return {"classes": list(classes), "splits": splits}


# Which earlier splits a split's images must not copy: val is carved from train, and test
# must be unseen by both training (train) and model selection (val).
EARLIER_SPLITS = {"val": ("train",), "test": ("train", "val")}


def _exact_copy_columns(images: pd.DataFrame) -> None:
    """`train_copy`: for val/test rows, an earlier-split file with identical pixels (else "")."""
    copy = pd.Series("", index=images.index, dtype=object)
    for split, earlier in EARLIER_SPLITS.items():
        reference = images[images["split"].isin(earlier)].drop_duplicates("sha256")
        source_by_hash = reference.set_index("sha256")["source"]
        rows = images["split"] == split
        copy[rows] = images.loc[rows, "sha256"].map(source_by_hash).fillna("")
    images["train_copy"] = copy
    images["leak_of_train"] = copy != ""


def _conflicting_label_column(images: pd.DataFrame) -> None:
    labels_per_hash = images.groupby("sha256")["label"].transform("nunique")
    images["conflicting_label"] = labels_per_hash > 1


def _near_pairs(
    images: pd.DataFrame, pixels: np.ndarray, hashes: np.ndarray, distance: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(val/test row, earlier-split row, bits) of confirmed near copies with different pixels."""
    usable = ~images["is_blank"].to_numpy()  # blank images all hash alike: reported elsewhere
    split = images["split"].to_numpy()
    found = []
    for name, earlier in EARLIER_SPLITS.items():
        query_rows = np.flatnonzero(usable & (split == name))
        reference_rows = np.flatnonzero(usable & np.isin(split, earlier))
        q, r, bits = near_duplicate_pairs(hashes[query_rows], hashes[reference_rows], distance)
        found.append((query_rows[q], reference_rows[r], bits))
    query, match, bits = (np.concatenate(parts) for parts in zip(*found, strict=True))
    sha = images["sha256"].to_numpy()
    keep = sha[query] != sha[match]
    keep[keep] = thumbnail_correlation(pixels, query[keep], match[keep]) >= MIN_CORRELATION
    return query[keep], match[keep], bits[keep]


def _near_copy_columns(images: pd.DataFrame, pixels: np.ndarray, distance: int) -> None:
    """`near_train_copy`: an earlier-split file within `distance` pHash bits (not an exact copy)."""
    hashes = phash(pixels)
    images["phash"] = [f"{h:016x}" for h in hashes]
    query, match, bits = _near_pairs(images, pixels, hashes, distance)
    # the closest match per val/test image
    order = np.lexsort((bits, query))
    query, match, bits = query[order], match[order], bits[order]
    first = np.unique(query, return_index=True)[1]
    near = np.full(len(images), "", dtype=object)
    near_bits = np.full(len(images), -1, dtype=np.int64)
    near[query[first]] = images["source"].to_numpy()[match[first]]
    near_bits[query[first]] = bits[first]
    images["near_train_copy"] = near
    images["near_train_bits"] = near_bits
    images["near_duplicate_of_train"] = near != ""


def leaked_train_rows(prepared: PreparedData, params: Params) -> np.ndarray:
    """Which train rows (bool, in `prepared.split("train")` order) a val or test image
    copies, exactly (same pixels) or nearly (pHash within validate.near_duplicate_distance,
    confirmed by thumbnail correlation): what `validate.leakage: drop` leaves out of training."""
    images = prepared.manifest.reset_index(drop=True).copy()
    images["is_blank"] = images["std"].astype(float) < params.validation.blank_std_threshold
    split = images["split"].to_numpy()
    held_out = set(images.loc[split != "train", "sha256"])
    leaked = (split == "train") & images["sha256"].isin(held_out).to_numpy()
    _, match, _ = _near_pairs(
        images, prepared.images, phash(prepared.images), params.validation.near_duplicate_distance
    )
    leaked[match[split[match] == "train"]] = True
    return leaked[split == "train"]


def image_table(prepared: PreparedData, params: Params) -> pd.DataFrame:
    """The manifest plus computed per-image columns."""
    images = prepared.manifest.copy()
    images["is_blank"] = images["std"].astype(float) < params.validation.blank_std_threshold
    _exact_copy_columns(images)
    _conflicting_label_column(images)
    _near_copy_columns(images, prepared.images, params.validation.near_duplicate_distance)
    return images


def class_table(profile: dict[str, Any], reference: dict[str, Any] | None, params: Params) -> pd.DataFrame:
    """One row per (split, class): count, its minimum, share, reference share, absolute drift."""
    rows = []
    for split, stats in profile["splits"].items():
        reference_shares = (reference or {}).get("splits", {}).get(split, {}).get("shares", {})
        for label, count in stats["counts"].items():
            share = stats["shares"][label]
            reference_share = reference_shares.get(label)
            rows.append(
                {
                    "split": split,
                    "label": label,
                    "count": count,
                    "min_count": params.validation.min_class_count.get(split, 0),
                    "share": share,
                    "reference_share": np.nan if reference_share is None else reference_share,
                    "drift": 0.0 if reference_share is None else abs(share - reference_share),
                }
            )
    return pd.DataFrame(
        rows,
        columns=["split", "label", "count", "min_count", "share", "reference_share", "drift"],
    )


def split_table(images: pd.DataFrame, params: Params) -> pd.DataFrame:
    """One row per expected split (a missing split has 0 rows) with its row bounds."""
    rows = []
    for split in SPLITS:
        part = images[images["split"] == split]
        rows.append(
            {
                "split": split,
                "rows": len(part),
                "min_rows": params.validation.min_rows.get(split, 0),
                "max_rows": params.validation.max_rows.get(split, 10**12),
                "blank": int(part["is_blank"].sum()),
                "blank_share": float(part["is_blank"].mean()) if len(part) else 0.0,
            }
        )
    return pd.DataFrame(rows)


def build_tables(
    prepared: PreparedData, data_dir: Path, params: Params, reference: dict[str, Any] | None
) -> ContractTables:
    images = image_table(prepared, params)
    profile = class_profile(prepared.manifest, params.base.classes)
    return ContractTables(
        images=images,
        classes=class_table(profile, reference, params),
        splits=split_table(images, params),
        rejected=read_rejected(data_dir),
        profile=profile,
    )
