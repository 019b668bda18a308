"""Lineage: which MLflow run made each file under models/, from which params and data.

A phase's outputs are tied to the run that made them, so that no stale, failed or foreign
file is continued, resumed or registered as another run's:

- `models/<name>.keras.lineage.json`, beside head.keras and model.keras: the file's sha256,
  the parent and phase run ids, the params the stage reads (`STAGES`, less `tracking`:
  where runs are logged is not what a model is made of) and the manifest digest of the
  prepared data. Written after the model file, so a file replaced, restored from elsewhere
  or cut short no longer matches its record.
- `models/backup/<stage>/lineage.json`: the same for a phase's epoch backup. A phase
  resumes only a backup made with its params and data (and, in phase 2, from the same
  head.keras); any other backup is moved aside with one warning (`claim_backup`).
- history.json records the lineage of each phase's epochs, run.json the run they log to.

`check_head` (finetune) and `check_registrable` (register) refuse, in one line naming
what differs and what to run, a file whose run failed or was killed, or whose params or
data differ from what it is used with. `models_lock` admits one `train` or `finetune` at a
time per models folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ferflow.config import Params
from ferflow.errors import FerflowError
from ferflow.files import BACKUP_LINEAGE, BACKUP_STATE, LINEAGE_SUFFIX, TRAINING_LOCK, file_sha256, write_json
from ferflow.stages.layout import Layout, history_lineage
from ferflow.stages.spec import STAGES, selects, stage_params, values_digest

log = logging.getLogger(__name__)

# on a parent run, once phase 2 logged its model: the sha256 of models/model.keras
MODEL_SHA_TAG = "ferflow.model_sha256"
MANIFEST_TAG = "ferflow.manifest_digest"
# params a stage reads that do not shape its outputs (where runs go, how much is logged)
NOT_LINEAGE = ("tracking", "base.log_level", "finetune.backup_every_s")
TRAINING_ROWS_INPUT = "reports/training_rows.json"  # STAGES' name of validate's row selection
TRAINING_ROWS_KEY = "training_rows"  # its digest among a training stage's lineage params


class LineageError(FerflowError, RuntimeError):
    """A file under models/ does not belong to the run, params or data it is used with."""


class ModelsFolderBusyError(FerflowError, RuntimeError):
    """Another `train` or `finetune` is running in the same models folder."""


@dataclass(frozen=True)
class Lineage:
    """Who made a file: the stage, its parent and phase runs, the params and data."""

    stage: str
    run_id: str
    phase_run_id: str | None
    params: dict[str, Any]
    data_digest: str
    sha256: str | None = None  # of the file described, once written
    inputs: dict[str, str] = field(default_factory=dict)  # files it continued: name -> sha256

    @property
    def params_digest(self) -> str:
        return values_digest(self.params)

    def summary(self) -> dict[str, Any]:
        """What history.json keeps per phase."""
        return {
            "run_id": self.run_id,
            "phase_run_id": self.phase_run_id,
            "params_digest": self.params_digest,
            "data_digest": self.data_digest,
        }


def current(
    params: Params,
    layout: Layout,
    stage: str,
    run_id: str = "",
    phase_run_id: str | None = None,
    inputs: Mapping[str, str] | None = None,
) -> Lineage:
    """The lineage `stage` run now would give its outputs. A training stage's params include
    `training_rows`, the digest of the train rows validate left out (reports/training_rows.json)."""
    from ferflow.data.dataset import TrainingRows, manifest_digest, read_training_rows

    chosen = stage_params(params, STAGES[stage].params)
    shaping = {key: value for key, value in chosen.items() if not selects(key, NOT_LINEAGE)}
    data = manifest_digest(layout.prepared)  # hashed once: the rows file is checked against it
    if TRAINING_ROWS_INPUT in STAGES[stage].inputs:
        rows = read_training_rows(layout.training_rows_file, layout.prepared, data)
        shaping[TRAINING_ROWS_KEY] = (rows or TrainingRows("", 0, {})).digest()
    return Lineage(stage, run_id, phase_run_id, shaping, data, None, dict(inputs or {}))


def sidecar(path: Path) -> Path:
    """models/head.keras -> models/head.keras.lineage.json"""
    return path.with_name(path.name + LINEAGE_SUFFIX)


def record(path: Path, lineage: Lineage) -> Lineage:
    """Write the lineage of the file `path` (written just before), with its sha256."""

    stamped = replace(lineage, sha256=file_sha256(path))
    write_json(sidecar(path), asdict(stamped))
    return stamped


def read(path: Path) -> Lineage | None:
    """The lineage in the JSON file `path`, or None when there is none."""
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        return Lineage(
            stage=str(raw["stage"]),
            run_id=str(raw["run_id"]),
            phase_run_id=raw.get("phase_run_id"),
            params=dict(raw["params"]),
            data_digest=str(raw["data_digest"]),
            sha256=raw.get("sha256"),
            inputs=dict(raw.get("inputs") or {}),
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise LineageError(
            f"{path} is not a ferflow lineage record ({err}); rerun the stage that wrote it"
        ) from err


def params_changes(recorded: Mapping[str, Any], now: Mapping[str, Any], limit: int = 4) -> list[str]:
    """`key: recorded -> now` for each key whose value differs (compared as MLflow logs them)."""
    changed = [
        f"{key}: {recorded.get(key)} -> {now.get(key)}"
        for key in sorted(set(recorded) | set(now))
        if str(recorded.get(key)) != str(now.get(key))
    ]
    return changed[:limit] + ([f"{len(changed) - limit} more"] if len(changed) > limit else [])


# --- phase 2 starts from head.keras ---------------------------------------------------------


def check_head(params: Params, layout: Layout) -> Lineage:
    """The lineage of head.keras, after checking that phase 2 may continue it with `params`
    on the prepared data: it is the file `train` recorded, from the same data and params."""
    head = read(sidecar(layout.head_model))
    if head is None:
        raise LineageError(
            f"{layout.head_model} has no lineage record ({sidecar(layout.head_model).name}): it was "
            "not written by `ferflow train` (or by an older ferflow); run `ferflow train`"
        )
    _require_intact(layout.head_model, head, "ferflow train")
    _require_same_origin(layout.head_model, head, current(params, layout, head.stage), "ferflow train")
    return head


def require_finished(state: Mapping[str, Any] | None, run_id: str | None, what: str, rerun: str) -> None:
    """Refuse a file whose run (MLflow `state`) is missing, failed or was killed."""
    if state is None:
        raise LineageError(
            f"{what} was made by run {run_id}, which this tracking store does not hold; check "
            f"MLFLOW_TRACKING_URI, or run `{rerun}`"
        )
    if state["status"] != "FINISHED":
        raise LineageError(f"{what} was made by run {run_id}, which is {state['status']}; run `{rerun}`")


def check_history(layout: Layout, head: Lineage) -> None:
    """history.json's phase 1 epochs must be head.keras's (their lineage names its run)."""
    made_by = (history_lineage(layout.history_file).get(head.stage) or {}).get("run_id")
    if made_by is not None and made_by != head.run_id:
        raise LineageError(
            f"{layout.history_file} holds the epochs of run {made_by}, but {layout.head_model} was "
            f"made by run {head.run_id}; run `ferflow train` (under DVC: `dvc repro --force train`)"
        )


# --- register ---------------------------------------------------------------------------------


def check_registrable(layout: Layout, run_id: str | None, state: Mapping[str, Any] | None) -> Lineage | None:
    """Refuse to register models/model.keras under run `run_id` (run.json's; `state` its
    MLflow status, params and tags) unless that run finished and made this very file, from
    the params and data it logged. Returns the model's lineage; None for a model neither
    the file nor its run describes (logged by hand, or by a ferflow before lineage)."""
    path, model = layout.model_file, read(sidecar(layout.model_file))
    if model is not None:
        _require_intact(path, model, "ferflow finetune")
    if run_id is None:
        if model is None:
            return None
        raise LineageError(
            f"{layout.run_file} is missing, but {path} was made by run {model.run_id}; nothing was "
            "registered. Run `ferflow finetune` to train a model with a run of its own"
        )
    if state is None:
        raise LineageError(
            f"{layout.run_file} names run {run_id}, which this tracking store does not hold; nothing "
            "was registered. Check MLFLOW_TRACKING_URI, or run `ferflow train` and `ferflow finetune`"
        )
    made_elsewhere = f" ({path} was made by run {model.run_id})" if model and model.run_id != run_id else ""
    if state["status"] != "FINISHED":
        raise LineageError(
            f"run {run_id} of {layout.run_file} is {state['status']}: it has no model to register"
            f"{made_elsewhere}; nothing was registered. Run `ferflow finetune` to train one in a new run"
        )
    recorded_sha = state["tags"].get(MODEL_SHA_TAG)
    if model is None:
        if recorded_sha:
            raise LineageError(
                f"{path} has no lineage record, and run {run_id} recorded another model file "
                f"(sha256 {recorded_sha[:12]}); nothing was registered. Run `ferflow finetune`"
            )
        log.warning("%s has no lineage record (logged by hand?): registering it under run %s", path, run_id)
        return None
    if made_elsewhere:
        raise LineageError(
            f"{path} was made by run {model.run_id}, but {layout.run_file} names run {run_id}, which "
            "holds no model of it; nothing was registered. Run `ferflow finetune` to train a model "
            "for the current run"
        )
    if recorded_sha and recorded_sha != model.sha256:
        raise LineageError(
            f"run {run_id} recorded a model file with sha256 {recorded_sha[:12]}, not {path} "
            f"({(model.sha256 or '')[:12]}); nothing was registered. Run `ferflow finetune`"
        )
    data = state["tags"].get(MANIFEST_TAG)
    logged = {key: state["params"][key] for key in model.params if key in state["params"]}
    differ = params_changes({key: model.params[key] for key in logged}, logged)
    if (data and data != model.data_digest) or differ:
        what = ", ".join(differ) if differ else f"data {model.data_digest[:8]} -> {str(data)[:8]}"
        raise LineageError(
            f"{path} was made with other params or data than run {run_id} logged ({what}); nothing "
            "was registered. Run `ferflow finetune` so the model gets a run of its own"
        )
    return model


# --- backups ------------------------------------------------------------------------------------


def claim_backup(folder: Path, owner: Lineage) -> None:
    """Before a phase restores the backup in `folder`: keep it only when it was made with this
    phase's params, data and inputs (by any run: a killed run's backup is resumed by the
    next), else move it aside with one warning and start afresh. Then record `owner`."""
    if folder.is_dir() and any(folder.iterdir()):
        try:
            found = read(folder / BACKUP_LINEAGE)
        except LineageError:
            found = None
        why = _backup_mismatch(found, owner)
        if why:
            aside = folder.with_name(
                f"{folder.name}.set-aside-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            )
            os.replace(folder, aside)
            log.warning(
                "the %s backup in %s %s: moved it to %s; starting this phase afresh",
                owner.stage,
                folder,
                why,
                aside,
            )
        elif found is not None and found.run_id != owner.run_id:
            log.info("resuming the %s backup of run %s (same params and data)", owner.stage, found.run_id)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / BACKUP_LINEAGE, asdict(owner))


def resumed_phase_run(folder: Path, run_id: str, owner: Lineage) -> str | None:
    """The phase run of parent run `run_id` whose backup in `folder` this phase will resume
    (made with the same params, data and inputs as `owner`), or None. A rerun after a kill
    continues that run, so the epochs of one training stay in one run."""
    if not (folder / BACKUP_STATE).exists():
        return None
    try:
        found = read(folder / BACKUP_LINEAGE)
    except LineageError:
        return None
    if found is None or found.run_id != run_id or _backup_mismatch(found, owner):
        return None
    return found.phase_run_id


def _backup_mismatch(found: Lineage | None, owner: Lineage) -> str | None:
    if found is None:
        return "has no readable lineage record (an older ferflow's, or cut short)"
    if found.data_digest != owner.data_digest:
        return f"was made from other data (manifest {found.data_digest[:8]}, now {owner.data_digest[:8]})"
    if found.params_digest != owner.params_digest:
        return f"was made with other params ({', '.join(params_changes(found.params, owner.params))})"
    if found.inputs != owner.inputs:
        return "continues another head.keras than this phase"
    return None


# --- one training process per models folder -----------------------------------------------------


@contextlib.contextmanager
def models_lock(folder: Path, command: str) -> Iterator[None]:
    """Admit one `train` or `finetune` at a time to `folder` (models/training.lock).

    An advisory `flock` on the lock file: the kernel releases it when its process ends
    however it ends (kill -9 included), so no stale lock is ever left to judge. The file
    names its holder (host, pid, command, since) for the one-line refusal.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TRAINING_LOCK
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise ModelsFolderBusyError(
                f"{folder} is in use by {_holder(handle.read())}; nothing was run. Wait for it to "
                "finish (or stop it): two trainings in one models folder overwrite each other's files"
            ) from None
        handle.seek(0)
        handle.truncate()
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "command": command, "since": since}
        handle.write(json.dumps(holder) + "\n")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


def _holder(text: str) -> str:
    try:
        owner = json.loads(text)
        return f"`ferflow {owner['command']}` (pid {owner['pid']} on {owner['host']}, since {owner['since']})"
    except (ValueError, KeyError, TypeError):
        return "another `ferflow train` or `ferflow finetune`"


# --- helpers --------------------------------------------------------------------------------------


def _require_intact(path: Path, made: Lineage, rerun: str) -> None:

    if not path.exists():
        raise LineageError(f"{path} does not exist; run `{rerun}`")
    if file_sha256(path) != made.sha256:
        raise LineageError(
            f"{path} is not the file run {made.run_id} recorded (its sha256 differs: replaced, restored "
            f"from elsewhere or cut short); run `{rerun}`"
        )


def _require_same_origin(path: Path, made: Lineage, now: Lineage, rerun: str) -> None:
    if made.data_digest != now.data_digest:
        raise LineageError(
            f"{path} was trained on other data (manifest {made.data_digest[:8]}) than the prepared "
            f"data now holds ({now.data_digest[:8]}); run `{rerun}`"
        )
    changes = params_changes(made.params, now.params)
    if changes:
        raise LineageError(
            f"{path} was trained with other params than these ({', '.join(changes)}); run `{rerun}`, "
            "or put those params back"
        )
