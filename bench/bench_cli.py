"""How fast the CLI fails on bad input: before TensorFlow, scikit-learn or MLflow load.

Times (wall, subprocess) commands that must fail at once against the cheapest command,
`ferflow --help`, measured in the same run, and prints the ratio:

    .venv/bin/python bench/bench_cli.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FERFLOW = [sys.executable, "-m", "ferflow.cli"]
ROUNDS = 3


def wall(args: list[str], cwd: Path) -> tuple[float, int]:
    times, code = [], 0
    for _ in range(ROUNDS):
        started = time.perf_counter()
        code = subprocess.run([*FERFLOW, *args], cwd=cwd, capture_output=True, check=False).returncode
        times.append(time.perf_counter() - started)
    return statistics.median(times), code


def main() -> int:
    params = ["--params", str(REPO / "params.yaml")]
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        (cwd / "faces").mkdir()
        cases = {
            "ferflow --help (baseline)": ["--help"],
            "train --data /missing": ["train", "--data", "/missing", *params],
            "evaluate --model models:/bad": [
                "evaluate",
                "--model",
                "models:/bad",
                "--data",
                "faces",
                *params,
            ],
            "predict --model missing.keras": ["predict", "faces", "--model", "missing.keras", *params],
            "register, tracking server down": [
                "register",
                *params,
                "--set",
                "tracking.tracking_uri=http://127.0.0.1:9",
            ],
        }
        baseline = None
        for name, args in cases.items():
            seconds, code = wall(args, cwd)
            baseline = baseline or seconds
            print(f"{name:34s} {seconds:6.2f} s  exit {code}  {seconds / baseline:5.2f}x baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
