"""How much the train copies in FER2013's test split flatter a model: `validate.leakage`.

Scores one trained model on the PublicTest images that copy a train image (exactly, or
nearly: pHash, as the data contract finds them) and on the rest, and prints both with
their ratio. A model trained with the copies in train (`leakage: warn`, the published
protocol) has seen those faces; the rest is what `leakage: drop` is judged on.

    FERFLOW_FER2013_PREPARED=data/prepared FERFLOW_MODEL=models/model.keras \\
        FERFLOW_PARAMS=profiles/from-scratch.yaml .venv/bin/python scripts/leakage_effect.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from ferflow.config import load_params
from ferflow.contract.tables import image_table
from ferflow.data.dataset import load_prepared
from ferflow.evaluation.evaluate import compute_metrics, load_keras_predict_fn, predict_probabilities


def main() -> int:
    prepared_dir = Path(os.environ.get("FERFLOW_FER2013_PREPARED", "data/prepared"))
    model_path = Path(os.environ.get("FERFLOW_MODEL", "models/model.keras"))
    if not (prepared_dir / "images.npy").exists() or not model_path.exists():
        print(f"skipped: needs a prepared FER2013 at {prepared_dir} and a model at {model_path}")
        return 0
    params = load_params(os.environ.get("FERFLOW_PARAMS", "params.yaml"))
    prepared = load_prepared(prepared_dir)
    table = image_table(prepared, params)
    test = (table["split"] == "test").to_numpy()
    copies = (table["leak_of_train"] | table["near_duplicate_of_train"]).to_numpy() & test
    labels = table["label_index"].to_numpy().astype(np.int64)
    started = time.perf_counter()
    probs = predict_probabilities(
        load_keras_predict_fn(model_path, 256), prepared.images[test], 256, params.evaluate.tta_flip
    )
    by_row = np.zeros((len(table), probs.shape[1]))
    by_row[test] = probs
    rows = {"all test": test, "copies of train": copies, "unseen": test & ~copies}
    scores = {}
    for name, mask in rows.items():
        metrics = compute_metrics(labels[mask], by_row[mask], params.base.classes)
        scores[name] = metrics["accuracy"]
        accuracy, macro_f1 = metrics["accuracy"], metrics["macro_f1"]
        print(f"{name:16s} n={int(mask.sum()):5d}  accuracy {accuracy:.4f}  macro F1 {macro_f1:.4f}")
    print(f"copies / unseen accuracy: {scores['copies of train'] / scores['unseen']:.2f}x")
    print(f"(predicted in {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
