"""Adding a stage touches three things: its module under ferflow.stages, its row in the
stage table (`STAGES`) and dvc.yaml written from the table. Everything else follows the
table: `ferflow run --stage`, the Prefect task with its timeout, retries and cache key, and
the flow's order. These tests add a stage `probe` (a module and a row, nothing else) and
find it in each of those places."""

from __future__ import annotations

import json
import sys
import types

import pytest
import yaml

from ferflow.cli import main
from ferflow.stages import STAGES, Layout, run_stage
from ferflow.stages.spec import DvcOut, StageSpec
from tests.conftest import PARAMS_FILE, small_params


def probe(params, layout):
    """The new stage: writes the seed it read to reports/probe.json."""
    layout.reports.mkdir(parents=True, exist_ok=True)
    out = layout.reports / "probe.json"
    out.write_text(json.dumps({"seed": params.base.seed}))
    return out


PROBE = StageSpec(
    "probe",
    "probing:probe",
    params=("base.seed",),
    code=("stages/layout.py",),
    inputs=(),
    outputs=("reports/probe.json",),
    timeout_s=77,
    cmd="ferflow run --stage probe",
    dvc_outs=(DvcOut("reports/probe.json", cache=False),),
)


@pytest.fixture
def probe_stage(monkeypatch, tmp_path):
    """The stage module and its row in the table; the working directory is a fresh repo."""
    module = types.ModuleType("ferflow.stages.probing")
    module.probe = probe  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ferflow.stages.probing", module)
    monkeypatch.setitem(STAGES, "probe", PROBE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_written_dvc_yaml_has_the_new_stage(probe_stage):
    from ferflow.stages import dvcfile

    stage = yaml.safe_load(dvcfile.render())["stages"]["probe"]

    assert stage == {
        "cmd": "ferflow run --stage probe",
        "deps": ["src/ferflow/stages/layout.py"],
        "params": ["base.seed"],
        "outs": [{"reports/probe.json": {"cache": False}}],
    }


def test_the_cli_runs_the_new_stage(probe_stage, capsys):
    assert main(["run", "--stage", "probe", "--params", str(PARAMS_FILE), "--set", "base.seed=5"]) == 0

    assert json.loads((probe_stage / "reports" / "probe.json").read_text()) == {"seed": 5}
    assert capsys.readouterr().out.strip().endswith('probe.json"')


def test_the_prefect_task_of_the_new_stage_has_its_timeout_and_cache_key(probe_stage):
    from tasks.pipeline import for_params

    params = small_params()
    layout = Layout.from_params(params, probe_stage)
    task = for_params(params)["probe"]

    assert (task.name, task.timeout_seconds, task.retries) == ("probe", 77, 0)
    assert for_params(small_params("flow.timeouts.probe=5"))["probe"].timeout_seconds == 5
    result = task.fn(params, layout)  # the task's body, without a Prefect server
    assert result["result"] == str(layout.reports / "probe.json")
    assert set(result["outputs"]) == {"reports/probe.json"}
    key = task.cache_key_fn(None, {"params": params, "layout": layout})
    assert key.startswith("ferflow-probe-")
    assert task.cache_key_fn(None, {"params": small_params("base.seed=99"), "layout": layout}) != key


def test_the_flow_runs_the_new_stage_in_table_order(probe_stage, monkeypatch):
    from flows import retrain

    params = small_params("flow.cache=false")
    layout = Layout.from_params(params, probe_stage)
    ran: list[str] = []

    def step(name):
        def run(params, layout):
            ran.append(name)
            return {"result": run_stage(name, params, layout) if name == "probe" else {}, "outputs": {}}

        return run

    monkeypatch.setattr(retrain.reports, "publish_run_report", lambda markdown, metrics: None)
    steps = {name: step(name) for name in STAGES}

    retrain._run_pipeline(params, layout, steps, 0.0, {"pull_data": True, "push_data": False})

    assert ran == [name for name in STAGES if name != "push-data"]
    assert ran[-1] == "probe"
    assert (probe_stage / "reports" / "probe.json").exists()
