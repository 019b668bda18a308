"""MLflow runs of the pipeline: one parent run per pipeline run, a nested run per phase.

The naming follows docs/architecture.md:

- parent run `YYYYmmdd-HHMM-data<8>-p<6>`, nested runs named after their stage (`train`,
  `finetune`);
- every resolved param (`Params.flat()`) logged once on the parent, secrets redacted, and
  on each phase run the params it ran with (a stage re-run alone may differ);
- per-epoch `loss`, `accuracy`, `val_loss`, `val_accuracy` on the phase run and the parent,
  `step` = the global epoch (phase 2 continues where phase 1 stopped);
- tags `ferflow.git_commit`, `ferflow.data_version`, `ferflow.manifest_digest`,
  `ferflow.params_digest`, and the manifest as an MLflow dataset input (data lineage);
- the evaluation: the `test.*` summary metrics, the report files under `evaluation/`, the
  per-class metrics as the table `evaluation/per_class.json`, and the training curves and
  confusion matrices as keyed images (shown on the run page).

A stage that raises marks its runs FAILED; Ctrl-C marks them KILLED: no run is left
RUNNING by an exception.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferflow.config import Params
from ferflow.tracking.store import (
    HEARTBEAT_TAG,
    HOST_TAG,
    PARAMS_ARTIFACT,
    PID_TAG,
    RunInfo,
    client,
    data_version,
    experiment_id,
    git_commit,
    logged_params,
    now_stamp,
    process_alive,
    read_run_info,
    redact,
    resolved_params,
    run_params,
    tracking_uri,
    write_run_info,
)

if TYPE_CHECKING:
    from ferflow.tracking.epochs import EpochLogger

log = logging.getLogger(__name__)

SWEPT_TAG = "ferflow.swept"
# on a parent run whose phase 1 ran in an earlier parent run (a finetune rerun alone)
PHASE_FROM_TAG = "ferflow.{phase}_from_run"


def run_name(params: Params, data_hash: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M", time.gmtime())
    return f"{stamp}-data{data_hash[:8]}-p{params.digest()[:6]}"


@contextlib.contextmanager
def _status_on_exit(mlflow: Any) -> Iterator[None]:
    """End the active run FAILED on an exception, KILLED on Ctrl-C, FINISHED otherwise."""
    try:
        yield
    except KeyboardInterrupt:
        mlflow.end_run(status="KILLED")
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


def set_run_status(uri: str, run_id: str, status: str) -> None:
    """Mark a run FAILED or KILLED from outside it (an orchestrator's crash hook)."""
    mlflow_client = client(uri)
    if mlflow_client.get_run(run_id).info.status != status:
        mlflow_client.set_terminated(run_id, status=status)


@contextlib.contextmanager
def pipeline_run(
    params: Params, data_dir: Path, run_file: Path, *, resume: bool, raw: Path | None = None
) -> Iterator[RunInfo]:
    """The parent run, active for the `with` block.

    resume=False starts a new parent run (phase 1) and writes `run_file`; resume=True
    reopens the run recorded there (later stages), or starts a new one when there is none.
    `raw` is the raw data the prepared `data_dir` came from: its DVC version is the run's
    `ferflow.data_version` (provenance only).
    """
    import mlflow

    uri = tracking_uri(params)
    mlflow_client = client(uri)
    while mlflow.active_run():  # a leftover from an earlier crash in this process
        mlflow.end_run(status="FAILED")
    previous = read_run_info(run_file) if resume else None
    if previous is not None:
        active = mlflow.start_run(run_id=previous.run_id)
        info = replace(
            previous, run_id=active.info.run_id, experiment_id=active.info.experiment_id, tracking_uri=uri
        )
    else:
        from ferflow.data.dataset import manifest_digest

        experiment = experiment_id(mlflow_client, params.tracking.experiment, uri)
        version = data_version(data_dir, raw)
        active = mlflow.start_run(run_name=run_name(params, version), experiment_id=experiment)
        digests = {"params_digest": params.digest(), "data_digest": manifest_digest(data_dir)}
        info = RunInfo(active.info.run_id, active.info.experiment_id, uri, **digests)
    log.info("MLflow run %s (experiment %s) at %s", info.run_id, info.experiment_id, redact(uri))
    with _status_on_exit(mlflow):
        mlflow.set_tags(_liveness())
        if previous is None:
            _log_parent_metadata(mlflow, params, data_dir, version)
            write_run_info(run_file, info)
        yield info


def _log_parent_metadata(mlflow: Any, params: Params, data_dir: Path, version: str) -> None:
    import pandas as pd

    from ferflow.data.dataset import MANIFEST_FILE, manifest_digest

    mlflow.log_params(logged_params(params))  # what people compare; every param: the artifact
    mlflow.log_dict(resolved_params(params), PARAMS_ARTIFACT)  # the whole file, in its sections
    digest = manifest_digest(data_dir)
    mlflow.set_tags(
        {
            "ferflow.git_commit": git_commit(),
            "ferflow.data_version": version,
            "ferflow.manifest_digest": digest,
            "ferflow.params_digest": params.digest(),
        }
    )
    manifest = pd.read_csv(Path(data_dir) / MANIFEST_FILE, dtype=str)
    dataset = mlflow.data.from_pandas(
        manifest, source=str(Path(data_dir).resolve()), name="fer-prepared", digest=digest[:36]
    )
    mlflow.log_input(dataset, context="training")


@contextlib.contextmanager
def phase_run(
    info: RunInfo,
    phase: str,
    epoch_offset: int = 0,
    params: Params | None = None,
    continues: str | None = None,
) -> Iterator[EpochLogger]:
    """A nested run for one phase under the active parent; yields the per-epoch logger.

    With `params`, the phase run records the params it ran with (and their digest): the
    parent holds those phase 1 started with, and a later stage re-run alone (`dvc repro`
    after a `finetune.*` change) may have run with others. `continues`: the phase run of a
    killed or failed attempt whose backup this one resumes; it is reopened (its params are
    logged already) rather than another run added.
    """
    import mlflow

    from ferflow.tracking.epochs import EpochLogger

    reopened = continues is not None and _reopenable(info.tracking_uri, continues, info.run_id)
    if reopened:
        mlflow.start_run(run_id=continues, nested=True)
        log.info("continuing the %s run %s, resumed from its backup", phase, continues)
    else:
        # The experiment must be explicit: in a fresh process (a later DVC stage) no
        # experiment is active and the nested run would land in "Default".
        mlflow.start_run(
            run_name=phase, nested=True, parent_run_id=info.run_id, experiment_id=info.experiment_id
        )
    active = mlflow.active_run()
    assert active is not None
    with _status_on_exit(mlflow):
        mlflow.set_tags(_liveness())
        if params is not None and not reopened:
            mlflow.log_params(logged_params(params))
            mlflow.log_dict(resolved_params(params), PARAMS_ARTIFACT)
            mlflow.set_tag("ferflow.params_digest", params.digest())
        yield EpochLogger([active.info.run_id, info.run_id], epoch_offset, info.tracking_uri)


def _reopenable(uri: str, run_id: str, parent_id: str) -> bool:
    """Whether `run_id` is a phase run of `parent_id` that did not finish (killed, failed,
    or RUNNING after a hard kill): the one a resumed phase continues."""
    state = run_state(uri, run_id, params=False)
    return (
        state is not None
        and state["status"] != "FINISHED"
        and state["tags"].get("mlflow.parentRunId") == parent_id
    )


def log_summary(phase: str, records: Sequence[Mapping[str, Any]], run_ids: Sequence[str]) -> None:
    """`<phase>.best_val_accuracy`, `<phase>.best_val_loss`, `<phase>.epochs` (and, under
    `epochs: auto`, `<phase>.epochs_planned`) on each run."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    if not records:
        return
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"{phase}.best_val_accuracy", max(r["val_accuracy"] for r in records), now, 0),
        Metric(f"{phase}.best_val_loss", min(r["val_loss"] for r in records), now, 0),
        Metric(f"{phase}.epochs", float(len(records)), now, 0),
    ]
    if "epochs_planned" in records[-1]:  # `epochs: auto`: what the time budget resolved
        metrics.append(Metric(f"{phase}.epochs_planned", float(records[-1]["epochs_planned"]), now, 0))
    tracker = MlflowClient()
    for run_id in run_ids:
        tracker.log_batch(run_id, metrics=metrics)


def log_earlier_phase(
    info: RunInfo, phase: str, records: Sequence[Mapping[str, Any]], source_run_id: str
) -> None:
    """Copy a phase that ran in an earlier parent run (`source_run_id`) onto this one: its
    per-epoch metrics at their global epochs, its summary, and a tag naming the source, so
    the new run's curves and `<phase>.*` metrics are whole and say where they came from."""
    from mlflow.entities import Metric, RunTag

    from ferflow.training.callbacks import EPOCH_METRICS  # Keras is loaded: this runs in phase 2

    now = int(time.time() * 1000)
    metrics = [
        Metric(name, float(record[name]), now, int(record["epoch"]))
        for record in records
        for name in EPOCH_METRICS
        if name in record
    ]
    tracker = client(info.tracking_uri)
    tag = RunTag(PHASE_FROM_TAG.format(phase=phase), source_run_id)
    for start in range(0, len(metrics), 900):  # MLflow takes at most 1,000 metrics per batch
        tracker.log_batch(info.run_id, metrics=metrics[start : start + 900])
    tracker.log_batch(info.run_id, tags=[tag])
    log_summary(phase, records, [info.run_id])


def _liveness() -> dict[str, str]:
    """The tags `sweep` reads: this host, this process, now."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), HEARTBEAT_TAG: now_stamp()}


def sweep(tracker: Any, experiment: str, stale_after_s: float) -> list[tuple[str, str]]:
    """Mark FAILED the RUNNING ferflow runs whose process is gone; returns (run id, why).

    A run of this host whose process (`ferflow.pid`) no longer exists is dead (a `kill -9`,
    an out-of-memory kill, a power cut); a run of another host is judged by its heartbeat
    (every epoch, and at every stage start): silent for `stale_after_s`, it is dead. Runs
    without ferflow's liveness tags are not ferflow's and are left alone. `tracker`: an
    MlflowClient (`Session.sweep_stale` passes its own).
    """
    found = tracker.get_experiment_by_name(experiment)
    if found is None:
        return []
    here, now, swept = socket.gethostname(), time.time(), []
    for run in tracker.search_runs([found.experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        host, pid, beat = tags.get(HOST_TAG), tags.get(PID_TAG, ""), tags.get(HEARTBEAT_TAG, "")
        if host is None:
            continue
        if host == here and pid.isdigit():
            why = None if process_alive(int(pid)) else f"its process {pid} on {host} is gone"
        elif beat.replace(".", "", 1).isdigit() and now - float(beat) > stale_after_s:
            why = f"no heartbeat from {host} for {now - float(beat):.0f} s"
        else:
            why = None
        if why:
            tracker.set_tag(run.info.run_id, SWEPT_TAG, why)
            tracker.set_terminated(run.info.run_id, status="FAILED")
            log.warning("marked MLflow run %s FAILED: %s", run.info.run_id, why)
            swept.append((run.info.run_id, why))
    return swept


def recorded_run(run_file: Path) -> dict[str, Any]:
    """models/run.json as a dict (run id, experiment id, tracking URI, model URI), or {}
    before training or when the file is unreadable: for reports, never raises."""
    from ferflow.tracking.store import TrackingError

    try:
        run = read_run_info(run_file)
    except TrackingError:
        return {}
    return run.to_json() if run else {}


def mark_recorded_run(run_file: Path, since: float, status: str) -> str | None:
    """Mark the MLflow run of `run_file` (models/run.json) `status` (FAILED or KILLED) if
    training wrote that file after `since` (epoch seconds): only a run this pipeline run
    started.

    Returns the run id it marked, or None. Raises only ValueError for a `status` other
    than those two (a programming error); every tracking or file fault is logged and
    swallowed: it runs while a failure is already being reported, and must not hide it.
    """
    from ferflow.tracking.store import run_uri

    if status not in ("FAILED", "KILLED"):
        raise ValueError(f"status must be FAILED or KILLED, got {status!r}")
    try:
        run = read_run_info(run_file)
        if run is None or run_file.stat().st_mtime < since:
            return None
        set_run_status(run_uri(run), run.run_id, status)
    except Exception as err:  # reporting a failure must not raise another one
        log.warning("could not mark the MLflow run of %s %s: %s", run_file, status, err)
        return None
    log.info("marked MLflow run %s %s", run.run_id, status)
    return run.run_id


def log_evaluation(
    uri: str,
    run_id: str,
    metrics: Mapping[str, float],
    files: Sequence[Path],
    tables: Mapping[str, Mapping[str, Sequence[Any]]] | None = None,
    images: Mapping[str, Path] | None = None,
    step: int = 0,
) -> None:
    """Log `test.*` metrics, the evaluation files (folders: their contents) under
    `evaluation/`, `tables` (artifact path -> columns) with MLflow's `log_table`, and
    `images` (key -> PNG) as keyed images at `step`: the run page shows keyed images among
    its charts, an artifact only under Artifacts."""
    from mlflow.entities import Metric
    from PIL import Image

    tracker = client(uri)
    now = int(time.time() * 1000)
    tracker.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in sorted(metrics.items())])
    for path in files:
        if path.is_dir():
            tracker.log_artifacts(run_id, str(path), "evaluation")
        elif path.exists():
            tracker.log_artifact(run_id, str(path), "evaluation")
    for artifact_file, columns in (tables or {}).items():
        tracker.log_table(run_id, data=dict(columns), artifact_file=artifact_file)
    for key, png in (images or {}).items():
        if png.exists():
            with Image.open(png) as image:
                tracker.log_image(run_id, image.convert("RGB"), key=key, step=step, synchronous=True)
    log.info(
        "logged %d test metrics, %d tables and %d images to MLflow run %s",
        len(metrics),
        len(tables or {}),
        len(images or {}),
        run_id,
    )


def run_state(uri: str, run_id: str, *, params: bool = True) -> dict[str, Any] | None:
    """A run's `status`, `params` (every one, `store.run_params`) and `tags`, or None when
    the store has no such run (what ferflow.stages.lineage checks a phase's outputs against).
    `params=False` leaves the params out (`{}`): no artifact download for a status check."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(uri)
    try:
        run = mlflow_client.get_run(run_id)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    logged = run_params(mlflow_client, run) if params else {}
    return {"status": run.info.status, "params": logged, "tags": dict(run.data.tags)}
