"""DVC versioning of the raw data: add, configure the S3 remote, push and pull (moto S3).

Each test works in a fresh git + DVC repository under tmp_path with the real params.yaml.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ferflow import cli
from ferflow.config import FER_CLASSES, load_params
from ferflow.data.synth import write_synthetic_dataset
from ferflow.data.versioning import (
    VersioningError,
    add_dataset,
    configure_remote,
    data_version,
    find_raw_dataset,
    pull,
    push,
)
from tests.conftest import PARAMS_FILE
from tests.servers import aws_test_credentials, create_bucket, free_port, moto_s3_server


@pytest.fixture(scope="module")
def s3_endpoint():
    """One moto S3 server for the module, with dummy credentials."""
    with aws_test_credentials(), moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def repo(dvc_repo) -> Path:
    return dvc_repo


@pytest.fixture(scope="module")
def download(tmp_path_factory) -> Path:
    """A small synthetic dataset in the download layout (28 JPEGs)."""
    out = tmp_path_factory.mktemp("download") / "fer2013"
    return write_synthetic_dataset(out, FER_CLASSES, per_class=3, test_per_class=1, seed=3)


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _params(repo: Path):
    return load_params(repo / "params.yaml")


# --- add --------------------------------------------------------------------------------


def test_add_copies_the_folder_to_data_raw_and_tracks_it(repo, download):
    # when
    target = add_dataset(download, _params(repo), repo_root=repo)

    # then the copy is identical, and a .dvc pointer sits beside it
    assert target == repo / "data" / "raw" / "fer2013"
    assert _hashes(target) == _hashes(download)
    assert (repo / "data" / "raw" / "fer2013.dvc").is_file()


def test_add_never_modifies_the_source(repo, download):
    before = _hashes(download)

    add_dataset(download, _params(repo), repo_root=repo)

    assert _hashes(download) == before


def test_add_keeps_a_zip_as_a_zip(repo, download, tmp_path):
    # given a zip of the download
    archive = tmp_path / "fer2013.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(download.rglob("*.jpg")):
            zf.write(path, path.relative_to(download.parent))

    # when
    target = add_dataset(archive, _params(repo), repo_root=repo)

    # then it is tracked as data/raw/fer2013.zip, which find_raw_dataset resolves
    assert target == repo / "data" / "raw" / "fer2013.zip"
    assert target.read_bytes() == archive.read_bytes()
    assert find_raw_dataset(_params(repo), repo) == target
    assert data_version(repo / "data" / "raw" / "fer2013") == data_version(target) is not None


def test_add_refuses_to_replace_existing_data_without_force(repo, download):
    add_dataset(download, _params(repo), repo_root=repo)

    with pytest.raises(VersioningError, match="already exists"):
        add_dataset(download, _params(repo), repo_root=repo)


def test_add_of_a_missing_path_names_it(repo, tmp_path):
    with pytest.raises(VersioningError, match=r"nowhere\.zip does not exist"):
        add_dataset(tmp_path / "nowhere.zip", _params(repo), repo_root=repo)


def test_add_of_an_unsupported_file_says_what_is_accepted(repo, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a dataset")

    with pytest.raises(VersioningError, match=r"neither a folder, a \.zip nor a \.csv"):
        add_dataset(notes, _params(repo), repo_root=repo)


def test_add_outside_a_dvc_repo_is_an_error(tmp_path, download):
    outside = tmp_path / "plain"
    outside.mkdir()

    with pytest.raises(VersioningError, match="not inside a DVC repository"):
        add_dataset(download, load_params(PARAMS_FILE), repo_root=outside)


def test_cli_data_add_tracks_the_dataset(repo, download, monkeypatch):
    monkeypatch.chdir(repo)

    status = cli.main(["data", "add", str(download), "--dest", "data/raw/synthetic"])

    assert status == 0
    assert (repo / "data" / "raw" / "synthetic.dvc").is_file()


def test_cli_data_add_of_a_zip_records_its_path_so_dvc_repro_runs_next(repo, download, tmp_path, monkeypatch):
    # given the project's pipeline in the repository, and a zip of the download
    shutil.copy(PARAMS_FILE.parent / "dvc.yaml", repo / "dvc.yaml")
    shutil.copytree(PARAMS_FILE.parent / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    archive = tmp_path / "fer2013.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(download.rglob("*.jpg")):
            zf.write(path, path.relative_to(download.parent))
    monkeypatch.chdir(repo)
    # when it is added with the CLI
    assert cli.main(["data", "add", str(archive)]) == 0
    # then params.yaml names the copy (comment kept), and DVC's pipeline can run on it
    assert _params(repo).data.raw == "data/raw/fer2013.zip"
    assert (
        "  raw: data/raw/fer2013.zip          # DVC-tracked raw dataset" in (repo / "params.yaml").read_text()
    )
    dry = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "--dry", "ingest"], cwd=repo, capture_output=True, text=True
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "ferflow ingest data/raw/fer2013.zip" in dry.stdout


def test_data_version_is_the_md5_of_the_dvc_file(repo, download):
    target = add_dataset(download, _params(repo), repo_root=repo)
    pointer = (repo / "data" / "raw" / "fer2013.dvc").read_text()

    version = data_version(target)

    assert version is not None and version.endswith(".dir")
    assert f"md5: {version}" in pointer


def test_data_version_of_untracked_data_is_none(repo, download):
    assert data_version(download) is None


# --- remote configuration ---------------------------------------------------------------


def test_configure_remote_writes_no_credentials_to_the_committed_config(repo, monkeypatch):
    # given credentials in the environment
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrEXAMPLESECRETKEY")
    monkeypatch.setenv("FERFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9000")

    # when
    url = configure_remote(_params(repo), repo)

    # then the bucket URL is committed, the endpoint is local, the keys are nowhere
    committed = (repo / ".dvc" / "config").read_text()
    local = (repo / ".dvc" / "config.local").read_text()
    assert url == "s3://ferflow-data/dvc"
    assert url in committed and "remote = storage" in committed
    assert "http://127.0.0.1:9000" in local and "127.0.0.1" not in committed
    for secret in ("AKIAEXAMPLEKEYID0001", "wJalrEXAMPLESECRETKEY", "access_key", "secret"):
        assert secret not in committed and secret not in local


def test_configure_remote_commits_the_endpoint_from_params(repo):
    params = load_params(repo / "params.yaml", ["data.remote.endpoint_url=https://minio.example:9000"])

    configure_remote(params, repo)

    assert "endpointurl = https://minio.example:9000" in (repo / ".dvc" / "config").read_text()


# --- push / pull against a real S3 API (moto) -------------------------------------------


@pytest.mark.integration
def test_push_then_pull_restores_every_file(repo, download, s3_endpoint, monkeypatch):
    # given the dataset tracked and the remote pointing at the moto server
    params = _params(repo)
    create_bucket(s3_endpoint, params.data.remote.bucket)
    monkeypatch.setenv("FERFLOW_S3_ENDPOINT_URL", s3_endpoint)
    target = add_dataset(download, params, repo_root=repo)
    original = _hashes(target)

    # when it is pushed, the cache and the data are wiped, and it is pulled back
    pushed = push(params, repo)
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(target)
    fetched = pull(params, repo)

    # then every file is back, byte for byte
    assert pushed > len(original)  # the files plus the directory listing
    assert fetched >= len(original)
    assert _hashes(target) == original


@pytest.mark.integration
def test_push_to_a_stopped_endpoint_fails_with_a_clear_error(repo, download, monkeypatch):
    # given a remote whose endpoint has nothing listening (AWS_MAX_ATTEMPTS=1: no retries)
    dead_endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("FERFLOW_S3_ENDPOINT_URL", dead_endpoint)
    add_dataset(download, _params(repo), repo_root=repo)

    # when / then
    with pytest.raises(VersioningError, match="dvc push failed") as failure:
        push(_params(repo), repo)
    assert dead_endpoint in str(failure.value)
