"""Validation vs ingest on the real FER2013 zip, measured in the same process.

Baseline: `ferflow.data.ingest.ingest` of the zip (reading and decoding 32,298 JPEGs).
Measured: `ferflow.contract.validation.validate_dataset` on its output (tables, pHash near-duplicate
search, the Great Expectations suite and Data Docs). Target: validation <= ingest.

    FERFLOW_FER2013_ZIP=../shared/data/fer2013.zip .venv/bin/python bench/bench_validate.py

The one-off `import great_expectations` is timed separately: it is paid once per process.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from ferflow.config import load_params
from ferflow.contract.hashing import near_duplicate_pairs, phash
from ferflow.contract.validation import validate_dataset
from ferflow.data.dataset import load_prepared
from ferflow.data.ingest import ingest

REPO = Path(__file__).resolve().parents[1]


def timed(label: str, function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    seconds = time.perf_counter() - start
    print(f"{label:<34} {seconds:8.2f} s")
    return result, seconds


def main() -> int:
    zip_path = Path(os.environ.get("FERFLOW_FER2013_ZIP", REPO.parent / "shared/data/fer2013.zip"))
    if not zip_path.is_file():
        print(f"skip: {zip_path} not found (set FERFLOW_FER2013_ZIP)")
        return 0
    params = load_params(REPO / "params.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        timed("import great_expectations (once)", __import__, "great_expectations")
        _, ingest_s = timed("ingest (baseline)", ingest, zip_path, work / "prepared", params)
        report, validate_s = timed(
            "validate_dataset (measured)", validate_dataset, work / "prepared", params, work / "reports"
        )
        prepared = load_prepared(work / "prepared")
        hashes, _ = timed("  of which: pHash of all images", phash, prepared.images)
        test = (prepared.manifest["split"] == "test").to_numpy()
        timed("  of which: near-duplicate search", near_duplicate_pairs, hashes[test], hashes[~test], 4)
    print(
        f"images: {len(prepared.images)}; contract passed: {report.passed}; "
        f"errors {[c.id for c in report.errors]}, warnings {[c.id for c in report.warnings]}"
    )
    print(f"ratio validate / ingest: {validate_s / ingest_s:.2f} (target <= 1.00)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
