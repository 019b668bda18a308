"""`ferflow synth` and `ferflow data ...`: synthetic faces, and the raw data under DVC (add a
download, configure the remote, push and pull tracked files). Not pipeline stages.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ferflow.config import Params
from ferflow.errors import FerflowError

log = logging.getLogger(__name__)


def synthesize(
    params: Params,
    out: Path,
    per_class: int | None = None,
    test_per_class: int | None = None,
    seed: int | None = None,
) -> Path:
    """Synthetic faces in the download layout (train/<class>/*.jpg, test/<class>/*.jpg);
    counts and seed default to synth.per_class, synth.test_per_class and base.seed."""
    from ferflow.data.synth import write_synthetic_dataset

    write_synthetic_dataset(
        Path(out),
        classes=params.base.classes,
        per_class=per_class or params.synth.per_class,
        test_per_class=test_per_class or params.synth.test_per_class,
        seed=params.base.seed if seed is None else seed,
        size=params.base.image_size,
    )
    return Path(out)


def add_data(
    params: Params,
    source: Path,
    dest: Path | None = None,
    force: bool = False,
    root: Path | None = None,
    params_file: Path | None = None,
) -> Path:
    """`ferflow data add`: copy a FER download under data/ and track it with DVC.

    With `params_file`, a copy that did not land at `data.raw` (a .zip or .csv keeps its
    suffix) is recorded there, so dvc.yaml's `${data.raw}` names what was added and
    `dvc repro` runs next."""
    from ferflow.config import set_in_file
    from ferflow.data.versioning import add_dataset

    target = add_dataset(Path(source), params, dest=dest, force=force, repo_root=root)
    if params_file is not None:
        base = Path(params_file).resolve().parent
        recorded = target.resolve().relative_to(base) if target.resolve().is_relative_to(base) else target
        try:
            if set_in_file(params_file, "data", "raw", recorded.as_posix()):
                log.info("%s: data.raw is now %s (what dvc.yaml's ingest stage reads)", params_file, recorded)
        except FerflowError as err:  # e.g. a profile that inherits data.raw: say what to do
            log.warning("%s; set data.raw to %s in params.yaml for `dvc repro`", err, recorded)
    return target


def configure_remote(params: Params) -> str:
    """`ferflow data remote`: make data.remote the default DVC remote (no credentials written)."""
    from ferflow.data.versioning import configure_remote as configure

    return configure(params)


def push_targets(params: Params, targets: Sequence[str]) -> int:
    """`ferflow data push`: upload tracked data (all, or `targets`); returns the file count."""
    from ferflow.data.versioning import push

    return push(params, targets=targets)


def pull_targets(params: Params, targets: Sequence[str]) -> int:
    """`ferflow data pull`: download tracked data (all, or `targets`); returns the file count."""
    from ferflow.data.versioning import pull

    return pull(params, targets=targets)
