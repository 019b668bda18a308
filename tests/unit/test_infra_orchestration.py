"""The orchestration policies without running a flow: cache keys, retries, timeouts,
the re-registration guard, the run report and the Prefect reachability check."""

from __future__ import annotations

import json

import pytest

from ferflow import stages
from ferflow.config import ParamsError
from ferflow.stages import STAGES, DataContractError, Layout
from tasks import caching, reports
from tasks.pipeline import for_params
from tests.conftest import small_params


@pytest.fixture
def workspace(tmp_path):
    """A repository layout with a tiny raw dataset and a prepared one."""
    params = small_params()
    paths = Layout.from_params(params, tmp_path)
    (paths.raw / "train" / "happy").mkdir(parents=True)
    (paths.raw / "train" / "happy" / "a.jpg").write_bytes(b"pixels")
    paths.prepared.mkdir(parents=True)
    (paths.prepared / "manifest.csv").write_text("id\n1\n")
    return params, paths


def run_file(run_id: str) -> dict:
    return {"run_id": run_id, "experiment_id": "1", "tracking_uri": "sqlite:///x.db", "model_uri": None}


def key(stage, params, paths):
    return caching.stage_key(STAGES[stage], params, paths)


# --- cache keys -------------------------------------------------------------------------


def test_unchanged_inputs_give_the_same_key(workspace):
    params, paths = workspace

    assert key("train", params, paths) == key("train", small_params(), paths)


def test_a_training_param_changes_training_keys_but_not_ingest_or_validation(workspace):
    params, paths = workspace
    changed = small_params("train.epochs=3")

    assert key("train", changed, paths) != key("train", params, paths)
    assert key("finetune", changed, paths) != key("finetune", params, paths)
    assert key("ingest", changed, paths) == key("ingest", params, paths)
    assert key("validate", changed, paths) == key("validate", params, paths)


def test_the_blank_image_policy_changes_the_validate_key_and_its_rows_the_training_keys(workspace):
    # validate reads validate.drop_blank_from_train and writes reports/training_rows.json,
    # the train rows training uses
    params, paths = workspace
    changed = small_params("validate.drop_blank_from_train=true")
    before = {stage: key(stage, params, paths) for stage in ("validate", "train", "finetune")}

    assert key("validate", changed, paths) != before["validate"]
    assert key("train", changed, paths) == before["train"]  # training reads no validate.* param
    paths.training_rows_file.parent.mkdir(parents=True, exist_ok=True)
    paths.training_rows_file.write_text('{"dropped": {"blank": [3]}}')
    assert key("train", params, paths) != before["train"]
    assert key("finetune", params, paths) != before["finetune"]
    assert key("evaluate", changed, paths) == key("evaluate", params, paths)


def test_new_raw_data_changes_the_ingest_key(workspace):
    params, paths = workspace
    before = key("ingest", params, paths)

    (paths.raw / "train" / "happy" / "a.jpg").write_bytes(b"other pixels")

    assert key("ingest", params, paths) != before


def test_a_code_change_changes_the_key(workspace, tmp_path, monkeypatch):
    params, paths = workspace
    package = tmp_path / "package"
    for name in STAGES["ingest"].code:
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text("x = 1\n")
    monkeypatch.setattr(caching, "PACKAGE_DIR", package)
    before = key("ingest", params, paths)

    (package / "data" / "ingest.py").write_text("x = 2\n")

    assert key("ingest", params, paths) != before


def test_cache_off_gives_no_key(workspace):
    _, paths = workspace
    cache_key = caching.cache_key_for("train")

    assert cache_key(None, {"params": small_params("flow.cache=false"), "layout": paths}) is None
    assert cache_key(None, {"params": small_params(), "layout": paths}).startswith("ferflow-train-")


def test_a_cached_result_whose_files_changed_is_not_intact(workspace):
    _, paths = workspace
    paths.models.mkdir()
    (paths.models / "head.keras").write_bytes(b"weights")
    result = {"outputs": caching.output_hashes("train", paths)}
    assert caching.outputs_intact("train", paths, result)

    (paths.models / "head.keras").write_bytes(b"other weights")

    assert not caching.outputs_intact("train", paths, result)


# --- task options -----------------------------------------------------------------------


def test_only_network_tasks_retry_with_exponential_backoff():
    params = small_params("flow.network_retries=3", "flow.retry_delay_seconds=2")

    tasks = for_params(params)

    for network in ("pull-data", "push-data", "register"):
        assert tasks[network].retries == 3
        assert tasks[network].retry_delay_seconds == [2.0, 4.0, 8.0]
    for local in ("ingest", "validate", "train", "finetune", "evaluate"):
        assert tasks[local].retries == 0


def test_task_timeouts_come_from_params():
    params = small_params("flow.timeouts.train=123", "flow.timeouts.validate=45", "flow.timeouts.push_data=9")

    tasks = for_params(params)

    assert tasks["train"].timeout_seconds == 123
    assert tasks["validate"].timeout_seconds == 45
    assert tasks["push-data"].timeout_seconds == 9  # the old spelling names the same stage


def test_a_stage_without_a_timeout_key_keeps_its_default():
    tasks = for_params(small_params("flow.timeouts={}"))

    assert {name: task.timeout_seconds for name, task in tasks.items()} == {
        name: spec.timeout_s for name, spec in STAGES.items()
    }


def test_a_timeout_for_no_stage_is_an_error_naming_it():
    with pytest.raises(ParamsError, match=r"flow.timeouts.fine-tune: there is no stage 'fine-tune'"):
        for_params(small_params("flow.timeouts.fine_tune=60"))


def test_the_tasks_run_in_the_table_order_and_only_registration_is_never_cached():
    tasks = for_params(small_params())

    assert list(tasks) == list(STAGES)
    assert [name for name, task in tasks.items() if task.cache_key_fn is None] == [
        "pull-data",
        "push-data",
        "register",
    ]


# --- registration guard -----------------------------------------------------------------


def test_a_model_already_decided_is_not_registered_again(workspace, monkeypatch):
    params, paths = workspace
    paths.models.mkdir()
    paths.reports.mkdir()
    (paths.models / "run.json").write_text(json.dumps(run_file("abc")))
    decided = {"run_id": "abc", "decision": "promoted", "version": "3"}
    (paths.reports / "promotion.json").write_text(json.dumps(decided))

    def must_not_register(*_args, **_kwargs):
        raise AssertionError("registered twice")

    monkeypatch.setattr("ferflow.stages.registration._register_new_version", must_not_register)

    assert stages.register(params, paths) == decided


def test_a_new_model_is_registered(workspace, monkeypatch):
    params, paths = workspace
    paths.models.mkdir()
    paths.reports.mkdir()
    (paths.models / "run.json").write_text(json.dumps(run_file("new")))
    (paths.reports / "promotion.json").write_text(json.dumps({"run_id": "old", "decision": "promoted"}))
    calls = []
    monkeypatch.setattr(
        "ferflow.stages.registration._register_new_version", lambda *args: calls.append(args) or {"ok": 1}
    )

    assert stages.register(params, paths) == {"ok": 1}
    assert len(calls) == 1


def test_a_failed_contract_stops_with_the_reason():
    class Report:
        passed = False
        errors = ("train: class disgust has 3 images, fewer than 10",)

    with pytest.raises(DataContractError, match="class disgust has 3 images"):
        stages.require_valid(Report())


# --- run report -------------------------------------------------------------------------


def test_run_report_shows_contract_metrics_decision_and_mlflow_link():
    run = {"run_id": "r1", "experiment_id": "7", "tracking_uri": "http://mlflow:5000"}
    decision = {
        "decision": "not-promoted",
        "reason": "macro_f1 0.40 < champion 0.45",
        "model_name": "fer",
        "version": "4",
        "champion": {"version": "2", "metrics": {"macro_f1": 0.45}},
    }

    text = reports.run_report_markdown(
        {"summary": "all 12 checks passed"}, {"accuracy": 0.5}, decision, run, "d41d"
    )

    assert "all 12 checks passed" in text
    assert "| accuracy | 0.5000 |" in text
    assert "not-promoted" in text and "macro_f1 0.40 < champion 0.45" in text
    assert "http://mlflow:5000/#/experiments/7/runs/r1?workflowType=machine_learning" in text
    assert "`fer` version 4" in text and "version 2 (macro_f1 0.4500)" in text


def test_per_class_rows_read_flat_metrics():
    metrics = {"recall.happy": 0.9, "precision.happy": 0.8, "recall.sad": 0.1, "accuracy": 0.5}

    rows = reports.per_class_rows(metrics)

    assert [row["class"] for row in rows] == ["happy", "sad"]
    assert rows[0]["precision"] == 0.8


# --- Prefect server reachability --------------------------------------------------------


def test_an_unreachable_prefect_server_is_a_clear_error():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.local import PrefectUnreachableError, check_prefect_api
    from tests.servers import free_port

    url = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings({PREFECT_API_URL: url}), pytest.raises(PrefectUnreachableError) as err:
        check_prefect_api(timeout_s=2)

    assert url in str(err.value) and "nothing was run" in str(err.value)


# --- the demo ---------------------------------------------------------------------------


def test_demo_configuration_is_valid_and_laptop_sized():
    from ferflow.config import load_params
    from flows.demo import DEMO_MODEL_NAME, DEMO_OVERRIDES, DEMO_PARAMS
    from tests.conftest import PARAMS_FILE, REPO

    params = load_params(REPO / DEMO_PARAMS, DEMO_OVERRIDES)
    defaults = load_params(PARAMS_FILE)

    # the from-scratch profile, shrunk: one phase, a handful of epochs, the default floors kept
    assert params.model.weights == "none" and params.model.input_size <= 48
    assert params.train.epochs == 0 and params.finetune.epochs <= 8
    assert params.finetune.train_batchnorm and params.finetune.schedule != "constant"
    assert params.registry.min_macro_f1 == defaults.registry.min_macro_f1 > 0
    assert params.registry.model_name == DEMO_MODEL_NAME != defaults.registry.model_name


def test_demo_says_what_to_open_next_from_its_workspace(tmp_path):
    from ferflow.config import load_params
    from flows.demo import DEMO_OVERRIDES, DEMO_PARAMS, DEMO_RAW, next_steps
    from tests.conftest import REPO

    (tmp_path / DEMO_RAW / "test" / "happy").mkdir(parents=True)
    (tmp_path / DEMO_RAW / "test" / "happy" / "PublicTest_1.jpg").write_bytes(b"x")
    (tmp_path / "models").mkdir()
    run = {"run_id": "abc123", "experiment_id": "1", "tracking_uri": "sqlite:///mlflow/mlflow.db"}
    (tmp_path / "models" / "run.json").write_text(json.dumps(run))

    params = load_params(REPO / DEMO_PARAMS, list(DEMO_OVERRIDES))
    text = next_steps(tmp_path, params, {"decision": "promoted", "reason": "first model", "version": "1"})

    assert "cd demo" in text
    assert "mlflow ui --workers 1 --backend-store-uri sqlite:///mlflow/mlflow.db" in text
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in text
    # the run itself, in the UI's model-training view (not GenAI traces)
    assert "http://127.0.0.1:5000/#/experiments/1/runs/abc123?workflowType=machine_learning" in text
    assert "reports/metrics.json" in text
    # in the workspace the commands read the demo's params: no model flag needed
    assert f"ferflow predict {DEMO_RAW}/test/happy/PublicTest_1.jpg" in text
    assert "ferflow compare" in text and "--model-name" not in text
    assert "dvc repro" in text


def test_demo_workspace_reads_back_as_the_demo_params_and_points_its_code_at_the_repo(tmp_path):
    import yaml

    from ferflow.config import load_params
    from flows.demo import DEMO_OVERRIDES, DEMO_PARAMS, write_workspace
    from tests.conftest import REPO

    workspace = tmp_path / "demo"
    write_workspace(REPO, workspace, REPO / DEMO_PARAMS, [*DEMO_OVERRIDES, "finetune.epochs=3"])

    written = load_params(workspace / "params.yaml")
    wanted = load_params(REPO / DEMO_PARAMS, [*DEMO_OVERRIDES, "finetune.epochs=3"])
    assert written.digest() == wanted.digest()
    assert "extends" not in yaml.safe_load((workspace / "params.yaml").read_text())  # DVC reads it as it is
    assert (workspace / ".dvc").is_dir()  # a DVC project of its own

    project = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    demo = yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"]
    assert list(demo) == list(project)
    for name, stage in demo.items():
        assert stage["cmd"] == project[name]["cmd"] and stage["params"] == project[name]["params"]
        assert len(stage["deps"]) == len(project[name]["deps"])
        for dep, original in zip(stage["deps"], project[name]["deps"], strict=True):
            if original.startswith("src/"):  # code: the repository's files, from the workspace
                assert (workspace / dep).resolve() == (REPO / original).resolve()
                assert (workspace / dep).exists(), dep
            else:  # the data and the outputs of earlier stages: the workspace's own
                assert dep == original


def test_demo_names_the_champion_that_stayed_when_the_new_model_loses():
    from flows.demo import champion_version

    lost = {"decision": "not-promoted", "version": "2", "champion": {"version": "1"}}

    assert champion_version(lost) == "1"
    assert champion_version({"decision": "promoted", "version": "2"}) == "2"
