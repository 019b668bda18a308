"""How fast a training run stops on Ctrl-C, as a ratio of one training step.

Starts `ferflow finetune` in a workspace whose data and head.keras are ready (by default
demo/, after `make demo`), waits until the second epoch is under way, sends SIGINT at a
random point inside an epoch and times, from the signal:

- the acknowledgement line (`ferflow: SIGINT received: stopping ...`): the handler runs when the current
  training step returns, so this is when training stopped;
- the process's exit: after the unwinding (runs marked KILLED, the backup's write).

Both are printed against the length of one step (the epoch before: its seconds over its
batches). The issue's bar: acknowledged within 2 s, training stopped within one step.

    .venv/bin/python bench/bench_interrupt.py [--workspace demo] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(r"finetune epoch (\d+): .*\(([\d.]+)s\)")


def batches_per_epoch(workspace: Path) -> int:
    sys.path.insert(0, str(REPO / "src"))
    import pandas as pd

    from ferflow.config import load_params

    params = load_params(workspace / "params.yaml")
    manifest = pd.read_csv(workspace / params.data.prepared / "manifest.csv")
    return math.ceil(int((manifest["split"] == "train").sum()) / params.train.batch_size)


def one_stop(workspace: Path, batches: int, rng: random.Random) -> dict[str, float]:
    ferflow = str(Path(sys.executable).with_name("ferflow"))
    process = subprocess.Popen(
        [ferflow, "finetune", "--set", "finetune.epochs=50"],
        cwd=workspace,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    seen: list[tuple[float, str]] = []
    epochs: list[tuple[float, float]] = []  # (when seen, the epoch's seconds)

    def read() -> None:
        for line in process.stderr:  # type: ignore[union-attr]
            now = time.perf_counter()
            seen.append((now, line))
            match = EPOCH_LINE.search(line)
            if match:
                epochs.append((now, float(match.group(2))))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.perf_counter() + 900
    while len(epochs) < 2 and process.poll() is None and time.perf_counter() < deadline:
        time.sleep(0.05)
    if len(epochs) < 2:
        process.kill()
        said = "".join(text for _, text in seen)[-2000:]
        raise SystemExit(f"ferflow finetune in {workspace} ran no 2 epochs:\n{said}")
    _, epoch_s = epochs[-1]
    step_s = epoch_s / batches
    time.sleep(rng.uniform(0.2, 0.8) * epoch_s)  # somewhere inside the next epoch
    sent = time.perf_counter()
    process.send_signal(signal.SIGINT)
    process.wait(timeout=300)
    exited = time.perf_counter()
    reader.join(timeout=5)
    acknowledged = next(t for t, line in seen if t >= sent and "received: stopping" in line)
    return {"step_s": step_s, "ack_s": acknowledged - sent, "exit_s": exited - sent, "rc": process.returncode}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=REPO / "demo")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    workspace = args.workspace.resolve()
    if not (workspace / "models" / "head.keras").exists():
        print(f"no {workspace}/models/head.keras: run `make demo` first (or pass --workspace)")
        return 0
    batches = batches_per_epoch(workspace)
    rng = random.Random(0)
    print(f"workspace {workspace}, {batches} batches an epoch")
    print(f"{'run':>3} {'step':>7} {'ack':>7} {'ack/step':>9} {'exit':>7} {'exit/step':>10} rc")
    for run in range(1, args.repeats + 1):
        r = one_stop(workspace, batches, rng)
        print(
            f"{run:>3} {r['step_s']:>6.3f}s {r['ack_s']:>6.3f}s {r['ack_s'] / r['step_s']:>9.2f} "
            f"{r['exit_s']:>6.2f}s {r['exit_s'] / r['step_s']:>10.1f} {int(r['rc'])}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
