"""Shared fixtures: the real params.yaml shrunk for tests, the real FER2013 zip when present.

Tests load the real params and override what makes them slow (image counts, epochs,
weights) rather than inventing a parallel config.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ferflow.config import Params, load_params

REPO = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO / "params.yaml"

# Overrides that make the real params fast enough for a unit test.
# Workflow tests train for a step or two: the gate's default floors (which refuse chance-level
# models) are off there and tested on their own in tests/unit/test_evaluate_gate.py.
NO_FLOORS = (
    "register.min_accuracy_over_majority=null",
    "register.min_macro_f1=0.0",
    "register.refuse_one_class=false",
)

SMALL = (
    *NO_FLOORS,
    "model.weights=none",
    "train.epochs=2",
    "finetune.epochs=1",
    "synth.per_class=12",
    "synth.test_per_class=4",
)

# The smallest end-to-end pipeline (flow, DVC, deployment tests and the flow benchmark add
# their own data.raw and register.model_name).
TINY_PIPELINE = (
    *NO_FLOORS,
    "model.backbone=densenet121",
    "model.weights=none",
    "model.head_units=[16]",
    "model.dropout=[0.1]",
    "train.epochs=1",
    "train.batch_size=32",
    "finetune.epochs=1",
    "synth.per_class=12",
    "synth.test_per_class=4",
)


def small_params(*overrides: str) -> Params:
    """The real params.yaml with the test shrink plus `overrides`."""
    return load_params(PARAMS_FILE, [*SMALL, *overrides])


@pytest.fixture(scope="session")
def params() -> Params:
    return small_params()


@pytest.fixture(scope="session")
def fer2013_zip() -> Path:
    """The real FER2013 zip, from FERFLOW_FER2013_ZIP; the test is skipped without it."""
    value = os.environ.get("FERFLOW_FER2013_ZIP")
    if not value:
        pytest.skip("FERFLOW_FER2013_ZIP is not set (point it at shared/data/fer2013.zip)")
    path = Path(value)
    if not path.is_file():
        pytest.skip(f"FERFLOW_FER2013_ZIP={value} does not exist")
    return path


@pytest.fixture
def dvc_repo(tmp_path, monkeypatch) -> Path:
    """A new git + DVC repository with the project's params.yaml, dummy AWS credentials and
    DVC's site cache inside tmp_path."""
    import subprocess

    from dvc.repo import Repo

    from tests.servers import DUMMY_AWS_ENV

    for name, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("FERFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "site-cache"))
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    Repo.init(str(root)).close()  # in-process: a `dvc init` subprocess re-imports DVC (seconds)
    shutil.copy(PARAMS_FILE, root / "params.yaml")
    return root


def sqlite_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, versions: int):
    """A SQLite registry that MLFLOW_TRACKING_URI points at, with `versions` versions of
    `name` and version 2 as champion; (uri, client)."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(name)
    for _ in range(versions):
        client.create_model_version(name, source=str(tmp_path / "model"))
    client.set_registered_model_alias(name, "champion", "2")
    return uri, client
