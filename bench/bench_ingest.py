"""Benchmark: `ferflow ingest` of the real FER2013 zip against a bare PIL decode loop.

Baseline: read every JPEG of the zip and decode it (open + convert("L") + np.asarray),
nothing else. Measured: the full ingest (layout checks, decode, sha256, statistics, the
validation split, writing images.npy / manifest.csv / dataset.json). Both run in this
process, one after the other, on the same files. Target: ingest at least 0.5x the speed of
the bare loop.

    FERFLOW_FER2013_ZIP=../shared/data/fer2013.zip .venv/bin/python bench/bench_ingest.py
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from ferflow.config import load_params
from ferflow.data.ingest import ingest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ZIP = REPO.parent / "shared" / "data" / "fer2013.zip"


def bare_decode_loop(zip_path: Path) -> int:
    """Read and decode every .jpg member; the least work any ingest must do."""
    count = 0
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            if info.filename.endswith(".jpg"):
                with Image.open(io.BytesIO(archive.read(info))) as image:
                    np.asarray(image.convert("L"))
                count += 1
    return count


def main() -> int:
    zip_path = Path(os.environ.get("FERFLOW_FER2013_ZIP", DEFAULT_ZIP))
    if not zip_path.is_file():
        print(f"bench_ingest: {zip_path} not found; set FERFLOW_FER2013_ZIP to the FER2013 zip")
        return 1
    logging.basicConfig(level="WARNING")
    params = load_params(REPO / "params.yaml")
    zip_path.read_bytes()  # warm the page cache so neither side pays the first disk read

    start = time.perf_counter()
    count = bare_decode_loop(zip_path)
    bare = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as out_dir:
        start = time.perf_counter()
        dataset = ingest(zip_path, Path(out_dir), params)
        full = time.perf_counter() - start
    assert len(dataset.images) == count, f"ingest kept {len(dataset.images)} of {count} images"

    ratio = bare / full
    print(f"images:            {count}")
    print(f"bare decode loop:  {bare:7.2f} s  {count / bare:8.0f} images/s  (baseline)")
    print(f"full ingest:       {full:7.2f} s  {count / full:8.0f} images/s  (workers: auto)")
    print(f"speed ratio:       {ratio:7.2f}x  of the bare loop (target >= 0.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
