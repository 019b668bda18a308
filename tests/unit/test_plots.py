"""The evaluation's figures and plot data, and dvc.yaml's `plots:` that draws them.

The figures are checked on matplotlib's objects (bars, ticks, lines), not on pixels; the
`plots:` section is checked with DVC's own schema and rendered by the real `dvc plots show`
on the files `ferflow.evaluation.evaluate.write_reports` writes.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from ferflow import files
from ferflow.evaluation import evaluate as ev
from ferflow.evaluation import plots
from tests.conftest import small_params
from tests.unit.test_evaluate import history_records

REPO = Path(__file__).resolve().parents[2]
CLASSES = ("angry", "happy", "sad")
LABELS = ("Anger", "Happy", "Sadness")
PER_CLASS = {
    "angry": {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "support": 4},
    "happy": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 10},
    "sad": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2},
}


@pytest.fixture
def close_figures():
    yield
    plots._pyplot().close("all")


# --- per-class bars ----------------------------------------------------------------------


def test_per_class_figure_has_three_bars_per_class_on_a_0_to_1_axis(close_figures):
    fig = plots._per_class_figure(PER_CLASS, CLASSES, LABELS)
    (ax,) = fig.axes

    bars = [list(container) for container in ax.containers]
    assert [c.get_label() for c in ax.containers] == ["precision", "recall", "F1"]
    assert [[b.get_height() for b in group] for group in bars] == [
        pytest.approx([PER_CLASS[c][k] for c in CLASSES]) for k in ("precision", "recall", "f1")
    ]
    # one group per class: the three bars of a class sit around its tick
    ticks = ax.get_xticks()
    for i in range(len(CLASSES)):
        centres = [group[i].get_x() + group[i].get_width() / 2 for group in bars]
        assert min(centres) < ticks[i] < max(centres)
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == list(LABELS)
    assert ax.get_xticklabels()[1].get_text() == "Happy\n(n=10)"
    bottom, top = ax.get_ylim()
    assert bottom == 0 and 1 <= top <= 1.2
    assert list(ax.get_yticks()) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    # every bar carries its value
    values = [t.get_text() for t in ax.texts]
    assert values.count("1.00") == 3 and "0.33" in values and len(values) == 3 * len(CLASSES)


def test_per_class_figure_is_written_as_per_class_png(tmp_path, close_figures):
    path = plots.per_class_figure(PER_CLASS, CLASSES, LABELS, tmp_path)

    assert path == tmp_path / "per_class.png" and "per_class.png" in files.PNG_FILES
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- training curves ---------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["accuracy", "loss"])
def test_history_epochs_count_from_1_on_whole_number_ticks(metric, close_figures):
    records = history_records(head_epochs=3, finetune_epochs=2)
    fig = plots._history_figure(records, metric, metric)
    (ax,) = fig.axes
    train, validation = ax.get_lines()[:2]

    assert list(train.get_xdata()) == [1, 2, 3, 4, 5]  # stored 0..4
    assert list(train.get_ydata()) == pytest.approx([r[metric] for r in records])
    assert list(validation.get_ydata()) == pytest.approx([r[f"val_{metric}"] for r in records])
    low, high = ax.get_xlim()
    shown = [t for t in ax.get_xticks() if low <= t <= high]
    assert shown == [1, 2, 3, 4, 5]


def test_long_histories_keep_whole_number_ticks_without_epoch_0(close_figures):
    fig = plots._history_figure(history_records(head_epochs=10, finetune_epochs=27), "accuracy", "accuracy")
    (ax,) = fig.axes

    low, high = ax.get_xlim()
    shown = [t for t in ax.get_xticks() if low <= t <= high]
    assert 3 <= len(shown) <= 10
    assert all(float(t).is_integer() and 1 <= t <= 37 for t in shown)


def test_the_phase_boundary_sits_before_the_first_fine_tuning_epoch(close_figures):
    # head epochs are shown 1..3, fine-tuning starts at the 4th
    fig = plots._history_figure(history_records(head_epochs=3, finetune_epochs=2), "loss", "loss")
    (ax,) = fig.axes

    boundary = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(boundary) == 1 and list(boundary[0].get_xdata()) == [3.5, 3.5]
    assert any(t.get_text() == "fine-tuning" for t in ax.texts)


def test_history_without_fine_tuning_has_no_boundary(close_figures):
    fig = plots._history_figure(history_records(head_epochs=4, finetune_epochs=0), "accuracy", "accuracy")

    assert [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"] == []


# --- the report files --------------------------------------------------------------------


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Path:
    """write_reports on a hand-made evaluation of 7 classes (no model), with a history."""
    params = small_params()
    k = len(params.base.classes)
    labels = np.repeat(np.arange(k), 6)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(k), size=len(labels))
    probs[np.arange(len(labels)), labels] += rng.uniform(0, 0.4, len(labels))
    probs /= probs.sum(axis=1, keepdims=True)
    evaluation = ev.evaluate_predictions(labels, probs, params.base.classes)
    root = tmp_path_factory.mktemp("plots")
    ev.write_reports(evaluation, params, root / "reports", history_records())
    plots._pyplot().close("all")
    return root / "reports"


def test_write_reports_writes_the_per_class_csv_and_figure(reports):
    params = small_params()
    metrics = json.loads((reports / files.METRICS_FILE).read_text())["per_class"]

    with (reports / files.PLOTS_DIR / files.PER_CLASS_CSV).open() as f:
        rows = list(csv.DictReader(f))

    assert list(rows[0]) == ["class", "precision", "recall", "f1", "support"]
    assert [r["class"] for r in rows] == list(params.base.classes)
    for row in rows:
        expected = metrics[row["class"]]
        assert int(row["support"]) == expected["support"]
        for key in ("precision", "recall", "f1"):
            assert float(row[key]) == pytest.approx(expected[key], abs=1e-6)
    assert (reports / files.PLOTS_DIR / "per_class.png").is_file()


# --- dvc.yaml ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dvc_plots() -> list[Any]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]


def _plot(dvc_plots: list[Any], plot_id: str) -> dict[str, Any]:
    (found,) = [p[plot_id] for p in dvc_plots if isinstance(p, dict) and plot_id in p]
    return found


def test_dvc_yaml_passes_dvcs_own_schema():
    from dvc.schema import COMPILED_MULTI_STAGE_SCHEMA

    COMPILED_MULTI_STAGE_SCHEMA(yaml.safe_load((REPO / "dvc.yaml").read_text()))


def test_accuracy_and_loss_are_separate_plots(dvc_plots):
    history_csv = f"reports/plots/{files.HISTORY_CSV}"

    assert _plot(dvc_plots, "accuracy")["y"] == {history_csv: ["accuracy", "val_accuracy"]}
    assert _plot(dvc_plots, "loss")["y"] == {history_csv: ["loss", "val_loss"]}
    assert _plot(dvc_plots, "accuracy")["x"] == _plot(dvc_plots, "loss")["x"] == "epoch"
    assert history_csv not in {key for p in dvc_plots if isinstance(p, dict) for key in p}


def test_every_figure_and_the_per_class_bars_are_plots(dvc_plots):
    images = {p for p in dvc_plots if isinstance(p, str)}

    assert images == {f"reports/plots/{name}" for name in files.PNG_FILES}
    per_class = _plot(dvc_plots, "per_class_f1")
    assert per_class["template"] == "bar_horizontal"
    assert per_class["y"] == {f"reports/plots/{files.PER_CLASS_CSV}": "class"}
    assert per_class["x"] == "f1"


def test_dvc_plots_show_renders_every_plot_from_write_reports_files(reports, tmp_path):
    """The real `dvc plots show --json` on a copy of dvc.yaml and the files write_reports wrote."""
    shutil.copy(REPO / "dvc.yaml", tmp_path)
    shutil.copy(REPO / "params.yaml", tmp_path)
    shutil.copytree(reports, tmp_path / "reports")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / "site-cache")}

    def dvc(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "dvc", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    dvc("init", "--no-scm", "-q")
    shown = json.loads(dvc("plots", "show", "--json"))

    assert "errors" not in shown, shown.get("errors")
    rendered = shown["data"]
    images = {f"reports/plots/{name}" for name in files.PNG_FILES}
    assert set(rendered) == images | {
        "reports/plots/confusion.csv",
        "reports/plots/roc.csv",
        "accuracy",
        "loss",
        "per_class_f1",
    }
    for name in images:
        ((image,),) = [rendered[name]]
        assert image["type"] == "image" and Path(image["url"]).is_file()

    def values(plot_id: str) -> list[dict[str, Any]]:
        ((plot,),) = [rendered[plot_id]]
        assert plot["type"] == "vega"
        return plot["content"]["data"]["values"]

    assert {v["field"] for v in values("accuracy")} == {"accuracy", "val_accuracy"}
    assert {v["field"] for v in values("loss")} == {"loss", "val_loss"}
    assert len(values("accuracy")) == 2 * len(history_records())
    bars = values("per_class_f1")
    assert [v["class"] for v in bars] == list(small_params().base.classes)
    assert all(0 <= float(v["f1"]) <= 1 for v in bars)
