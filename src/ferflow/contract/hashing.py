"""Perceptual hashes and a fast near-duplicate search over a whole images.npy.

A re-encoded, slightly brightened or resaved copy of an image has different bytes (so a
different sha256) but almost the same *perceptual hash* (pHash): the image is shrunk to
32x32, its 2-D DCT taken, and each of the 64 lowest-frequency coefficients gives one bit
(above or below their median). JPEG re-encoding changes high frequencies, so a copy
differs in a few bits; unrelated faces differ in about half. pHash was measured more
robust to JPEG quality changes than dHash on these faces (<= 4 bits down to quality 30).

Searching 3,600 test hashes against 28,700 train hashes pairwise would be 100M Hamming
distances. Instead we use the pigeonhole principle (multi-index hashing, Norouzi et al.
2012): split the 64 bits into `distance + 1` bands; two hashes within `distance` bits
agree exactly on at least one band. Exact band matches are found by sorting, then only
those candidate pairs get a full Hamming distance, and a last check that their 16x16
thumbnails correlate (faces with similar layouts can share a hash by chance).
"""

from __future__ import annotations

import numpy as np

PHASH_SIDE = 32
CONFIRM_SIDE = 16
# A re-encoded or re-brightened copy correlates > 0.98 with its original; unrelated
# faces that share a hash by chance stay well below.
MIN_CORRELATION = 0.95


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


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II basis (n, n): row k is the k-th cosine."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    basis = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    basis[0] /= np.sqrt(2.0)
    return basis


def thumbnails(images: np.ndarray, side: int) -> np.ndarray:
    """Area-averaged (n, side, side) float32 thumbnails of (n, H, W) images."""
    rows = _area_resize_matrix(images.shape[1], side).astype(np.float32)
    columns = _area_resize_matrix(images.shape[2], side).astype(np.float32)
    return rows @ np.asarray(images, dtype=np.float32) @ columns.T


def phash(images: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """64-bit perceptual hashes (uint64) of a stack of grayscale images (n, H, W)."""
    if images.ndim != 3:
        raise ValueError(f"expected a stack of grayscale images (n, H, W), got shape {images.shape}")
    low = _dct_matrix(PHASH_SIDE)[:8].astype(np.float32)  # the 8 lowest frequencies
    weights = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)
    hashes = np.empty(len(images), dtype=np.uint64)
    for start in range(0, len(images), batch_size):
        small = thumbnails(images[start : start + batch_size], PHASH_SIDE)
        coefficients = (low @ small @ low.T).reshape(len(small), 64)
        # median without the DC term, which only says how bright the image is
        bits = coefficients > np.median(coefficients[:, 1:], axis=1, keepdims=True)
        hashes[start : start + len(small)] = (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
    return hashes


def thumbnail_correlation(images: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of the 16x16 thumbnails of image pairs (images[a], images[b])."""
    if len(a) == 0:
        return np.empty(0, dtype=np.float32)
    x = thumbnails(images[a], CONFIRM_SIDE).reshape(len(a), -1)
    y = thumbnails(images[b], CONFIRM_SIDE).reshape(len(b), -1)
    x -= x.mean(axis=1, keepdims=True)
    y -= y.mean(axis=1, keepdims=True)
    denominator = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    return (x * y).sum(axis=1) / np.maximum(denominator, 1e-6)


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
