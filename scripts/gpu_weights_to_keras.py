"""Turn the weights `scripts/gpu_train.py` wrote (weights.part0..N) into a `.keras` model that
`ferflow evaluate --model` accepts.

    .venv/bin/python scripts/gpu_weights_to_keras.py RESULTS_DIR models/gpu.keras

It rebuilds the model from the profile with the `model.`/`base.` overrides recorded in
RESULTS_DIR/summary.json (so the architecture matches what was trained), loads the arrays
in `model.weights` order, checks every shape, and saves. Weights move between backends
(JAX on the GPU, TensorFlow here) through that order.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="folder with weights.part* and summary.json")
    parser.add_argument("out", type=Path, help="the .keras file to write")
    parser.add_argument("--profile", default=str(REPO / "profiles" / "from-scratch.yaml"))
    args = parser.parse_args(argv)

    from ferflow.config import load_params
    from ferflow.training.model import build_model

    parts = sorted(args.results.glob("weights.part*"), key=lambda p: int(p.name.rsplit("part", 1)[1]))
    if not parts:
        print(f"error: no weights.part* files in {args.results}", file=sys.stderr)
        return 2
    summary = json.loads((args.results / "summary.json").read_text())
    params = load_params(args.profile, summary.get("model_overrides", []))
    arrays = np.load(io.BytesIO(b"".join(p.read_bytes() for p in parts)))
    model = build_model(params.model, params.base.image_size, len(params.base.classes))
    if len(model.weights) != len(arrays.files):
        print(
            f"error: {args.results} holds {len(arrays.files)} arrays, the model has {len(model.weights)}: "
            "rebuild with the same model.* overrides the GPU run used",
            file=sys.stderr,
        )
        return 2
    for index, variable in enumerate(model.weights):
        value = arrays[f"w{index}"]
        if tuple(variable.shape) != value.shape:
            print(
                f"error: array {index} is {value.shape}, {variable.path} is {variable.shape}", file=sys.stderr
            )
            return 2
        variable.assign(value.astype(variable.dtype))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    print(
        f"wrote {args.out}: {len(model.weights)} arrays; test it with `ferflow evaluate --model {args.out}`"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
