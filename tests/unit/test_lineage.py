"""Issue #24 (1, 2): a phase's files carry the run, params and data they came from; a head,
a model or a backup that belongs to another run, params or data is refused or set aside;
one `train` or `finetune` at a time per models folder.

Fast: no training. Model files here are stand-in bytes (the checks read their sha256, not
their weights); the CLI tests run `ferflow` in-process on a throwaway SQLite store.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from ferflow.cli import main
from ferflow.config import load_params
from ferflow.stages import Layout, lineage
from tests.conftest import REPO, small_params

PARAMS = small_params()


@pytest.fixture
def layout(tmp_path) -> Layout:
    """A workspace whose prepared data is a manifest (all the lineage checks read)."""
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "manifest.csv").write_text("id,split\nr0,train\n")
    return Layout(raw=prepared, prepared=prepared, models=tmp_path / "models", reports=tmp_path / "reports")


def write_head(
    layout: Layout, params=PARAMS, run_id: str = "run-a", content: bytes = b"head"
) -> lineage.Lineage:
    """head.keras as `ferflow train` leaves it: the file, then its lineage record."""
    layout.models.mkdir(parents=True, exist_ok=True)
    layout.head_model.write_bytes(content)
    return lineage.record(
        layout.head_model, lineage.current(params, layout, "train", run_id, f"{run_id}-train")
    )


# --- phase 2 continues only its own head ---------------------------------------------------------


def test_a_head_trained_with_other_params_is_refused_naming_the_change(layout):
    # given head.keras trained with head_units [64]
    write_head(layout, small_params("model.head_units=[64]", "model.dropout=[0.1]"))
    # when phase 2 is asked to continue it with head_units [32] (params.yaml edited in between)
    with pytest.raises(lineage.LineageError) as refused:
        lineage.check_head(small_params("model.head_units=[32]", "model.dropout=[0.1]"), layout)
    # then it says what differs and what to run
    assert "model.head_units: 64 -> 32" in str(refused.value)
    assert "run `ferflow train`" in str(refused.value)


def test_finetune_params_do_not_concern_the_head(layout):
    made = write_head(layout)

    assert lineage.check_head(small_params("finetune.epochs=7"), layout) == made


def test_a_head_replaced_after_training_is_refused(layout):
    write_head(layout)
    layout.head_model.write_bytes(b"another head")

    with pytest.raises(lineage.LineageError, match="not the file run run-a recorded"):
        lineage.check_head(PARAMS, layout)


def test_a_head_trained_on_other_data_is_refused(layout):
    write_head(layout)
    (layout.prepared / "manifest.csv").write_text("id,split\nr9,train\n")  # re-ingested since

    with pytest.raises(lineage.LineageError, match="trained on other data"):
        lineage.check_head(PARAMS, layout)


def test_a_head_without_a_record_is_refused(layout):
    layout.models.mkdir()
    layout.head_model.write_bytes(b"head from an older ferflow")

    with pytest.raises(lineage.LineageError, match="no lineage record"):
        lineage.check_head(PARAMS, layout)


def test_a_head_whose_run_failed_is_refused():
    with pytest.raises(lineage.LineageError, match="made by run a, which is KILLED; run `ferflow train`"):
        lineage.require_finished({"status": "KILLED"}, "a", "models/head.keras", "ferflow train")


# --- register: only the model run.json's run made, from the params and data it logged ------------


def finished(params=PARAMS, **tags) -> dict:
    logged = {key: str(value) for key, value in params.flat().items()}
    return {"status": "FINISHED", "params": logged, "tags": tags}


def write_model(layout: Layout, run_id: str, params=PARAMS, content: bytes = b"model") -> lineage.Lineage:
    layout.models.mkdir(parents=True, exist_ok=True)
    layout.model_file.write_bytes(content)
    made = lineage.current(params, layout, "finetune", run_id, f"{run_id}-finetune")
    return lineage.record(layout.model_file, made)


def test_the_model_of_a_finished_run_is_registrable(layout):
    made = write_model(layout, "run-a")
    state = finished(**{lineage.MODEL_SHA_TAG: made.sha256, lineage.MANIFEST_TAG: made.data_digest})

    assert lineage.check_registrable(layout, "run-a", state) == made


@pytest.mark.parametrize("status", ["FAILED", "KILLED"])
def test_a_failed_or_killed_run_gets_nothing_registered(layout, status):
    # given model.keras of run A and run.json naming run B, whose finetune failed
    write_model(layout, "run-a")
    # when it is registered under run B, then it is refused naming both runs
    with pytest.raises(lineage.LineageError) as refused:
        lineage.check_registrable(layout, "run-b", {**finished(), "status": status})
    message = str(refused.value)
    assert f"run run-b of {layout.run_file} is {status}" in message
    assert "made by run run-a" in message and "nothing was registered" in message


def test_a_model_made_by_another_run_is_not_registered_under_this_one(layout):
    write_model(layout, "run-a")

    with pytest.raises(lineage.LineageError, match=r"was made by run run-a, but .* names run run-b"):
        lineage.check_registrable(layout, "run-b", finished())


def test_a_model_the_run_did_not_record_is_refused(layout):
    write_model(layout, "run-a")

    with pytest.raises(lineage.LineageError, match="recorded a model file with sha256 0123456789ab"):
        lineage.check_registrable(layout, "run-a", finished(**{lineage.MODEL_SHA_TAG: "0123456789abcdef"}))


def test_a_model_made_with_other_params_than_its_run_logged_is_refused(layout):
    write_model(layout, "run-a", small_params("finetune.epochs=1"))

    with pytest.raises(lineage.LineageError, match=r"finetune.epochs: 1 -> 30"):
        lineage.check_registrable(layout, "run-a", finished(small_params("finetune.epochs=30")))


def test_a_model_logged_by_hand_is_registered_as_before(layout, caplog):
    # given model.keras with no lineage and a finished run that recorded no model file
    layout.models.mkdir()
    layout.model_file.write_bytes(b"hand-made")
    # then it is registrable, with a warning
    with caplog.at_level(logging.WARNING):
        assert lineage.check_registrable(layout, "run-a", finished()) is None
    assert "no lineage record" in caplog.text


# --- backups belong to their params and data ------------------------------------------------------


def backup_of(layout: Layout, params, run_id: str, stage: str = "finetune") -> tuple[Path, lineage.Lineage]:
    folder = layout.backup(stage)
    owner = lineage.current(params, layout, stage, run_id, None, {"head.keras": "h1"})
    lineage.claim_backup(folder, owner)
    (folder / "state.npz").write_bytes(b"epoch 26")
    return folder, owner


def test_a_backup_of_other_params_is_moved_aside_with_one_line(layout, caplog):
    # given the phase 2 backup of a killed run with finetune.epochs 30
    folder, _ = backup_of(layout, small_params("finetune.epochs=30"), "killed")
    # when phase 2 starts with finetune.epochs 1
    owner = lineage.current(
        small_params("finetune.epochs=1"), layout, "finetune", "new", None, {"head.keras": "h1"}
    )
    with caplog.at_level(logging.WARNING):
        lineage.claim_backup(folder, owner)
    # then the old backup is set aside, said so in one line, and the phase starts afresh
    aside = list(folder.parent.glob("finetune.set-aside-*"))
    assert len(aside) == 1 and (aside[0] / "state.npz").read_bytes() == b"epoch 26"
    assert not (folder / "state.npz").exists()
    assert lineage.read(folder / "lineage.json").run_id == "new"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "finetune.epochs: 30 -> 1" in warnings[0].getMessage()


def test_a_backup_of_the_same_params_and_data_is_resumed_by_the_next_run(layout, caplog):
    folder, owner = backup_of(layout, PARAMS, "killed")

    with caplog.at_level(logging.INFO):
        lineage.claim_backup(folder, replace(owner, run_id="next"))

    assert (folder / "state.npz").read_bytes() == b"epoch 26"
    assert "resuming the finetune backup of run killed" in caplog.text


def test_a_backup_taken_at_another_backup_interval_is_resumed(layout, caplog):
    # given the backup of a run that backed up every 120 s
    folder, _ = backup_of(layout, small_params("finetune.backup_every_s=120"), "killed")
    # when the rerun backs up every 30 s (how often it backs up does not shape the model)
    owner = lineage.current(
        small_params("finetune.backup_every_s=30"), layout, "finetune", "next", None, {"head.keras": "h1"}
    )
    with caplog.at_level(logging.INFO):
        lineage.claim_backup(folder, owner)
    # then it resumes that backup
    assert (folder / "state.npz").read_bytes() == b"epoch 26"
    assert "resuming the finetune backup of run killed" in caplog.text


@pytest.mark.parametrize(
    "change",
    [
        lambda layout, owner: (layout.prepared / "manifest.csv").write_text("id\nother\n"),
        lambda layout, owner: (layout.backup("finetune") / "lineage.json").write_text("{trunc"),
        lambda layout, owner: (layout.backup("finetune") / "lineage.json").unlink(),
    ],
    ids=["other data", "garbled record", "no record"],
)
def test_a_backup_that_cannot_be_shown_to_match_is_moved_aside(layout, change):
    folder, owner = backup_of(layout, PARAMS, "killed")
    change(layout, owner)

    lineage.claim_backup(
        folder, lineage.current(PARAMS, layout, "finetune", "new", None, {"head.keras": "h1"})
    )

    assert not (folder / "state.npz").exists()
    assert len(list(folder.parent.glob("finetune.set-aside-*"))) == 1


def test_a_backup_continuing_another_head_is_moved_aside(layout):
    folder, owner = backup_of(layout, PARAMS, "killed")

    lineage.claim_backup(folder, replace(owner, run_id="new", inputs={"head.keras": "h2"}))

    assert not (folder / "state.npz").exists()


def test_an_epoch_backup_of_another_model_is_moved_aside_not_a_traceback(tmp_path, caplog):
    import keras

    from ferflow.training.backup import EpochBackup

    # given the backup of a model with 3 outputs
    small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    small.compile(optimizer="sgd", loss="mse")
    backup = EpochBackup(tmp_path)
    backup.set_model(small)
    backup.on_epoch_end(0)
    backup.close()
    (tmp_path / "epochs.json").write_text("[]")
    # when a model with 2 outputs restores it
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    other.compile(optimizer="sgd", loss="mse")
    with caplog.at_level(logging.WARNING):
        start = EpochBackup(tmp_path).restore(other)
    # then it starts afresh; the backup and its epochs are kept aside
    assert start.epoch == 0
    assert not (tmp_path / "state.npz").exists() and not (tmp_path / "epochs.json").exists()
    assert len(list(tmp_path.glob("state.npz.mismatch-*"))) == 1
    assert "another model" in caplog.text


# --- one training per models folder ---------------------------------------------------------------

HOLD = """
import sys, time
from pathlib import Path
from ferflow.stages.lineage import models_lock
with models_lock(Path(sys.argv[1]), "train"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def held_lock(tmp_path):
    """models/ locked by another process (a `ferflow train` in progress)."""
    models = tmp_path / "models"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(models)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert holder.stdout.readline().strip() == "held"
    yield models, holder
    holder.kill()
    holder.wait()


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_a_second_training_in_the_same_models_folder_is_refused_in_one_line(held_lock, command, capsys):
    models, holder = held_lock

    code = main([command, "--models", str(models), "--data", str(models.parent / "nowhere")])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"is in use by `ferflow train` (pid {holder.pid} on " in err[0]
    assert "nothing was run" in err[0]


def test_the_lock_of_a_process_killed_with_sigkill_is_free_at_once(held_lock):
    models, holder = held_lock
    holder.send_signal(signal.SIGKILL)
    holder.wait()

    started = time.monotonic()
    with lineage.models_lock(models, "finetune"):
        owner = json.loads((models / "training.lock").read_text())
    assert owner["pid"] == os.getpid() and owner["command"] == "finetune"
    assert time.monotonic() - started < 1


# --- the CLI: one line, nothing run, no status changed ---------------------------------------------


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A throwaway SQLite tracking store with one experiment."""
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    # the registry too: an earlier test may have left MLflow's global registry URI elsewhere
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    return client, client.create_experiment("ferflow"), uri


def ended_run(client, experiment: str, status: str) -> str:
    run_id = client.create_run(experiment).info.run_id
    client.set_terminated(run_id, status=status)
    return run_id


def test_register_after_a_diverged_finetune_refuses_and_the_run_stays_failed(store, layout, capsys):
    from ferflow.tracking.store import RunInfo, write_run_info

    client, experiment, uri = store
    # given model.keras of run A, and run.json naming run B whose finetune diverged
    run_a, run_b = ended_run(client, experiment, "FINISHED"), ended_run(client, experiment, "FAILED")
    write_model(layout, run_a)
    write_run_info(layout.run_file, RunInfo(run_b, experiment, uri))
    # when `ferflow register` runs
    where = ["--models", str(layout.models), "--reports", str(layout.reports)]
    code = main(["register", "--params", str(REPO / "params.yaml"), *where])
    # then one line, nothing registered, and B is still FAILED
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"run {run_b} of {layout.run_file} is FAILED" in err[0] and f"made by run {run_a}" in err[0]
    assert client.get_run(run_b).info.status == "FAILED"
    assert client.search_registered_models() == []


def test_finetune_with_edited_params_refuses_before_any_run_starts(store, layout, capsys):
    client, experiment, _ = store
    # given head.keras of a finished train run, made with head_units [16]
    trained = ended_run(client, experiment, "FINISHED")
    layout.models.mkdir()
    layout.head_model.write_bytes(b"head")
    params = load_params(REPO / "params.yaml", ["model.head_units=[16]", "model.dropout=[0.1]"])
    made = lineage.current(params, layout, "train")
    lineage.record(layout.head_model, replace(made, run_id=trained, phase_run_id=trained))
    # when finetune runs with head_units [32] (params.yaml edited since)
    edited = ["--set", "model.head_units=[32]", "--set", "model.dropout=[0.1]"]
    where = [
        "--params",
        str(REPO / "params.yaml"),
        "--models",
        str(layout.models),
        "--data",
        str(layout.prepared),
    ]
    code = main(["finetune", *where, *edited])
    # then one line naming the change, and no MLflow run was started
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "model.head_units: 16 -> 32" in err[0] and "run `ferflow train`" in err[0]
    assert len(client.search_runs([experiment])) == 1


# --- runs: failed ones stay failed; run.json says what a run was made from ------------------------


@pytest.mark.parametrize("status", ["FAILED", "KILLED"])
def test_phase_two_never_reopens_a_failed_or_killed_run(store, layout, status, caplog):
    from ferflow.stages.fine_tuning import _continues_run
    from ferflow.tracking.store import RunInfo, write_run_info

    client, experiment, uri = store
    # given head.keras of run A (phase 1 finished), and run A then failed or was killed in phase 2
    head = write_head(layout, run_id=ended_run(client, experiment, status))
    write_run_info(layout.run_file, RunInfo(head.run_id, experiment, uri))
    # when phase 2 decides which run to log into, then it is a new one; A's status stays
    with caplog.at_level(logging.INFO):
        assert _continues_run(PARAMS, layout, head) is False
    assert f"is {status}: phase 2 gets a new run" in caplog.text
    assert client.get_run(head.run_id).info.status == status


def test_phase_two_continues_the_finished_run_of_its_head(store, layout):
    from ferflow.stages.fine_tuning import _continues_run
    from ferflow.tracking.runs import pipeline_run

    # given phase 1's parent run, finished, with no model yet
    with pipeline_run(PARAMS, layout.prepared, layout.run_file, resume=False) as run:
        pass
    head = write_head(layout, run_id=run.run_id)
    # then phase 2 continues it with the same params, and not with other finetune params
    assert _continues_run(PARAMS, layout, head) is True
    assert _continues_run(small_params("finetune.epochs=9"), layout, head) is False
    # and run.json records the run's params and data digests
    recorded = json.loads(layout.run_file.read_text())
    assert recorded["params_digest"] == PARAMS.digest()
    assert recorded["data_digest"] == head.data_digest
