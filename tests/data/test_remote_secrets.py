"""Issue #13, faults an operator meets: a credential given for the DVC remote never reaches a
git-tracked file, the return value, a log line or the console.

Real DVC in a fresh git + DVC repository under tmp_path, as tests/integration/test_dvc_remote.py.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dvc.repo import Repo

from ferflow.config import FER_CLASSES, load_params
from ferflow.data.synth import write_synthetic_dataset
from ferflow.data.versioning import (
    VersioningError,
    add_dataset,
    configure_remote,
    mask_url,
    pull,
    push,
    split_credentials,
)
from tests.servers import aws_test_credentials, create_bucket, free_port, moto_s3_server

PASSWORD = "Pw-s3cr3t-0f-m1n10"  # planted, to be looked for
ENV_SECRET = "wJalrEXAMPLEENVSECRET"


@pytest.fixture
def repo(dvc_repo) -> Path:
    return dvc_repo


def _with_endpoint(repo: Path, endpoint: str):
    return load_params(repo / "params.yaml", [f"data.remote.endpoint_url={endpoint}"])


def _files_holding(root: Path, secret: str) -> list[str]:
    return sorted(
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and secret.encode() in path.read_bytes()
    )


def _round_trip(params, repo: Path, target: Path) -> tuple[int, int]:
    """Push the tracked data, delete it and the cache, pull it back: (pushed, fetched)."""
    pushed = push(params, repo)
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(target)
    return pushed, pull(params, repo)


def _git_ignored(repo: Path, relative: str) -> bool:
    return subprocess.run(["git", "-C", str(repo), "check-ignore", "-q", relative]).returncode == 0


def _dvc_config(repo: Path, *args: str) -> str:
    """What the real `dvc` command line reads back (the same binary an operator runs)."""
    dvc = Path(sys.executable).parent / "dvc"
    done = subprocess.run([str(dvc), *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout


# --- mask_url ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("http://minio:pw@127.0.0.1:9000", "http://***@127.0.0.1:9000"),
        ("endpoint http://u:a/b+c@h:9 then s3://bucket/p", "endpoint http://***@h:9 then s3://bucket/p"),
        ("https://token@host/x", "https://***@host/x"),
        ("http://***@127.0.0.1:9000", "http://***@127.0.0.1:9000"),  # masking twice changes nothing
        (
            "http://127.0.0.1:9000 and s3://ferflow-data/dvc",
            "http://127.0.0.1:9000 and s3://ferflow-data/dvc",
        ),
    ],
)
def test_mask_url_hides_the_whole_userinfo_of_every_url(text, masked):
    assert mask_url(text) == masked


def test_split_credentials_decodes_an_escaped_password():
    assert split_credentials("http://minio:p%40ss%2Fw@h:9000") == ("http://h:9000", "minio", "p@ss/w")
    assert split_credentials("http://h:9000") == ("http://h:9000", None, None)


# --- configure_remote -------------------------------------------------------------------


def test_a_password_in_endpoint_url_goes_only_to_the_git_ignored_config_local(
    repo, caplog, capsys, monkeypatch
):
    # given a password planted in the endpoint via a --set override, and one in the environment
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
    params = _with_endpoint(repo, f"http://minio:{PASSWORD}@127.0.0.1:9000")
    caplog.set_level(logging.DEBUG)

    # when
    returned = configure_remote(params, repo)

    # then the committed config has the bare endpoint, config.local the keys DVC reads
    committed = (repo / ".dvc" / "config").read_text()
    assert "endpointurl = http://127.0.0.1:9000" in committed
    assert "minio" not in committed
    local = _dvc_config(repo, "config", "--local", "--list")
    assert f"remote.storage.secret_access_key={PASSWORD}" in local
    assert "remote.storage.access_key_id=minio" in local
    assert _git_ignored(repo, ".dvc/config.local")
    assert not _git_ignored(repo, ".dvc/config")
    # and the secrets are in no other file, nor the return value, the logs or the console
    assert _files_holding(repo, PASSWORD) == [".dvc/config.local"]
    assert _files_holding(repo, ENV_SECRET) == []
    assert returned == "s3://ferflow-data/dvc"
    out, err = capsys.readouterr()
    for secret in (PASSWORD, ENV_SECRET):
        assert secret not in returned and secret not in caplog.text
        assert secret not in out and secret not in err
    assert "127.0.0.1:9000" in caplog.text


def test_a_password_in_the_environment_endpoint_goes_only_to_config_local(repo, caplog, monkeypatch):
    monkeypatch.setenv("FERFLOW_S3_ENDPOINT_URL", f"http://ops:{PASSWORD}@10.0.0.5:9000")
    caplog.set_level(logging.DEBUG)

    configure_remote(load_params(repo / "params.yaml"), repo)

    local = (repo / ".dvc" / "config.local").read_text()
    assert "endpointurl = http://10.0.0.5:9000" in local and "access_key_id = ops" in local
    assert _files_holding(repo, PASSWORD) == [".dvc/config.local"]
    assert PASSWORD not in caplog.text


def test_a_leaked_committed_config_is_cleaned_and_the_operator_warned(repo, caplog):
    # given an older run (or a hand edit) left a password and a key in the committed config
    with Repo(str(repo)) as dvc_repo, dvc_repo.config.edit("repo") as config:
        config["remote"]["storage"] = {
            "url": "s3://ferflow-data/dvc",
            "endpointurl": f"http://minio:{PASSWORD}@127.0.0.1:9000",
            "secret_access_key": "OLDKEY-in-git",
        }
    caplog.set_level(logging.WARNING)

    # when configured again with a clean endpoint
    configure_remote(_with_endpoint(repo, "http://127.0.0.1:9000"), repo)

    # then the committed file holds neither, the key moved to config.local, the warning masks
    committed = (repo / ".dvc" / "config").read_text()
    assert PASSWORD not in committed and "OLDKEY-in-git" not in committed
    assert "secret_access_key = OLDKEY-in-git" in (repo / ".dvc" / "config.local").read_text()
    assert PASSWORD not in caplog.text and "OLDKEY-in-git" not in caplog.text
    assert "***@127.0.0.1:9000" in caplog.text
    assert "git history" in caplog.text


def test_a_failed_push_masks_the_endpoint_password(repo, tmp_path, monkeypatch):
    # given a dead endpoint whose URL carries a password
    download = write_synthetic_dataset(
        tmp_path / "fer2013", FER_CLASSES, per_class=1, test_per_class=1, seed=3
    )
    params = _with_endpoint(repo, f"http://minio:{PASSWORD}@127.0.0.1:{free_port()}")
    add_dataset(download, params, repo_root=repo)

    # when / then the error (what the CLI prints) names the endpoint without the password
    with pytest.raises(VersioningError, match="dvc push failed") as failure:
        push(params, repo)
    assert PASSWORD not in str(failure.value)
    assert "127.0.0.1" in str(failure.value)


@pytest.mark.integration
def test_push_and_pull_work_with_credentials_from_the_endpoint_url(
    repo, tmp_path, monkeypatch, capsys, caplog
):
    # given a moto S3 server and its endpoint with user:password planted in params
    download = write_synthetic_dataset(
        tmp_path / "fer2013", FER_CLASSES, per_class=1, test_per_class=1, seed=3
    )
    caplog.set_level(logging.DEBUG)
    with aws_test_credentials(), moto_s3_server() as endpoint:
        params = _with_endpoint(repo, endpoint.replace("://", f"://minio:{PASSWORD}@", 1))
        create_bucket(endpoint, params.data.remote.bucket)
        # boto3 must use the keys from config.local: nothing in the environment
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(name, raising=False)
        target = add_dataset(download, params, repo_root=repo)
        before = {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file()}

        # when pushed, wiped and pulled back
        pushed, fetched = _round_trip(params, repo, target)

    # then the round trip worked and the password is still only in config.local
    assert pushed > 0 and fetched >= len(before)
    assert {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    assert _files_holding(tmp_path, PASSWORD) == ["repo/.dvc/config.local"]
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err + caplog.text


def test_a_folder_remote_is_committed_relative_and_round_trips_offline(repo, tmp_path, monkeypatch):
    # given data.remote.url naming a folder of the project (the demo's own remote), and an S3
    # endpoint in the environment that must not be attached to it
    download = write_synthetic_dataset(
        tmp_path / "fer2013", FER_CLASSES, per_class=1, test_per_class=1, seed=3
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.chdir(tmp_path)  # the working directory is not the project
    params = load_params(repo / "params.yaml", ["data.remote.url=dvc-remote"])
    target = add_dataset(download, params, repo_root=repo)
    before = {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file()}

    # when pushed, wiped and pulled back
    pushed, fetched = _round_trip(params, repo, target)

    # then the files went to repo/dvc-remote, the committed config names it relative to
    # .dvc/ (valid in any clone), with no endpoint
    assert pushed > 0 and fetched >= len(before)
    assert {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    assert any((repo / "dvc-remote").rglob("*"))
    config = (repo / ".dvc" / "config").read_text()
    assert "url = ../dvc-remote" in config and "endpointurl" not in config
    assert not (repo / ".dvc" / "config.local").exists()
