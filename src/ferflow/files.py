"""The names of the files a ferflow workspace holds under models/ and reports/, defined once.

The modules that write a file import its name from here, and `ferflow.stages.layout.Layout`
composes every path from them; dvc.yaml declares the same paths (a test compares).
The evaluate stage's MLflow table artifact is named here too: the stage writes it and
`ferflow compare` (ferflow.tracking.reader) reads it.
The prepared dataset's own files (images.npy, manifest.csv, dataset.json) are named by
ferflow.data.dataset, which reads and writes that format.

`file_sha256(path)`: the one digest of a file's bytes (models, manifests).

`written_whole(path)`: how a file that a later stage trusts is written: under a temporary
name, renamed when complete, the temporary removed when writing fails (a full disk).
"""

import contextlib
import errno
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# models/
HEAD_FILE = "head.keras"  # phase 1's model (the `train` stage)
MODEL_FILE = "model.keras"  # the trained model (the `finetune` stage)
HISTORY_FILE = "history.json"  # per-epoch records of both phases
RUN_FILE = "run.json"  # the MLflow parent run (ferflow.tracking.store.RunInfo)
BACKUP_DIR = "backup"  # per-stage resumable backups
LINEAGE_SUFFIX = ".lineage.json"  # beside a .keras file: the run, params and data it came from
BACKUP_LINEAGE = "lineage.json"  # in a backup folder: the run, params and data it belongs to
BACKUP_STATE = "state.npz"  # in a backup folder: the weights and optimizer state of its last epoch
TRAINING_LOCK = "training.lock"  # held by the `train` or `finetune` running in this folder

# reports/: the validate stage
VALIDATION_FILE = "validation.json"
PROFILE_FILE = "profile.json"
TRAINING_ROWS_FILE = "training_rows.json"  # the train rows training uses (ferflow.data.dataset.TrainingRows)
DATA_DOCS_DIR = "data_docs"

# reports/: the evaluate stage
METRICS_FILE = "metrics.json"  # the test metrics, per class too: what the gate and compare read
SCORES_FILE = "scores.json"  # the headline numbers, one column each: `dvc metrics show/diff`, `dvc exp show`
EVALUATION_FILE = "evaluation.json"  # provenance: model sha256, data digest, tta, n
CONFUSION_JSON = "confusion_matrix.json"
PLOTS_DIR = "plots"
CONFUSION_CSV = "confusion.csv"  # actual,predicted per test image (dvc confusion template)
ROC_CSV = "roc.csv"  # class,fpr,tpr,threshold
HISTORY_CSV = "history.csv"  # epoch,phase,loss,accuracy,val_loss,val_accuracy
PER_CLASS_CSV = "per_class.csv"  # class,precision,recall,f1,support
PNG_FILES = (
    "accuracy.png",
    "loss.png",
    "confusion_matrix.png",
    "confusion_matrix_normalized.png",
    "roc.png",
    "per_class.png",
)

# reports/: the register stage
PROMOTION_FILE = "promotion.json"
MODEL_CARD_FILE = "model_card.md"

# MLflow: the parent run's per-class test metrics, a `log_table` artifact (the evaluate stage)
PER_CLASS_ARTIFACT = "evaluation/per_class.json"


@contextlib.contextmanager
def written_whole(path: Path) -> Iterator[Path]:
    """Yields a temporary path beside `path` (same suffix) to write; renamed to `path` on
    success, removed on failure: a reader never sees half a file, none is left behind."""
    temporary = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if isinstance(err, OSError) and err.errno is None:  # numpy's "N requested and M written"
            raise OSError(errno.ENOSPC, f"No space left on device ({err})", str(path)) from err
        raise


def write_json(path: Path, data: Any, *, sort_keys: bool = True) -> Path:
    """The one way ferflow writes a JSON file: indented, a newline at the end, values JSON
    does not know as their `str`, written whole (`written_whole`), its folder made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path) as partial:
        partial.write_text(json.dumps(data, indent=2, sort_keys=sort_keys, default=str) + "\n")
    return path


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (model files, manifests)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
