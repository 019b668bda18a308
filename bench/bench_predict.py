"""Benchmark `ferflow predict` end to end against the model's own batched predict.

Extracts N real JPEGs from the FER2013 zip (FERFLOW_FER2013_ZIP, default
/work/shared/data/fer2013.zip) into a temporary folder, then measures in one process:

- baseline: `model.predict(images, batch_size)` on the same images already decoded into one
  array (no file I/O, no decoding);
- ferflow: `predict_files` on the file paths: listing, reading, decoding and converting in
  the thread pool, chunked prediction, building the result rows.

Prints both throughputs and their ratio (target >= 0.8), and the single-image latency p50
of `predict_files` on one file against `model.predict` on one preloaded image.

The model is models/model.keras when it exists (or FERFLOW_BENCH_MODEL), else a freshly
built study DenseNet169 without pretrained weights (same architecture and cost).

    .venv/bin/python bench/bench_predict.py [N]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from ferflow.config import load_params
from ferflow.evaluation.predict import decode_file, list_images, predict_files

REPEATS = 2
LATENCY_SAMPLES = 30


def extract_jpegs(zip_path: Path, out_dir: Path, n: int) -> list[Path]:
    with zipfile.ZipFile(zip_path) as archive:
        names = sorted(m for m in archive.namelist() if m.lower().endswith(".jpg") and "/test/" in m)[:n]
        for name in names:
            archive.extract(name, out_dir)
    return list_images([out_dir])


def load_model(params):
    import keras

    path = Path(os.environ.get("FERFLOW_BENCH_MODEL", "models/model.keras"))
    if path.exists():
        print(f"model: {path}")
        return keras.saving.load_model(path, compile=False)
    from ferflow.training.model import build_model

    print(f"model: freshly built {params.model.backbone} (no {path})")
    return build_model(params.model, params.base.image_size, len(params.base.classes), seed=0)


def best_of(fn, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    zip_path = Path(os.environ.get("FERFLOW_FER2013_ZIP", "/work/shared/data/fer2013.zip"))
    params = load_params("params.yaml", ["model.weights=none"])
    batch = params.evaluate.batch_size
    model = load_model(params)

    def predict_fn(images: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(images, batch_size=batch, verbose=0))

    with tempfile.TemporaryDirectory() as tmp:
        paths = extract_jpegs(zip_path, Path(tmp), n)
        size, max_pixels = params.base.image_size, params.ingest.max_image_pixels
        preloaded = np.stack([decode_file(p, size, max_pixels) for p in paths]).astype(np.float32)
        predict_fn(preloaded[:batch])  # warm-up: trace and compile once

        baseline = best_of(lambda: predict_fn(preloaded))
        ferflow = best_of(lambda: predict_files(paths, predict_fn, params))
        print(f"images: {len(paths)} real FER2013 JPEGs, batch_size {batch}")
        print(
            f"baseline model.predict, preloaded array: {baseline:.2f} s ({len(paths) / baseline:.0f} img/s)"
        )
        print(
            f"ferflow predict_files from files:           {ferflow:.2f} s ({len(paths) / ferflow:.0f} img/s)"
        )
        print(f"throughput ratio (ferflow / baseline): {baseline / ferflow:.2f}  (target >= 0.8)")

        one_file = paths[:1]
        one_image = preloaded[:1]
        file_times, raw_times = [], []
        for _ in range(LATENCY_SAMPLES):
            start = time.perf_counter()
            predict_files(one_file, predict_fn, params)
            file_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            predict_fn(one_image)
            raw_times.append(time.perf_counter() - start)
        print(
            f"single image p50: ferflow {statistics.median(file_times) * 1000:.1f} ms, "
            f"model.predict {statistics.median(raw_times) * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()
