"""`ferflow data add` says what to do next, and only what applies: in a git repository,
commit the .dvc file; in a DVC project without git (the demo's workspace), nothing to commit."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from dvc.repo import Repo

from ferflow.config import FER_CLASSES, load_params
from ferflow.data.synth import write_synthetic_dataset
from ferflow.data.versioning import add_dataset
from tests.conftest import PARAMS_FILE


def _faces(tmp_path: Path) -> Path:
    source = tmp_path / "faces"
    write_synthetic_dataset(source, FER_CLASSES, per_class=2, test_per_class=1, seed=0)
    return source


def test_in_a_git_repository_the_hint_is_to_commit_the_dvc_file(dvc_repo, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ferflow")
    params = load_params(dvc_repo / "params.yaml")

    add_dataset(_faces(tmp_path), params, dest=dvc_repo / "data/raw/faces", repo_root=dvc_repo)

    assert "Next: git add data/raw/faces.dvc" in caplog.text


def test_in_a_dvc_project_without_git_there_is_nothing_to_commit(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "site-cache"))
    root = tmp_path / "workspace"
    root.mkdir()
    Repo.init(str(root), no_scm=True).close()
    shutil.copy(PARAMS_FILE, root / "params.yaml")
    caplog.set_level(logging.INFO, logger="ferflow")

    target = add_dataset(_faces(tmp_path), load_params(root / "params.yaml"), dest=root / "data/raw/faces")

    assert (root / "data/raw/faces.dvc").exists() and target == root / "data/raw/faces"
    assert "tracked data/raw/faces with DVC" in caplog.text
    assert "git add" not in caplog.text
