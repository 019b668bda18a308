"""Issue #23: `ferflow validate`'s console says each finding once, short, the finding first
(then what was expected); stdout holds where the report is, not a Markdown table.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np

from ferflow.data.ingest import ingest
from tests.conftest import PARAMS_FILE, small_params
from tests.data.factories import write_fer_folder, write_image

LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (ERROR|WARNING) +ferflow\.contract\.validation: (.*)$")
MAX_LINE = 400  # characters of a finding's message (the old lines reached ~1,000)


def test_validate_prints_each_finding_once_finding_first(tmp_path):
    # given a prepared dataset with blank images (a warning) and too few rows (an error)
    raw = write_fer_folder(tmp_path / "faces", train_per_class=8, test_per_class=3)
    for n in range(5):
        write_image(raw / "train" / "happy" / f"Training_blank_{n}.jpg", np.full((48, 48), 128, np.uint8))
    ingest(raw, tmp_path / "prepared", small_params(), workers=1)
    # when `ferflow validate` runs in its own process
    done = subprocess.run(
        [sys.executable, "-m", "ferflow.cli", "validate", "prepared", "--params", str(PARAMS_FILE)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # then it failed, with one short line per failed check, the finding before the expectation
    assert done.returncode == 1, done.stderr
    report = json.loads((tmp_path / "reports" / "validation.json").read_text())
    failed = {c["id"]: c["description"] for c in report["checks"] if c["status"] in ("failed", "warning")}
    assert {"blank_images", "row_count"} <= set(failed)
    findings = [m.group(2) for line in done.stderr.splitlines() if (m := LOG_LINE.match(line))]
    assert sorted(f.split(":")[0] for f in findings) == sorted(failed), done.stderr
    for finding in findings:
        check = finding.split(":")[0]
        assert finding.endswith(f"; expected {failed[check]}"), finding
        assert len(finding) <= MAX_LINE, finding
    blank = next(f for f in findings if f.startswith("blank_images: "))
    assert blank.startswith("blank_images: blank 5, per_split "), blank
    # and nothing else repeats them: stdout says where the report is
    assert done.stdout.splitlines() == [
        "report: reports/validation.json",
        "Data Docs: reports/data_docs/index.html",
    ]
    assert sum(line.count("blank_images") for line in done.stderr.splitlines()) == 1, done.stderr
