"""ferflow's log lines reach the Prefect flow run's logs (issue #23: the Logs tab held only
"Finished in state Completed()"), with the settings `ferflow run` and the deployments use."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

FLOW = """
import json, logging, time
from flows.local import quiet_prefect_defaults
quiet_prefect_defaults()  # what `ferflow run` does before importing Prefect
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.runtime import flow_run

logging.getLogger("ferflow.cli").setLevel("INFO")
logging.getLogger("ferflow").setLevel("INFO")
logging.getLogger("tasks").setLevel("INFO")
logging.getLogger("ferflow.cli").info("a line outside any run")

@task
def finetune():
    logging.getLogger("ferflow.training.monitors").info("epoch 3/10: val_accuracy 0.512")

@flow
def retrain():
    finetune()
    logging.getLogger("tasks.pipeline").info("register: promoted (macro_f1 0.41 > 0.38)")
    return str(flow_run.id)

run_id = retrain()
with get_client(sync_client=True) as client:
    for _ in range(60):  # logs go to the API in batches, from a background thread
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        if any(log.message.startswith("register:") for log in logs):
            break
        time.sleep(0.5)
print(json.dumps(sorted(log.message for log in logs)))
"""


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_ferflow_log_lines_are_in_the_flow_runs_logs(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    done = subprocess.run(
        [sys.executable, "-c", FLOW], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540
    )
    assert done.returncode == 0, done.stderr
    messages = json.loads(done.stdout.strip().splitlines()[-1])
    # the task's and the flow's ferflow lines are in the run's logs, as Prefect's own are
    assert "epoch 3/10: val_accuracy 0.512" in messages
    assert "register: promoted (macro_f1 0.41 > 0.38)" in messages
    assert any(m.startswith("Finished in state Completed") for m in messages)
    # a line from outside any run stays on the console only, without a warning about it
    assert "a line outside any run" not in messages
    assert "attempted to send logs to the API without a flow run id" not in done.stderr
