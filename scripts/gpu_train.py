"""Train the from-scratch profile on a GPU worker in one time-boxed run (H200, JAX or PyTorch).

What it does, in order, and writes to `--out` (the device tool's $OUT):

1. ingests the real zip with ferflow's own ingest (before JAX starts: ingest forks workers);
2. loads profiles/gpu.yaml (+ `--set` overrides): the from-scratch DenseNet, batch 256, bf16,
   `finetune.epochs: auto`, the XLA flags; points the JAX compilation cache at `--cache` (or
   $FERFLOW_COMPILATION_CACHE, or the profile's folder);
3. builds the DenseNet and runs ferflow's `fine_tune` (full batches only, augmentation in the
   compiled step, AdamW, the cosine schedule) with `finetune.time_budget_s` set to what is
   left of `--budget-s` after `--reserve-s`: the epochs are planned from the steady epoch
   time and the schedule ends with the budget (ferflow.training.budget);
4. evaluates PublicTest with flip test-time augmentation (ferflow's `predict_probabilities`
   and `compute_metrics`);
5. writes `summary.json` (timings: first step, images/s, per-epoch records, test metrics,
   the compiles of each step function, the epochs planned and run) and the weights as
   float32 arrays in `model.weights` order, in parts of 15 MB (`weights.part0..N`):
   `scripts/gpu_weights_to_keras.py` turns them back into a `.keras` model that
   `ferflow evaluate --model` accepts.

Run on the device machine from the repo root, e.g. (docs/training.md, "On a GPU worker"):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl
    PYTHONPATH=/tmp/site:src KERAS_BACKEND=jax python3 scripts/gpu_train.py \\
        --zip .gpu/fer2013.zip --budget-s 480 --out $OUT

Dry run on a CPU (JAX): `--subset 300 --set model.input_size=32 --set train.batch_size=64
--set finetune.epochs=2`: one compile of each step function.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

T0 = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

# keras is imported before ingest, as the probe did: importing it does not start JAX's
# backend; the first device use (after ingest's worker processes are gone) does.
import keras  # noqa: E402
import numpy as np  # noqa: E402

PART_BYTES = 15 * 1024 * 1024


class Summary:
    """A JSON file rewritten after every note, so a killed run still reports what it did."""

    def __init__(self, out: Path) -> None:
        self.path, self.data = out / "summary.json", {}

    def note(self, key: str, value: object) -> None:
        self.data[key] = value
        print(f"[{time.perf_counter() - T0:7.1f}s] {key}: {value}", flush=True)
        self.path.write_text(json.dumps(self.data, indent=1, default=str))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", required=True, help="the FER2013 zip (folder layout)")
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu-out"), help="results folder")
    parser.add_argument("--budget-s", type=float, default=480.0, help="the whole script's wall-clock budget")
    parser.add_argument("--reserve-s", type=float, default=60.0, help="kept for evaluation and writing")
    parser.add_argument("--cache", default=None, help="JAX compilation cache folder")
    parser.add_argument("--subset", type=int, default=0, help="train rows (0: all); for dry runs")
    parser.add_argument("--profile", default=str(REPO / "profiles" / "gpu.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser.parse_args(argv)


def subset(split: tuple, rows: int) -> tuple:
    pick = np.random.default_rng(0).permutation(len(split[0]))[:rows]
    return tuple(a[pick] for a in split)


def write_parts(model, out: Path) -> int:
    """model.weights as float32 arrays (one npz), split into files of PART_BYTES."""
    arrays = {
        f"w{i}": np.asarray(keras.ops.convert_to_numpy(v), "float32") for i, v in enumerate(model.weights)
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    blob = buffer.getvalue()
    for index, start in enumerate(range(0, len(blob), PART_BYTES)):
        (out / f"weights.part{index}").write_bytes(blob[start : start + PART_BYTES])
    return len(blob)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = Summary(out)

    from ferflow.config import load_params
    from ferflow.data.dataset import load_prepared
    from ferflow.data.ingest import ingest

    overrides = list(args.overrides)  # the GPU settings themselves live in profiles/gpu.yaml
    params = load_params(args.profile, overrides)
    summary.note("overrides", overrides)
    prepared = Path("/tmp/ferflow-gpu-prepared")
    started = time.perf_counter()
    if not (prepared / "images.npy").exists():
        ingest(Path(args.zip), prepared, params)
    summary.note("ingest_s", round(time.perf_counter() - started, 1))

    from ferflow.contract.validation import training_mask
    from ferflow.evaluation.evaluate import compute_metrics, predict_probabilities
    from ferflow.training.model import build_model
    from ferflow.training.runtime import configure_compilation_cache, configure_runtime, count_compiles
    from ferflow.training.train import fine_tune, training_splits

    summary.note("backend", f"{keras.backend.backend()} (keras {keras.__version__})")
    data = load_prepared(prepared)
    train, val = training_splits(data, training_mask(data, params))  # validate's policies, no report
    test = data.split("test")
    if args.subset:
        train, val, test = (
            subset(train, args.subset),
            subset(val, args.subset // 4),
            subset(test, args.subset // 4),
        )
    summary.note("sizes", {"train": len(train[0]), "val": len(val[0]), "test": len(test[0])})
    configure_runtime(params)
    cache = configure_compilation_cache(args.cache or params.runtime.compilation_cache)
    summary.note("compilation_cache", str(cache))
    if keras.backend.backend() == "jax":
        import jax

        summary.note("devices", [str(d) for d in jax.devices()])
    summary.note("xla_flags", os.environ.get("XLA_FLAGS", ""))

    started = time.perf_counter()
    model = build_model(params.model, params.base.image_size, len(params.base.classes), seed=params.base.seed)
    summary.note("build_s", round(time.perf_counter() - started, 1))

    window = args.budget_s - args.reserve_s - (time.perf_counter() - T0)
    params = params.model_copy(
        update={"finetune": params.finetune.model_copy(update={"time_budget_s": window})}
    )
    summary.note("train_window_s", round(window, 1))
    clock = StepClock(summary, len(train[0]))
    started = time.perf_counter()
    with count_compiles() as compiles:
        records = fine_tune(model, train, val, params, Path("/tmp/ferflow-gpu-backup"), 0, [clock])
    summary.note("train_s", round(time.perf_counter() - started, 1))
    summary.note("compiles", {k: v for k, v in compiles.items() if k.endswith("_step)")})
    planned = records[-1].get("epochs_planned", params.finetune.epochs) if records else 0
    summary.note("epochs_run", f"{len(records)} of {planned} planned")
    summary.note("epochs_planned", planned)
    summary.note("final_learning_rate", records[-1].get("learning_rate") if records else None)

    started = time.perf_counter()
    predict = lambda batch: model.predict_on_batch(batch)  # noqa: E731
    probs = predict_probabilities(predict, test[0], 512, tta_flip=params.evaluate.tta_flip)
    metrics = compute_metrics(test[1], probs, params.base.classes)
    summary.note("evaluate_s", round(time.perf_counter() - started, 1))
    summary.note(
        "public_test",
        {k: round(float(metrics[k]), 4) for k in ("accuracy", "macro_f1", "weighted_f1")}
        | {"tta_flip": params.evaluate.tta_flip, "n": len(test[0])},
    )
    summary.note("weights_bytes", write_parts(model, out))
    summary.note("model_overrides", [o for o in overrides if o.startswith(("model.", "base."))])
    summary.note("total_s", round(time.perf_counter() - T0, 1))
    return 0


class StepClock(keras.callbacks.Callback):
    """The first step's wall time (compile included), per-epoch seconds and images/s."""

    # Keras calls it from a worker thread on JAX, after the step's loss reached the host: no
    # sync on the training loop's thread (the first step's time is when its result was ready)
    async_safe = True

    def __init__(self, summary: Summary, rows: int) -> None:
        super().__init__()
        self.summary, self.rows = summary, rows
        self.epochs: list[dict] = []
        self.started = self.epoch_started = time.perf_counter()
        self.first_step: float | None = None

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.first_step is None:
            self.first_step = time.perf_counter() - self.started
            self.summary.note("first_step_s", round(self.first_step, 1))

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.epoch_started
        record = {"epoch": epoch + 1, "s": round(seconds, 2), "img_per_s": round(self.rows / seconds)}
        record |= {k: round(float(v), 4) for k, v in (logs or {}).items()}
        self.epochs.append(record)
        self.summary.note("epochs", self.epochs)
        steady = sorted(e["img_per_s"] for e in self.epochs[1:])  # epoch 1 includes compiling
        if steady:
            self.summary.note("train_img_per_s_median", steady[len(steady) // 2])


if __name__ == "__main__":
    sys.exit(main())
