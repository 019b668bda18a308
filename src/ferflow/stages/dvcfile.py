"""dvc.yaml, written from the stage table (`ferflow.stages.spec.STAGES`): each stage's
command, its dependencies (its inputs, then the code it runs), the params it reads and its
outputs. `make dvc-yaml` rewrites the file (`python -m ferflow.stages.dvcfile > dvc.yaml`);
tests/unit/test_infra.py fails when the committed dvc.yaml differs from what this writes.

The top of the file (how to use it, the metrics and the plots) is `TOP`, kept here verbatim.
"""

from __future__ import annotations

import sys

from ferflow.stages.spec import STAGES, DvcOut, StageSpec

TOP = """\
# Written from ferflow.stages.STAGES by `make dvc-yaml` (python -m ferflow.stages.dvcfile):
# edit the table in src/ferflow/stages/spec.py, not this file (a test fails when they differ).
#
# The pipeline through the `ferflow` CLI: the same stage functions the Prefect flow runs
# (src/ferflow/stages/). Each stage lists only the params it reads and the code it runs,
# so `dvc repro` reruns exactly what changed: tests/unit/test_architecture.py (code, from
# the import graph) and tests/model/test_stages.py (params, from a recorded run) check
# that STAGES is complete.
#
#   dvc repro                          # run what is stale
#   dvc exp run -S train.epochs=5      # an experiment; compare with `dvc exp show`
#   dvc metrics show / dvc plots show
#
# Registration moves MLflow aliases, a side effect: promotion.json is not cached (so no
# run-cache replay can restore a stale decision without running), and the stage goes
# through `ferflow register`, which refuses to register again a model whose MLflow run
# already has a decision in reports/promotion.json.

metrics:
  - reports/scores.json          # the headline numbers; per class: reports/metrics.json
# Plots are written by the evaluate stage (reports/plots/, names in src/ferflow/files.py).
# Accuracy and loss have their own plot (their scales differ); `epoch` in history.csv is
# the 0-based global epoch of both phases. tests/unit/test_plots.py renders these with
# `dvc plots show --json` on files written by ferflow.evaluation.evaluate.write_reports.
plots:
  - reports/plots/confusion.csv:
      template: confusion
      x: actual
      y: predicted
  - reports/plots/roc.csv:
      template: simple
      x: fpr
      y: tpr
  - accuracy:
      title: Accuracy vs epoch
      x: epoch
      y:
        reports/plots/history.csv: [accuracy, val_accuracy]
  - loss:
      title: Loss vs epoch
      x: epoch
      y:
        reports/plots/history.csv: [loss, val_loss]
  # per-class F1 (bar_horizontal takes one value field; per_class.png has precision,
  # recall and F1 together)
  - per_class_f1:
      template: bar_horizontal
      title: Per-class F1 (test split)
      x: f1
      y:
        reports/plots/per_class.csv: class
  - reports/plots/confusion_matrix.png
  - reports/plots/confusion_matrix_normalized.png
  - reports/plots/roc.png
  - reports/plots/per_class.png
  - reports/plots/accuracy.png
  - reports/plots/loss.png

"""

_TEMPLATED = {"raw": "${data.raw}", "prepared": "${data.prepared}"}  # Layout names from params.yaml


def render() -> str:
    """The text of dvc.yaml."""
    lines = [TOP.rstrip("\n"), "", "stages:"]
    for spec in STAGES.values():
        if spec.cmd:  # the others are flow-only steps (pull-data, push-data)
            lines += _stage(spec)
    return "\n".join(lines).rstrip("\n") + "\n"


def _stage(spec: StageSpec) -> list[str]:
    lines = [f"  {spec.name}:", f"    cmd: {spec.cmd}", "    deps:"]
    lines += [f"      - {_TEMPLATED.get(name, name)}" for name in spec.inputs]
    lines += [f"      - src/ferflow/{path}" for path in spec.code]
    lines += ["    params:", *(f"      - {key}" for key in spec.params)]
    for section, outs in (("outs", spec.dvc_outs), ("metrics", spec.dvc_metrics)):
        if outs:
            lines.append(f"    {section}:")
            lines += [line for out in outs for line in _out(out)]
    return [*lines, ""]


def _out(out: DvcOut) -> list[str]:
    path = _TEMPLATED.get(out.path, out.path)
    lines = [f"      # {note}" for note in out.notes]
    options = [*([] if out.cache else ["cache: false"]), *(["persist: true"] if out.persist else [])]
    if not options:
        return [*lines, f"      - {path}"]
    return [*lines, f"      - {path}:", *(f"          {option}" for option in options)]


if __name__ == "__main__":
    sys.stdout.write(render())
