"""MLflow tracking: parent and phase runs, statuses on failure, secrets never logged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ferflow.data.dataset import MANIFEST_COLUMNS, write_prepared
from ferflow.tracking import runs as tracking
from ferflow.tracking import store as tracking_store
from ferflow.tracking.store import redact
from tests.conftest import small_params

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory):
    """One SQLite store for the module: creating one runs MLflow's migrations (slow)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture()
def store(store_uri, tmp_path, monkeypatch):
    """The throwaway SQLite tracking store, selected through MLFLOW_TRACKING_URI."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    monkeypatch.chdir(tmp_path)  # mlflow's default artifact root goes under tmp_path
    yield mlflow.MlflowClient(tracking_uri=store_uri, registry_uri=store_uri)
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture()
def data_dir(tmp_path):
    """A minimal prepared dataset: two images, a manifest and dataset.json."""
    rows = [
        dict.fromkeys(MANIFEST_COLUMNS, "x") | {"id": f"r{i}", "split": "train", "label_index": i}
        for i in range(2)
    ]
    out = tmp_path / "prepared"
    write_prepared(out, np.zeros((2, 8, 8), np.uint8), pd.DataFrame(rows), {"classes": ["a", "b"]})
    return out


def _nested(client, parent):
    runs = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    return {run.info.run_name: run for run in runs}


def test_stage_run_logs_params_tags_and_epochs_on_one_axis(store, data_dir, tmp_path):
    # given a pipeline run with a phase whose epochs are offset by 3 (phase 1 had 3)
    params = small_params()
    models = tmp_path / "models"
    with (
        tracking.pipeline_run(params, data_dir, models / "run.json", resume=False) as run,
        tracking.phase_run(run, "finetune", epoch_offset=3) as logger,
    ):
        logger.on_epoch_end(0, {"loss": 1.5, "accuracy": 0.4, "val_loss": 1.6, "val_accuracy": 0.3})
    # then the parent logs the params people compare, the provenance tags and the metric
    # at the global epoch; every param is in its params.yaml artifact
    parent = store.get_run(run.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["train.epochs"] == str(params.train.epochs)
    assert set(parent.data.params) == {*tracking_store.LOGGED_PARAMS, "finetune.augment"}
    assert 20 <= len(parent.data.params) <= 30 < len(params.flat())
    every = tracking_store.run_params(store, parent)
    assert every == {key: str(value) for key, value in tracking_store.safe_params(params).items()} | {
        "finetune.augment": parent.data.params["finetune.augment"]
    }
    assert parent.data.tags["ferflow.params_digest"] == params.digest()
    assert len(parent.data.tags["ferflow.manifest_digest"]) == 64
    assert parent.data.tags["ferflow.git_commit"]
    assert [m.step for m in store.get_metric_history(run.run_id, "val_loss")] == [3]
    assert parent.inputs.dataset_inputs[0].dataset.name == "fer-prepared"
    # and the nested phase run has the same metric, and run.json points at the parent
    phase = _nested(store, parent)["finetune"]
    assert [m.step for m in store.get_metric_history(phase.info.run_id, "loss")] == [3]
    assert json.loads((models / "run.json").read_text())["run_id"] == run.run_id


def test_a_later_stage_logs_into_the_same_parent_run(store, data_dir, tmp_path):
    # given a finished phase 1 run with its run.json
    params = small_params()
    models = tmp_path / "models"
    with tracking.pipeline_run(params, data_dir, models / "run.json", resume=False) as first:
        pass
    # when a later stage resumes with a changed phase-2 param (dvc repro re-runs only it)
    changed = small_params("finetune.learning_rate=0.01")
    with (
        tracking.pipeline_run(changed, data_dir, models / "run.json", resume=True) as second,
        tracking.phase_run(second, "finetune", params=changed),
    ):
        pass
    # then it reopened the same parent, which is finished again and keeps phase 1's params
    parent = store.get_run(first.run_id)
    assert second.run_id == first.run_id
    assert parent.info.status == "FINISHED"
    assert parent.data.params["finetune.learning_rate"] == str(params.finetune.learning_rate)
    # and the phase run records the params it actually ran with
    phase = _nested(store, parent)["finetune"]
    assert phase.data.params["finetune.learning_rate"] == "0.01"
    assert phase.data.tags["ferflow.params_digest"] == changed.digest()


@pytest.mark.parametrize(
    ("error", "status"), [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")]
)
def test_a_crash_inside_a_stage_ends_the_runs_with_a_final_status(store, data_dir, tmp_path, error, status):
    # given a stage whose phase raises
    params = small_params()
    with (
        pytest.raises(type(error)),
        tracking.pipeline_run(params, data_dir, tmp_path / "models" / "run.json", resume=False) as run,
        tracking.phase_run(run, "train"),
    ):
        raise error
    # then neither the parent nor the phase run is left RUNNING
    parent = store.get_run(run.run_id)
    assert parent.info.status == status
    assert _nested(store, parent)["train"].info.status == status


def test_no_secret_reaches_params_or_tags(store, data_dir, tmp_path, monkeypatch):
    # given credentials in URLs of the params and in the environment
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMIsecretKEY")
    params = small_params(
        "tracking.tracking_uri=http://bob:hunter2@mlflow.example.com",
        "data.remote.endpoint_url=http://AKIAEXAMPLE:topsecret@127.0.0.1:9000",
    )
    # when a run is logged
    with tracking.pipeline_run(params, data_dir, tmp_path / "models" / "run.json", resume=False) as run:
        pass
    # then no secret appears in any logged param, tag or run.json, but the host does
    logged = store.get_run(run.run_id).data
    text = json.dumps([logged.params, logged.tags]) + (tmp_path / "models" / "run.json").read_text()
    artifact = store.download_artifacts(run.run_id, "params/params.yaml", str(tmp_path))
    text += Path(artifact).read_text()
    for secret in ("hunter2", "topsecret", "AKIAEXAMPLE", "wJalrXUtnFEMIsecretKEY"):
        assert secret not in text
    assert "tracking.tracking_uri" not in logged.params  # not one of the params people compare
    # and the whole resolved file is an artifact of the run, in params.yaml's sections
    resolved = yaml.safe_load(Path(artifact).read_text())
    assert resolved["tracking"]["tracking_uri"] == "http://***@mlflow.example.com"
    assert resolved["data"]["remote"]["endpoint_url"] == "http://***@127.0.0.1:9000"
    assert resolved["finetune"]["augment"] == params.finetune.augment.model_dump(mode="json")
    assert resolved["register"]["model_name"] == params.registry.model_name


def test_redact_removes_user_info_from_urls_only():
    # given URLs with and without user info, and a plain value
    # when redacted, then only the user:password part goes
    assert redact("s3://key:secret@bucket/x") == "s3://***@bucket/x"
    assert redact("sqlite:///mlflow/mlflow.db") == "sqlite:///mlflow/mlflow.db"
    assert redact(3) == 3
    # the same masker as the DVC remote's lines: a masked userinfo stays masked, a password
    # ending in *** goes, and one with an unescaped '/' goes whole (it leaked before)
    assert redact("http://minio:***@127.0.0.1:9000") == "http://***@127.0.0.1:9000"
    assert redact("http://bob:pw***@host") == "http://***@host"
    assert redact("http://AKIA:wJal/rXU+k@127.0.0.1:9000") == "http://***@127.0.0.1:9000"


def test_the_evaluate_stage_logs_summary_metrics_a_per_class_table_and_run_page_images(store, tmp_path):
    from ferflow.config import FER_CLASSES
    from ferflow.files import PER_CLASS_ARTIFACT
    from ferflow.stages import Layout
    from ferflow.stages.evaluation import RUN_PAGE_IMAGES, evaluate
    from ferflow.tracking.store import RunInfo, write_run_info
    from tests.unit.test_evaluate import centre_model, write_constant_dataset, write_history

    # given a trained model, its two-phase history (5 epochs) and a parent run in run.json
    data_dir = write_constant_dataset(tmp_path / "data")
    layout = Layout(data_dir, data_dir, tmp_path / "models", tmp_path / "reports")
    centre_model(path=layout.model_file)
    write_history(layout.models, head_epochs=3, finetune_epochs=2)
    parent = store.create_run(store.create_experiment("evaluate-logging"))
    uri = mlflow.get_tracking_uri()
    write_run_info(layout.run_file, RunInfo(parent.info.run_id, parent.info.experiment_id, uri))
    # when the evaluate stage runs
    evaluate(small_params(), layout)
    # then the run has the four summary test metrics and no per-class scalar
    run = store.get_run(parent.info.run_id)
    assert set(run.data.metrics) == {"test.accuracy", "test.macro_f1", "test.weighted_f1", "test.macro_auc"}
    # and the per-class numbers are one table with a row per class
    local = store.download_artifacts(parent.info.run_id, PER_CLASS_ARTIFACT, str(tmp_path / "download"))
    table = json.loads(Path(local).read_text())
    assert table["columns"] == ["class", "precision", "recall", "f1", "auc", "support"]
    assert [row[0] for row in table["data"]] == list(FER_CLASSES)
    # and the curves and confusion matrices are keyed images at the last global epoch
    images = {a.path for a in store.list_artifacts(parent.info.run_id, "images")}
    for key in RUN_PAGE_IMAGES.values():
        prefix = f"images/{key.replace('/', '~')}+step+4+"  # MLflow writes "/" in a key as "~"
        assert any(p.startswith(prefix) and p.endswith(".png") for p in images), f"{key}: {images}"
    assert run.data.tags["mlflow.loggedImages"] == "True"


def test_a_budget_planned_phase_logs_its_resolved_epochs_and_rate_curve(store, data_dir, tmp_path):
    # given a phase 2 under `epochs: auto` whose budget planned 3 epochs
    params = small_params()
    records = [
        {"epoch": e, "phase": "finetune", "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4}
        | {"learning_rate": 0.1 / (e + 1), "epochs_planned": 3.0}
        for e in range(3)
    ]
    with (
        tracking.pipeline_run(params, data_dir, tmp_path / "models" / "run.json", resume=False) as run,
        tracking.phase_run(run, "finetune", 0, params) as epoch_logger,
    ):
        epoch_logger.set_model(None)
        for record in records:
            epoch_logger.on_epoch_end(record["epoch"], record)
        tracking.log_summary("finetune", records, epoch_logger.run_ids)
    # then the parent run holds the resolved value and the rate at each epoch
    parent = store.get_run(run.run_id)
    assert parent.data.metrics["finetune.epochs_planned"] == 3.0
    curve = store.get_metric_history(run.run_id, "learning_rate")
    assert [round(m.value, 4) for m in sorted(curve, key=lambda m: m.step)] == [0.1, 0.05, 0.0333]


def test_the_augmentation_is_one_readable_param():
    from ferflow.config import load_params
    from tests.conftest import REPO

    profile = load_params(REPO / "profiles" / "cpu.yaml")

    assert tracking_store.logged_params(profile)["finetune.augment"] == (
        "flip shift=0.1 rotation=0.03 zoom=0.1 contrast=0.2 brightness=0.1 erasing=0.25/0.4"
    )
    assert tracking_store.logged_params(small_params())["finetune.augment"] == "none"
