"""Perceptual hashes and a fast near-duplicate search over a whole images.npy.

A re-encoded, slightly brightened or resaved copy of an image has different bytes (so a
different sha256) but almost the same *difference hash* (dHash): the image is shrunk to
8 rows x 9 columns and each bit says whether a pixel is brighter than its right-hand
neighbour. Two copies of one photo differ in a handful of the 64 bits; unrelated faces
differ in about half.

Searching 3,600 test hashes against 28,700 train hashes pairwise would be 100M Hamming
distances. Instead we use the pigeonhole principle (multi-index hashing, Norouzi et al.
2012): split the 64 bits into `distance + 1` bands; two hashes within `distance` bits
agree exactly on at least one band. Exact band matches are found by sorting, then only
those candidate pairs get a full Hamming distance.
"""

from __future__ import annotations

import numpy as np

HASH_ROWS = 8
HASH_COLUMNS = HASH_ROWS + 1


def _area_resize_matrix(source: int, target: int) -> np.ndarray:
    """(target, source) weights that average each target cell over its share of source pixels."""
    edges = np.linspace(0.0, source, target + 1)
    pixel_starts = np.arange(source)
    overlap = np.clip(
        np.minimum(edges[1:, None], pixel_starts[None, :] + 1)
        - np.maximum(edges[:-1, None], pixel_starts[None, :]),
        0.0,
        None,
    )
    return overlap / overlap.sum(axis=1, keepdims=True)


def dhash(images: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """64-bit difference hashes (uint64) of a stack of grayscale images (n, H, W)."""
    if images.ndim != 3:
        raise ValueError(f"expected a stack of grayscale images (n, H, W), got shape {images.shape}")
    _, height, width = images.shape
    rows = _area_resize_matrix(height, HASH_ROWS).astype(np.float32)
    columns = _area_resize_matrix(width, HASH_COLUMNS).astype(np.float32)
    weights = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)
    hashes = np.empty(len(images), dtype=np.uint64)
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start : start + batch_size], dtype=np.float32)
        small = rows @ (batch @ columns.T)  # (n, 8, 9): area-averaged thumbnails
        bits = (small[:, :, 1:] > small[:, :, :-1]).reshape(len(batch), 64)
        hashes[start : start + len(batch)] = (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
    return hashes


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance of two equally shaped uint64 arrays."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def _bands(distance: int) -> list[tuple[int, int]]:
    """(shift, width) of `distance + 1` bands covering the 64 bits."""
    count = distance + 1
    widths = [64 // count + (1 if i < 64 % count else 0) for i in range(count)]
    shifts = np.cumsum([0, *widths[:-1]])
    return [(int(s), w) for s, w in zip(shifts, widths, strict=True)]


def _band_matches(
    query: np.ndarray, reference: np.ndarray, shift: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (query i, reference j) whose hashes agree exactly on one band."""
    mask = np.uint64((1 << width) - 1) if width < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    query_band = (query >> np.uint64(shift)) & mask
    reference_band = (reference >> np.uint64(shift)) & mask
    order = np.argsort(reference_band, kind="stable")
    sorted_band = reference_band[order]
    lower = np.searchsorted(sorted_band, query_band, side="left")
    upper = np.searchsorted(sorted_band, query_band, side="right")
    counts = upper - lower
    query_index = np.repeat(np.arange(len(query)), counts)
    # position inside each query's run of matches: 0, 1, ..., count-1
    run_offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    reference_index = order[np.repeat(lower, counts) + run_offset]
    return query_index, reference_index


def near_duplicate_pairs(
    query: np.ndarray, reference: np.ndarray, distance: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i, j, d) with Hamming(query[i], reference[j]) = d <= distance.

    Returns three aligned int arrays, sorted by (i, d, j), without repeated pairs.
    """
    empty = np.empty(0, dtype=np.int64)
    if len(query) == 0 or len(reference) == 0:
        return empty, empty, empty
    pairs_i, pairs_j = [], []
    for shift, width in _bands(distance):
        i, j = _band_matches(query, reference, shift, width)
        keep = hamming(query[i], reference[j]) <= distance
        pairs_i.append(i[keep])
        pairs_j.append(j[keep])
    packed = np.unique(np.concatenate(pairs_i) * len(reference) + np.concatenate(pairs_j))
    i, j = np.divmod(packed, len(reference))
    d = hamming(query[i], reference[j])
    order = np.lexsort((j, d, i))
    return i[order], j[order], d[order]
