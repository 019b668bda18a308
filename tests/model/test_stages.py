"""The `train` and `finetune` stages end to end on synthetic faces, with a local MLflow store."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ferflow.stages import Layout
from ferflow.stages.fine_tuning import finetune
from ferflow.stages.head_training import train
from ferflow.training.train import TrainingError
from tests.model.conftest import tiny_params

mlflow = pytest.importorskip("mlflow")

# Phase 2 back-propagates through DenseNet: minutes per epoch on a busy 2-core CPU.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

STAGE = (
    "train.epochs=25",
    "train.early_stopping_patience=5",
    "train.learning_rate=0.003",
    "finetune.epochs=1",
    "finetune.learning_rate=0.01",
    "finetune.momentum=0.9",
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(tmp_path_factory.mktemp("cwd"))  # MLflow artifacts land here
        yield mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def layout(data, models) -> Layout:
    return Layout(raw=data, prepared=data, models=models, reports=models.parent / "reports")


@pytest.fixture(scope="module")
def phase_one(store, tiny_data, tmp_path_factory):
    """models/ after `ferflow train` on synthetic faces."""
    models = tmp_path_factory.mktemp("models")
    train(tiny_params(*STAGE), layout(tiny_data, models))
    return models


def test_stages_write_one_history_and_log_a_servable_model(store, phase_one, tiny_data, tmp_path):
    # given phase 1's models folder
    models = tmp_path / "models"
    shutil.copytree(phase_one, models)
    # when phase 2 runs
    finetune(tiny_params(*STAGE), layout(tiny_data, models))
    # then the history runs on one epoch axis through both phases
    # (no accuracy bar: random-init 32 px DenseNet features did not separate the synthetic
    # faces within a test-sized budget; see docs/training.md)
    epochs = json.loads((models / "history.json").read_text())["epochs"]
    assert [r["epoch"] for r in epochs] == list(range(len(epochs)))
    assert epochs[-1]["phase"] == "finetune"
    # and the logged model serves (n, S, S) float32 batches through stock pyfunc
    run = json.loads((models / "run.json").read_text())
    batch = np.random.default_rng(0).uniform(0, 255, (3, 32, 32)).astype("float32")
    probs = np.asarray(mlflow.pyfunc.load_model(run["model_uri"]).predict(batch))
    assert probs.shape == (3, 7)
    parent = store.get_run(run["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["finetune.epochs"] == 1


def test_phase_two_run_again_alone_gets_a_parent_run_of_its_own(store, phase_one, tiny_data, tmp_path):
    # given phase 1 and a finished phase 2 in one parent run (what the flow leaves)
    models = tmp_path / "models"
    shutil.copytree(phase_one, models)
    finetune(tiny_params(*STAGE), layout(tiny_data, models))
    first = json.loads((models / "run.json").read_text())
    # when phase 2 runs again alone (`dvc repro` after a finetune.* change: phase 1 cached)
    finetune(tiny_params(*STAGE, "finetune.learning_rate=0.005"), layout(tiny_data, models))
    # then it is a new parent run, so `ferflow register` makes a new version of it
    second = json.loads((models / "run.json").read_text())
    assert second["run_id"] != first["run_id"] and second["model_uri"] != first["model_uri"]
    new_run = store.get_run(second["run_id"])
    assert new_run.info.status == "FINISHED"
    assert new_run.data.tags["ferflow.train_from_run"] == first["run_id"]
    # with phase 1's curves copied from history.json at their global epochs, and phase 2's after
    history = json.loads((models / "history.json").read_text())["epochs"]
    head = [r for r in history if r["phase"] == "train"]
    logged = store.get_metric_history(second["run_id"], "val_accuracy")
    assert sorted(m.step for m in logged) == [r["epoch"] for r in history]
    assert new_run.data.metrics["train.epochs"] == len(head)
    assert new_run.data.metrics["finetune.epochs"] == 1
    # and the first run keeps its own model and phase 2
    assert store.get_run(first["run_id"]).data.metrics["finetune.epochs"] == 1


def test_a_diverging_phase_two_fails_and_leaves_no_model(store, phase_one, tiny_data, tmp_path):
    # given phase 1's models folder and an absurd fine-tuning learning rate
    models = tmp_path / "models"
    shutil.copytree(phase_one, models)
    params = tiny_params(*STAGE, "finetune.learning_rate=1.0e+12")
    run = json.loads((models / "run.json").read_text())
    query = f"source_run_id = '{run['run_id']}'"  # the parent run is shared with other tests
    models_before = len(
        store.search_logged_models(experiment_ids=[run["experiment_id"]], filter_string=query)
    )
    # when phase 2 runs, then it fails loudly
    with pytest.raises(TrainingError, match="NaN or infinite"):
        finetune(params, layout(tiny_data, models))
    # and nothing was saved or logged as a model; the run is FAILED, not RUNNING
    assert not (models / "model.keras").exists()
    run = json.loads((models / "run.json").read_text())
    assert run["model_uri"] is None
    assert store.get_run(run["run_id"]).info.status == "FAILED"
    logged = store.search_logged_models(experiment_ids=[run["experiment_id"]], filter_string=query)
    assert len(logged) == models_before


def test_every_param_a_stage_reads_is_declared(store, phase_one, tiny_data, tmp_path):
    """STAGES (and so dvc.yaml and the Prefect cache key) list every param each stage reads:
    the reads of a real run of train, finetune, evaluate and register are recorded."""
    from ferflow.stages import STAGES
    from ferflow.stages.evaluation import evaluate
    from ferflow.stages.registration import register
    from tests.conftest import NO_FLOORS
    from tests.params_recorder import covered, recording

    params = tiny_params(*STAGE, *NO_FLOORS, "register.model_name=fer-reads-test")
    where = layout(tiny_data, tmp_path / "models")
    reads = {}
    for name, stage in (
        ("train", train),
        ("finetune", finetune),
        ("evaluate", evaluate),
        ("register", register),
    ):
        recorder = recording(params)
        stage(recorder, where)
        reads[name] = recorder.reads
    # training reads the train rows validate chose (reports/training_rows.json), no policy
    assert not any(key.startswith("validate.") for key in reads["train"] | reads["finetune"])
    for name, keys in reads.items():
        hidden = sorted(key for key in keys if not covered(key, STAGES[name].params))
        assert not hidden, f"stage {name} reads {hidden}, which STAGES[{name!r}].params does not declare"
