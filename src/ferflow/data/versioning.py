"""DVC: track the raw dataset, configure the S3 remote, push and pull.

The raw FER2013 download is versioned with DVC: `add_dataset` copies it into the repository
(`data.raw`, by default `data/raw/fer2013`, keeping a `.zip` or `.csv` suffix) and runs
`dvc add`, which writes a small `<name>.dvc` pointer that git tracks while the data itself
goes to the DVC cache and, with `push`, to an S3 bucket (AWS S3, MinIO, ...).

Credentials never reach a git-tracked file nor the console. DVC (boto3) reads them at run
time from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, ...;
this module never writes those anywhere) or from the git-ignored `.dvc/config.local`. The
committed `.dvc/config` gets only the bucket URL and the endpoint without its userinfo: a
`user:password@` in an endpoint URL (`--set data.remote.endpoint_url=http://user:pw@host:9000`)
becomes `access_key_id` / `secret_access_key` in `.dvc/config.local`, what
`dvc remote modify --local` would write. Every log line and error message shows URLs through
`ferflow.redaction.mask_url` (`http://***@host`).

DVC is used through its Python API (`dvc.repo.Repo`) rather than subprocesses, so a
failure is an exception we can turn into one clear `VersioningError`.

Long on purpose: it is the only module that imports dvc (an import-linter contract), so
everything ferflow asks of DVC (add, remote, push, pull, versions) lives here.
"""

from __future__ import annotations

import logging
import os
import shutil
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml

from ferflow.config import Params
from ferflow.errors import FerflowError
from ferflow.redaction import USERINFO, mask_url

log = logging.getLogger(__name__)

ENDPOINT_ENV_VARS = ("FERFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")  # first set one wins
CREDENTIAL_KEYS = ("access_key_id", "secret_access_key", "session_token")
RAW_SUFFIXES = (".zip", ".csv")  # a download that is a single file keeps its suffix


class VersioningError(FerflowError, RuntimeError):
    """A DVC operation failed; the message says which and what to do."""


# --- remote -----------------------------------------------------------------------------


def remote_url(params: Params) -> str:
    """`s3://bucket/prefix` from `data.remote`, or its `url` where one is set."""
    remote = params.data.remote
    if remote.url:
        return remote.url
    prefix = remote.prefix.strip("/")
    return f"s3://{remote.bucket}/{prefix}" if prefix else f"s3://{remote.bucket}"


def _config_url(url: str, repo_root: Path) -> str:
    """The remote URL to hand DVC's config editor. `data.remote.url` names a folder relative
    to the project; DVC's editor reads a relative path relative to the working directory and
    writes it relative to .dvc/ (so the committed file holds `../folder`, valid in every
    clone), and keeps an absolute one as it is."""
    if "://" in url or Path(url).is_absolute():
        return url
    return os.path.relpath(Path(repo_root).resolve() / url)


def endpoint_override() -> str | None:
    """The S3 endpoint from the environment, if any (a local MinIO or a test server)."""
    for name in ENDPOINT_ENV_VARS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """`(url without userinfo, user, password)`; user and password are percent-decoded.

    `http://minio:pw@127.0.0.1:9000` -> `("http://127.0.0.1:9000", "minio", "pw")`.
    """
    match = USERINFO.match(url.strip())
    if match is None:
        return url.strip(), None, None
    password = match.group("password")
    return (
        match.group("scheme") + url.strip()[match.end() :],
        unquote(match.group("user")),
        unquote(password[1:]) if password is not None else None,
    )


def configure_remote(params: Params, repo_root: Path = Path(".")) -> str:
    """Make `data.remote` the default DVC remote; returns its URL (`s3://bucket/prefix`).

    The committed `.dvc/config` gets the URL and `data.remote.endpoint_url` without any
    `user:password@`. An endpoint from `FERFLOW_S3_ENDPOINT_URL` / `AWS_ENDPOINT_URL`
    describes this machine, not the project, so it goes to the git-ignored
    `.dvc/config.local`. Credentials go only to `.dvc/config.local`: the userinfo of either
    endpoint (the environment's wins) as `access_key_id` / `secret_access_key`, and any
    credential key someone put in the committed section is moved there. `AWS_*` variables
    are never written: boto3 reads them at run time.
    """
    remote = params.data.remote
    url = remote_url(params)
    endpoint, project_user, project_password = split_credentials(remote.endpoint_url or "")
    # the environment's endpoint is for S3 (a folder or another kind of remote takes none)
    override = endpoint_override() if url.startswith("s3://") else None
    local_endpoint, machine_user, machine_password = split_credentials(override or "")
    credentials = _credentials(machine_user, machine_password) or _credentials(project_user, project_password)
    with _open_repo(repo_root) as repo:
        config_file = repo.config.files["repo"]
        with repo.config.edit("repo") as config:
            section = dict(config["remote"].get(remote.name, {}))
            _warn_about_committed_endpoint(section.get("endpointurl"), config_file)
            section["url"] = _config_url(url, repo_root)
            if endpoint:
                section["endpointurl"] = endpoint
            else:
                section.pop("endpointurl", None)
            moved = {key: section.pop(key) for key in CREDENTIAL_KEYS if key in section}
            config["remote"][remote.name] = section
            config["core"]["remote"] = remote.name
        _warn_about_committed_credentials(moved, config_file)
        if local_endpoint or credentials or moved:
            with repo.config.edit("local") as local:
                local_section = dict(local["remote"].get(remote.name, {}))
                for key, value in moved.items():
                    local_section.setdefault(key, value)
                if local_endpoint:
                    local_section["endpointurl"] = local_endpoint
                local_section.update(credentials)
                local["remote"][remote.name] = local_section
    log.info(
        "DVC remote %r -> %s%s%s",
        remote.name,
        url,
        f" (endpoint {local_endpoint or endpoint or 'AWS S3'})" if url.startswith("s3://") else "",
        "; credentials from the endpoint URL stored in .dvc/config.local" if credentials else "",
    )
    return url


def _credentials(user: str | None, password: str | None) -> dict[str, str]:
    """The `.dvc/config.local` keys for an endpoint's `user:password@` (none if incomplete)."""
    if user and password:
        return {"access_key_id": user, "secret_access_key": password}
    if user or password:
        log.warning(
            "the endpoint URL's userinfo is not user:password; it was dropped. Give S3 "
            "credentials as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY instead"
        )
    return {}


def _warn_about_committed_endpoint(endpoint: Any, config_file: str) -> None:
    if isinstance(endpoint, str) and split_credentials(endpoint)[2] is not None:
        log.warning(
            "%s held a password in endpointurl (%s); it is removed now, but if that file was "
            "ever committed the password is in git history: change it",
            config_file,
            mask_url(endpoint),
        )


def _warn_about_committed_credentials(moved: dict[str, Any], config_file: str) -> None:
    if moved:
        log.warning(
            "%s held %s, which git would commit: moved to .dvc/config.local. If that file was "
            "ever committed, the keys are in git history: rotate them",
            config_file,
            ", ".join(sorted(moved)),
        )


# --- tracking data ----------------------------------------------------------------------


def add_dataset(
    path: Path,
    params: Params,
    dest: Path | None = None,
    repo_root: Path | None = None,
    force: bool = False,
) -> Path:
    """Copy a FER download (folder, .zip or fer2013.csv) into the repo and `dvc add` it.

    The copy goes to `dest`, by default `data.raw`; a .zip or .csv keeps its suffix
    (`data/raw/fer2013.zip`). Relative destinations are relative to the DVC repository
    root. The source is only read. An existing destination is replaced only with `force`
    (the old version stays in the DVC cache and in git history). Returns the tracked path.
    """
    source = Path(path).expanduser()
    suffix = _source_suffix(source)
    destination = Path(dest or params.data.raw)
    root = find_repo_root(repo_root or _existing_ancestor(destination))
    target = _destination(destination, suffix, root)
    if source.resolve() != target.resolve():
        _copy_into_place(source, target, force)
    from dvc.scm import NoSCM

    with _open_repo(root) as repo, _dvc_errors(f"dvc add {target}"):
        repo.add([str(target)])
        has_git = not isinstance(repo.scm, NoSCM)
    _log_next_steps(target, root, has_git)
    return target


def find_raw_dataset(params: Params, repo_root: Path = Path(".")) -> Path:
    """The raw dataset `data.raw` names: the folder, or the same name with .zip / .csv."""
    base = repo_root / params.data.raw
    for candidate in (base, *(base.with_name(base.name + s) for s in RAW_SUFFIXES)):
        if candidate.exists():
            return candidate
    raise VersioningError(
        f"no raw dataset at {base} (nor {base.name}.zip / {base.name}.csv beside it): "
        "add one with `ferflow data add PATH` or fetch it with `dvc pull`"
    )


def data_version(path: Path) -> str | None:
    """The DVC md5 of a tracked file or folder, from `<path>.dvc` or `dvc.lock`.

    `data/raw/fer2013` also finds `data/raw/fer2013.zip` / `.csv` (what `add_dataset`
    makes of a zip or CSV download).

    This is the `ferflow.data_version` MLflow tag. Returns None when DVC does not track
    `path`, so the caller can fall back to another digest (the manifest's).
    """
    path = _with_raw_suffix(Path(path))
    pointer = path.with_name(path.name + ".dvc")
    if pointer.is_file():
        return _md5_of_out(_read_yaml(pointer).get("outs", []), path.name)
    lock = _find_upwards(path.resolve().parent, "dvc.lock")
    if lock is not None:
        relative = os.path.relpath(path.resolve(), lock.parent)
        for stage in (_read_yaml(lock).get("stages") or {}).values():
            version = _md5_of_out(stage.get("outs", []), relative)
            if version:
                return version
    log.debug("%s is not tracked by DVC (no %s, not a dvc.lock output)", path, pointer.name)
    return None


# --- push / pull ------------------------------------------------------------------------


def push(params: Params, repo_root: Path = Path("."), targets: Sequence[str | Path] = ()) -> int:
    """`dvc push` to `data.remote` (configured first); returns the number of files uploaded.

    `targets` limits it to some tracked paths (default: everything the repo tracks).
    """
    configure_remote(params, repo_root)
    with _open_repo(repo_root) as repo, _dvc_errors("dvc push", repo):
        count = repo.push(targets=_target_list(targets), remote=params.data.remote.name)
    log.info("pushed %d file(s) to the DVC remote", count)
    return int(count)


def pull(params: Params, repo_root: Path = Path("."), targets: Sequence[str | Path] = ()) -> int:
    """`dvc pull` from `data.remote` (configured first); returns the number of files fetched.

    Downloads what the `.dvc` files in the working tree point at and checks it out.
    """
    configure_remote(params, repo_root)
    with _open_repo(repo_root) as repo, _dvc_errors("dvc pull", repo):
        result = repo.pull(targets=_target_list(targets), remote=params.data.remote.name)
    fetched = int(result.get("stats", {}).get("fetched", 0))
    log.info("fetched %d file(s) from the DVC remote", fetched)
    return fetched


def _target_list(targets: Sequence[str | Path]) -> list[str] | None:
    return [str(target) for target in targets] or None


# --- helpers ----------------------------------------------------------------------------


def find_repo_root(start: Path) -> Path:
    """The DVC repository containing `start`, or a `VersioningError` saying how to make one."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Path(Repo.find_root(str(start)))
    except NotDvcRepoError:
        raise VersioningError(
            f"{Path(start).resolve()} is not inside a DVC repository; run from the ferflow "
            "repository root, or create one with `git init && dvc init`"
        ) from None


@contextmanager
def _open_repo(repo_root: Path) -> Iterator[Any]:
    from dvc.repo import Repo

    with Repo(str(find_repo_root(repo_root))) as repo:
        yield repo


@contextmanager
def _dvc_errors(action: str, repo: Any = None) -> Iterator[None]:
    """Turn DVC, boto and file-system failures into one `VersioningError` with a hint."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
    from dvc.exceptions import DvcException

    try:
        yield
    except NoCredentialsError:
        raise VersioningError(
            f"{action}: no AWS credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
            "AWS_PROFILE), or store them with `dvc remote modify --local <remote> access_key_id ...`"
        ) from None
    except (DvcException, BotoCoreError, ClientError, OSError) as err:
        where = f" (remote {_describe_remote(repo)})" if repo is not None else ""
        raise VersioningError(
            mask_url(
                f"{action} failed{where}: {err}. Check the endpoint, the bucket and the "
                "credentials; see docs/data-versioning.md"
            )
        ) from err


def _describe_remote(repo: Any) -> str:
    config = repo.config
    name = config["core"].get("remote")
    if not name:
        return "none configured: run `ferflow data remote`"
    section = config["remote"].get(name, {})
    endpoint = section.get("endpointurl")
    return mask_url(f"{name!r} {section.get('url')}" + (f" at {endpoint}" if endpoint else ""))


def _source_suffix(source: Path) -> str:
    """'' for a folder, '.zip' or '.csv' for a file; anything else is an error."""
    if not source.exists():
        raise VersioningError(f"{source} does not exist; give the FER2013 folder, its .zip or fer2013.csv")
    if source.is_dir():
        return ""
    suffix = source.suffix.lower()
    if suffix == ".zip" and not zipfile.is_zipfile(source):
        raise VersioningError(f"{source} is named .zip but is not a zip archive (corrupt download?)")
    if suffix not in RAW_SUFFIXES:
        raise VersioningError(
            f"{source} is neither a folder, a .zip nor a .csv; give the FER2013 download folder, "
            "its zip, or fer2013.csv"
        )
    return suffix


def _destination(dest: Path, suffix: str, root: Path) -> Path:
    target = dest if dest.is_absolute() else root / dest
    if suffix and target.suffix.lower() != suffix:
        target = target.with_name(target.name + suffix)
    target = Path(os.path.abspath(target))
    if not target.is_relative_to(root):
        raise VersioningError(f"destination {target} is outside the DVC repository {root}; pick one inside")
    return target


def _copy_into_place(source: Path, target: Path, force: bool) -> None:
    """Copy via a temporary sibling, so an interrupted copy never looks like a dataset."""
    if target.exists():
        if not force:
            raise VersioningError(
                f"{target} already exists; pass --force to replace it with the new data (the old "
                "version stays in the DVC cache and git history), or --dest to put it elsewhere"
            )
        _remove(target)
    partial = target.with_name(f".{target.name}.partial")
    _remove(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    log.info("copying %s to %s", source, target)
    if source.is_dir():
        shutil.copytree(source, partial)
    else:
        shutil.copy2(source, partial)
    partial.rename(target)


def _existing_ancestor(path: Path) -> Path:
    """Where to look for the repository: the destination's nearest existing folder."""
    if not path.is_absolute():
        return Path.cwd()
    return next(folder for folder in (path, *path.parents) if folder.is_dir())


def _with_raw_suffix(path: Path) -> Path:
    """`path` itself if it (or its pointer) exists, else the first of path.zip / path.csv that does."""
    for candidate in (path, *(path.with_name(path.name + s) for s in RAW_SUFFIXES)):
        if candidate.exists() or candidate.with_name(candidate.name + ".dvc").exists():
            return candidate
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _log_next_steps(target: Path, root: Path, has_git: bool) -> None:
    relative = target.relative_to(root)
    if not has_git:  # a DVC project without git (`dvc init --no-scm`): nothing to commit
        log.info("tracked %s with DVC (%s.dvc). Next: `ferflow data push`", relative, relative)
        return
    to_stage = [f"{relative}.dvc"]
    if (target.parent / ".gitignore").exists():
        to_stage.append(str(relative.parent / ".gitignore"))
    log.info(
        "tracked %s with DVC. Next: git add %s && git commit -m 'data: %s'; then `ferflow data push`",
        relative,
        " ".join(to_stage),
        relative.name,
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise VersioningError(f"{path} is not valid YAML ({err}); restore it from git") from err
    return loaded if isinstance(loaded, dict) else {}


def _md5_of_out(outs: list[dict[str, Any]], path: str) -> str | None:
    for out in outs:
        if os.path.normpath(str(out.get("path", ""))) == os.path.normpath(path) and out.get("md5"):
            return str(out["md5"])
    return None


def _find_upwards(start: Path, name: str) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / name).is_file():
            return folder / name
        if (folder / ".dvc").is_dir():  # the repository root: stop here
            return None
    return None
