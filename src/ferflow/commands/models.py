"""The commands that look at models and move aliases by hand, outside the pipeline:

- `evaluate_source`: any model (a .keras file or an MLflow URI) on the test images of any
  source ingest reads, into any folder; nothing logged (`ferflow evaluate --model`);
- `predict`, `compare`: `ferflow predict` and `ferflow compare`;
- `promote`, `rollback`, `check_registry`, `aliases`: `ferflow promote` and `ferflow runs check`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ferflow.config import Params
from ferflow.evaluation import evaluate as ev
from ferflow.files import write_json
from ferflow.stages.evaluation import check_model_reference, load_predict_fn, log_summary
from ferflow.stages.layout import Layout
from ferflow.stages.registration import read_json

log = logging.getLogger(__name__)


def evaluate_source(params: Params, model: str, source: Path, out_dir: Path) -> dict[str, Any]:
    """Evaluate any model (path or MLflow URI) on the test images of any source ingest reads.

    A prepared dataset folder is read as is; anything else (folder, zip, fer2013.csv, a
    `<class>/*.jpg` folder) goes through `ferflow.data.ingest.read_source` without writing.
    """
    if not Path(source).exists():
        from ferflow.errors import FerflowError

        raise FerflowError(f"{source} does not exist; pass a prepared dataset or a FER download (--data)")
    predict_fn = load_predict_fn(model, params)  # checks the reference before loading anything
    images, labels, digest = _images_from_source(Path(source), params)
    evaluation = ev.evaluate_model(predict_fn, images, labels, params)
    ev.write_reports(
        evaluation,
        params,
        Path(out_dir),
        None,
        {"model": model, "source": str(source), "manifest_digest": digest},
    )
    log_summary(evaluation.metrics)
    return evaluation.metrics


def _images_from_source(source: Path, params: Params) -> tuple[np.ndarray, np.ndarray, str]:
    from ferflow.data.dataset import IMAGES_FILE, manifest_digest

    if (source / IMAGES_FILE).exists():
        images, labels = ev.test_split(source)
        return images, labels, manifest_digest(source)
    from ferflow.data import ingest

    images, manifest = ingest.read_source(source, params)
    split = manifest["split"].to_numpy()
    # A folder without a split level has no "test" rows: evaluate on every image then.
    mask = split == "test" if (split == "test").any() else np.ones(len(manifest), dtype=bool)
    digest = hashlib.sha256(manifest.to_csv(index=False).encode()).hexdigest()
    return images[mask], manifest["label_index"].to_numpy()[mask].astype(np.int64), digest


def predict(
    inputs: Sequence[str | Path], params: Params, model: str | None = None, skip_bad: bool = False
) -> list[Any]:
    """`ferflow predict`: the emotion of every image under `inputs` (files or folders), by
    `model` (default: the registered champion). The images are listed before the model loads."""
    from ferflow.evaluation import predict as prediction
    from ferflow.tracking import models, reader, store

    paths = prediction.list_images(inputs, check_named=not skip_bad)
    model = model or prediction.default_model(params)
    uri = None
    if models.is_model_uri(model):  # a wrong --model-name fails before anything loads
        check_model_reference(model)
        uri = store.connect(params)
        reader.require_registered(model, store.client(uri))
    predict_fn = load_predict_fn(model, params, uri=uri)
    log.info("predicting %d images with %s", len(paths), model)
    return prediction.predict_files(paths, predict_fn, params, skip_bad=skip_bad)


def compare(a: str | None, b: str | None, params: Params) -> Any:
    """`ferflow compare`: A and B (default champion vs challenger of register.model_name;
    when the challenger was promoted, so both are one version, the previous champion vs
    the champion: what the promotion changed)."""
    from ferflow.evaluation.compare import DEFAULT_A, DEFAULT_B, PROMOTED_FROM, compare_sides
    from ferflow.tracking import reader, store

    uri, name = store.connect(params), params.registry.model_name
    side_a, side_b = reader.read_sides(a or DEFAULT_A, b or DEFAULT_B, uri, name)
    note = None
    if a is None and b is None and side_a.run_id == side_b.run_id:
        previous = reader.read_side_if_any(PROMOTED_FROM, uri, name)
        if previous is not None and previous.run_id != side_b.run_id:
            side_a = previous
            note = f"the challenger is the champion (promoted): A is the {PROMOTED_FROM} it replaced"
    log.info(
        "comparing %s (%s) with %s (%s)", side_a.reference, side_a.run_id, side_b.reference, side_b.run_id
    )
    comparison = compare_sides(side_a, side_b, params.base.classes)
    if note:
        comparison.notes.insert(0, note)
    return comparison


def rollback(params: Params) -> dict[str, Any]:
    """`ferflow promote --rollback`: previous-champion becomes champion (the two swap)."""
    from ferflow.tracking import registry

    return registry.connect(params).rollback()


def promote(params: Params, version: str) -> dict[str, Any]:
    """`ferflow promote --version N`: make version N the champion by hand (no gate)."""
    from ferflow.tracking import registry

    return registry.connect(params).promote(str(version))


def check_registry(params: Params, layout: Layout, repair: bool = False) -> list[Any]:
    """`ferflow runs check`: where the version tags and promotion.json differ from the
    aliases (ferflow.tracking.audit); with `repair`, they are made to follow them."""
    from ferflow.tracking import audit, registry

    promotion = read_json(layout.promotion_file) if layout.promotion_file.exists() else None
    findings, fixed = audit.check(registry.connect(params), promotion, repair)
    if fixed is not None:
        write_json(layout.promotion_file, fixed)
    return findings


def aliases(params: Params) -> dict[str, str | None]:
    """Which version each alias of register.model_name points at (None when unset)."""
    from ferflow.tracking import registry

    return registry.connect(params).aliases()
