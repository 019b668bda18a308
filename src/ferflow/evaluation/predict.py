"""Batch prediction on image files: `ferflow predict IMAGE_OR_DIR...`.

Any image (JPEG, PNG, ..., colour or not, any size) is converted exactly as ingest
converts training images (`ferflow.data.images.decode_canonical`: grayscale, then a
bilinear resize to 48x48) and given to the model as float32 pixels 0..255. Files are
decoded in a thread pool (PIL releases the GIL while decoding) that runs ahead of the
model, and the model sees chunks of `CHUNK` images, so thousands of files cost little more
than the model's own batched predict.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from ferflow.config import Params
from ferflow.data.images import IMAGE_SUFFIXES, BadImage, decode_canonical
from ferflow.errors import FerflowError
from ferflow.progress import bar
from ferflow.training.batching import predict_padded

log = logging.getLogger(__name__)

# The study's CLASS_LABELS_EMOJIS for Anger, Disgust, Fear, Happy, Neutral, Sadness, Surprise
# (its 8th emoji belongs to no class).
EMOJIS = ("😡", "😬", "😱", "😊", "😐", "😞", "😓")
CHUNK = 1024  # images per model call: large enough to amortise the call, small in memory
FORMATS = ("table", "json", "csv")
# The CSV columns before the per-class probabilities: the JSON keys of the same fields.
CSV_FIELDS = ("path", "class_name", "label", "confidence")


class PredictError(FerflowError, ValueError):
    """An input cannot be predicted; the message names the file."""


@dataclass(frozen=True)
class Prediction:
    path: str
    class_name: str  # folder name, e.g. "happy"
    label: str  # display label, e.g. "Happy"
    emoji: str
    confidence: float
    probabilities: dict[str, float]  # class name -> probability, in class order


def default_model(params: Params) -> str:
    return f"models:/{params.registry.model_name}@champion"


def list_images(inputs: Sequence[str | Path], check_named: bool = True) -> list[Path]:
    """The image files named or found (recursively, sorted) under the given folders.

    `check_named`: a file named on the command line must look like an image (its header
    read, nothing decoded), so `predict params.yaml` fails before any model loads."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                log.warning("%s holds no image files (%s)", item, ", ".join(sorted(IMAGE_SUFFIXES)))
            files += found
        elif item.is_file():
            if check_named:
                _require_image_header(item)
            files.append(item)
        else:
            raise PredictError(f"{item} does not exist; pass image files or folders of images")
    if not files:
        raise PredictError(f"no images found in {', '.join(map(str, inputs))}")
    return files


def _require_image_header(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    hint = f"pass image files ({', '.join(sorted(IMAGE_SUFFIXES))}) or folders of them, or --skip-bad"
    try:
        with Image.open(path):  # reads the header only
            pass
    except UnidentifiedImageError:
        raise PredictError(f"{path} is not an image (PIL cannot identify the format); {hint}") from None
    except Image.DecompressionBombError as err:
        raise PredictError(f"{path}: decompression bomb: {err}; {hint}") from None
    except (OSError, SyntaxError, ValueError) as err:  # unreadable, or a broken header
        raise PredictError(f"{path}: cannot read the image header: {err}; {hint}") from None


def decode_file(path: Path, size: int, max_pixels: int) -> np.ndarray:
    """One file as a (size, size) uint8 array, converted like training images."""
    try:
        return decode_canonical(path.read_bytes(), size, max_pixels).pixels
    except (BadImage, OSError) as err:
        raise PredictError(f"{path}: {err}; remove the file or pass --skip-bad") from None


def iter_decoded(
    paths: Sequence[Path], size: int, max_pixels: int, skip_bad: bool = False, workers: int | None = None
) -> Iterator[tuple[list[Path], np.ndarray]]:
    """(paths, images (n, size, size) uint8) chunks of CHUNK images, decoded in a thread pool."""
    workers = workers or min(8, (os.cpu_count() or 2) * 2)

    def safe_decode(path: Path) -> np.ndarray | None:
        try:
            return decode_file(path, size, max_pixels)
        except PredictError as err:
            if not skip_bad:
                raise
            log.warning("skipped %s", err)
            return None

    with ThreadPoolExecutor(workers) as pool:
        # map() submits every file at once, so decoding runs ahead while the model works.
        decoded = zip(paths, pool.map(safe_decode, paths), strict=True)
        while chunk := list(islice(decoded, CHUNK)):
            kept = [(p, img) for p, img in chunk if img is not None]
            if kept:
                yield [p for p, _ in kept], np.stack([img for _, img in kept])


def predict_files(
    paths: Sequence[Path], predict_fn: Any, params: Params, skip_bad: bool = False
) -> list[Prediction]:
    """Predict every file; `predict_fn(batch (n,S,S) float32) -> (n,7)`."""
    size, classes = params.base.image_size, params.base.classes
    predictions: list[Prediction] = []
    with bar(total=len(paths), desc="predict", unit="img") as progress:
        for chunk_paths, images in iter_decoded(paths, size, params.ingest.max_image_pixels, skip_bad):
            # fixed-size batches: the model's compiled predict step compiles once
            probs = predict_padded(predict_fn, images.astype(np.float32), params.evaluate.batch_size)
            if probs.shape != (len(images), len(classes)):
                raise PredictError(
                    f"the model returned shape {probs.shape} for {len(images)} images; expected "
                    f"({len(images)}, {len(classes)}): is it a FER model?"
                )
            predictions += [
                _prediction(printable_path(p), row, params) for p, row in zip(chunk_paths, probs, strict=True)
            ]
            progress.update(len(chunk_paths))
    return predictions


def printable_path(path: Path) -> str:
    """`path` as valid UTF-8 text: bytes of a file name that are not UTF-8 shown as `\\xe9`
    (printing the name as it is fails, or writes JSON and CSV that are not UTF-8)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _prediction(path: str, probs: np.ndarray, params: Params) -> Prediction:
    best = int(np.argmax(probs))
    emojis = EMOJIS if len(params.base.classes) == len(EMOJIS) else ("",) * len(params.base.classes)
    return Prediction(
        path=path,
        class_name=params.base.classes[best],
        label=params.base.class_labels[best],
        emoji=emojis[best],
        confidence=float(probs[best]),
        probabilities={c: float(p) for c, p in zip(params.base.classes, probs, strict=True)},
    )


def format_predictions(predictions: Sequence[Prediction], fmt: str) -> str:
    """`table` for people, `json` (a list of objects) or `csv` for programs.

    JSON and CSV use the same field names: path, class_name, label, confidence, and the
    probabilities (a `probabilities` object in JSON, one column per class in CSV).
    """
    if fmt == "json":
        return json.dumps([vars(p) for p in predictions], indent=2, ensure_ascii=False)
    classes = list(predictions[0].probabilities) if predictions else []
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*CSV_FIELDS, *classes])
        for p in predictions:
            writer.writerow(
                [p.path, p.class_name, p.label, f"{p.confidence:.4f}"]
                + [f"{v:.4f}" for v in p.probabilities.values()]
            )
        return out.getvalue().rstrip("\n")
    if fmt != "table":
        raise PredictError(f"unknown format {fmt!r}; use one of {FORMATS}")
    width = max([len(p.path) for p in predictions] + [4])
    header = f"{'path':<{width}}  {'label':<10} {'conf':>5}  " + " ".join(f"{c[:8]:>8}" for c in classes)
    rows = [
        f"{p.path:<{width}}  {p.emoji} {p.label:<8} {p.confidence:>5.2f}  "
        + " ".join(f"{v:>8.3f}" for v in p.probabilities.values())
        for p in predictions
    ]
    return "\n".join([header, *rows])
