"""A newcomer's first hour (issue #14): where the data comes from and what the infra needs.

Docker has no engine here, so these tests read the files: README and docs text, the compose
file, the Kubernetes manifest, .dockerignore against the Dockerfiles' COPY lines, the Makefile.
"""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.conftest import REPO

README = REPO / "README.md"
INFRA = REPO / "infra"
COMPOSE = INFRA / "docker-compose.yml"


def _section(markdown: str, heading: str) -> str:
    """The text under `heading` up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    start = markdown.index(f"\n{heading}\n")
    rest = markdown[start + len(heading) + 2 :]
    end = re.search(rf"^#{{1,{len(level)}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


# --- 1. where FER2013 comes from ---------------------------------------------------------


def test_readme_says_where_to_get_fer2013_and_on_what_terms():
    section = _section(README.read_text(), "### Getting FER2013")

    # the two public sources, and the forms ferflow reads
    assert "msambare" in section and "kaggle.com/datasets/msambare/fer2013" in section
    assert "challenges-in-representation-learning-facial-expression-recognition-challenge" in section
    assert "fer2013.csv" in section and ".zip" in section and "folder" in section
    assert "`train/`" in section and "`test/`" in section
    # the terms: the user's to accept, never ferflow's
    assert "non-commercial" in section and "real" in section and "terms" in section
    assert "never downloads" in section


# --- 2. the GPU worker's compose profile -------------------------------------------------

# `docker compose [options] up ...` as the docs write it, up to the end of the code span
COMPOSE_UP = re.compile(r"docker compose\b[^`\n]*?\bup\b[^`\n]*")


def _docs_that_start_the_stack() -> dict[str, str]:
    """README, docs/ (architecture.md is not about running things) and infra/, by path."""
    files = [
        README,
        *sorted((REPO / "docs").glob("*.md")),
        *sorted(p for p in INFRA.rglob("*") if p.is_file()),
    ]
    texts = {
        str(p.relative_to(REPO)): p.read_text(errors="replace") for p in files if p.name != "architecture.md"
    }
    return {path: text for path, text in texts.items() if COMPOSE_UP.search(text)}


def _gpu_profiles(compose: dict) -> set[str]:
    """The profiles of the services that reserve NVIDIA GPUs."""
    profiles = set()
    for service in compose["services"].values():
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        if any("gpu" in device.get("capabilities", []) for device in devices):
            profiles.update(service.get("profiles", []))
    return profiles


def test_the_gpu_worker_only_starts_with_profile_gpu():
    compose = yaml.safe_load(COMPOSE.read_text())

    assert compose["services"]["worker-gpu"]["profiles"] == ["gpu"]
    assert _gpu_profiles(compose) == {"gpu"}


def test_docs_that_start_the_stack_and_talk_about_gpu_workers_pass_profile_gpu():
    documents = _docs_that_start_the_stack()
    assert {"docs/orchestration.md", "infra/docker-compose.yml"} <= set(documents)

    for path, text in documents.items():
        if re.search(r"gpu", text, re.IGNORECASE):
            # the document shows the command that starts the GPU worker ...
            commands = COMPOSE_UP.findall(text)
            assert any("--profile gpu" in command for command in commands), path
        for line in text.splitlines():
            # ... and no start command beside a mention of the GPU worker leaves it out
            if re.search(r"gpu", line, re.IGNORECASE):
                for command in COMPOSE_UP.findall(line):
                    assert "--profile gpu" in command, f"{path}: {command}"


# --- 3. the GPU pool's type --------------------------------------------------------------

DEPLOY_SH = INFRA / "deploy.sh"
POOL_TYPES = ("process", "docker", "kubernetes")


def _pool_types_deploy_sh_creates() -> dict[str, str]:
    """Pool variable (CPU_POOL, GPU_POOL) -> the --type deploy.sh creates it with (comments skipped)."""
    commands = [line for line in DEPLOY_SH.read_text().splitlines() if not line.lstrip().startswith("#")]
    return dict(re.findall(r'work-pool create "\$(\w+)" --type (\w+)', "\n".join(commands)))


def test_params_and_prefect_yaml_name_the_pool_type_deploy_sh_creates():
    created = _pool_types_deploy_sh_creates()
    assert set(created) == {"CPU_POOL", "GPU_POOL"}
    params = (REPO / "params.yaml").read_text()
    prefect = (REPO / "prefect.yaml").read_text()

    gpu_pool_comment = re.search(r"^\s*gpu_work_pool:.*#(.*)$", params, re.MULTILINE).group(1)
    deployments = yaml.safe_load(prefect)["deployments"]
    gpu_description = next(d["description"] for d in deployments if d["name"].endswith("-gpu"))
    assert f"{created['GPU_POOL']} pool" in gpu_pool_comment
    assert f"{created['GPU_POOL']} pool" in gpu_description
    # no other pool type is claimed: "docker pool", "docker/kubernetes workers", ...
    for text in (params, prefect):
        for kind in set(POOL_TYPES) - set(created.values()):
            claim = re.search(rf"\b{kind}\b[\w/ ]*\b(pool|workers?)\b", text, re.IGNORECASE)
            assert claim is None, claim.group(0)


# --- 4. what the Kubernetes GPU workers need ---------------------------------------------

K8S_WORKER = INFRA / "k8s" / "gpu-worker.yaml"
IMAGE_PLACEHOLDER = "REGISTRY/ferflow-worker-gpu:TAG"


def test_k8s_gpu_worker_image_is_a_placeholder_for_your_registry():
    manifest = yaml.safe_load(K8S_WORKER.read_text())
    (container,) = manifest["spec"]["template"]["spec"]["containers"]

    assert manifest["kind"] == "Deployment"
    assert container["image"] == IMAGE_PLACEHOLDER


def test_k8s_gpu_worker_prerequisites_are_stated_in_the_manifest_and_the_docs():
    header = "\n".join(line for line in K8S_WORKER.read_text().splitlines() if line.startswith("#"))
    docs = _section(
        (REPO / "docs" / "orchestration.md").read_text(), "### Kubernetes GPU workers (`infra/k8s/`)"
    )
    build = f"docker build -f infra/docker/worker-gpu.Dockerfile -t {IMAGE_PLACEHOLDER} ."

    for text in (header, docs):
        for needed in ("Prefect API", "MLflow tracking server", "S3 endpoint", "infra/deploy.sh"):
            assert needed in text, needed
        assert "secrets.example.yaml" in text and "ferflow-secrets" in text
        assert build in text and f"docker push {IMAGE_PLACEHOLDER}" in text
    assert "docs/orchestration.md" in header


def test_the_secret_the_worker_reads_has_the_keys_it_needs():
    secret = yaml.safe_load((INFRA / "k8s" / "secrets.example.yaml").read_text())
    manifest = yaml.safe_load(K8S_WORKER.read_text())
    (container,) = manifest["spec"]["template"]["spec"]["containers"]

    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    assert {
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    } <= set(secret["stringData"])


# --- 5. the Docker build context ---------------------------------------------------------


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception `!`, regex) per pattern, with Docker's semantics: patterns match from
    the context root, `*` and `?` stop at `/`, `**` crosses folders, the last match wins."""
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        exception = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            else:
                regex += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
                i += 1
        rules.append((exception, re.compile(regex)))
    return rules


def _ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker leaves `path` out when a pattern matches it or a folder above it."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for exception, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not exception
    return ignored


def _dockerfile_copy_sources() -> set[str]:
    sources = set()
    for dockerfile in (INFRA / "docker").glob("*.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                arguments = [a for a in line.split()[1:] if not a.startswith("--")]
                sources.update(arguments[:-1])
    return sources


def test_dockerignore_keeps_environments_data_models_stores_and_secrets_out():
    rules = _dockerignore_rules()
    left_out = [
        ".venv/bin/python",
        "data/raw/fer2013.zip",
        "data/raw/fer2013/train/happy/1.jpg",
        "data/prepared/images.npy",
        "models/model.keras",
        "reports/metrics.json",
        "mlruns/0/meta.yaml",
        "mlartifacts/1/abc/artifacts/model.keras",
        "mlflow/mlflow.db",
        "mlflow/artifacts/1/abc/plot.png",
        ".prefect/storage/result",
        ".dvc/cache/files/md5/ab/cdef",
        ".dvc/tmp/rwlock",
        "src/ferflow/__pycache__/config.cpython-311.pyc",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/0.1/x",
        ".pytest_cache/v/cache/lastfailed",
        "demo/data/raw/synthetic/x.png",
        "demo/models/model.keras",
        "demo/mlflow/mlflow.db",
        "demo/.prefect/storage/result",
        "test-output/run.log",
        ".whl/tensorflow-2.20.0-cp311-cp311-linux_x86_64.whl",
        "weights.keras",
        "bench/features.npy",
        "tests/arrays.npz",
        "infra/.env",
        ".dvc/config.local",
    ]

    assert [path for path in left_out if not _ignored(path, rules)] == []


def test_dockerignore_keeps_what_the_dockerfiles_copy_and_the_workers_need():
    rules = _dockerignore_rules()
    sources = _dockerfile_copy_sources()
    assert {".", "pyproject.toml", "uv.lock", "README.md", "infra/mlflow/basic_auth.ini"} <= sources

    # `COPY . .`: the image runs from that copy, so everything git tracks must reach it,
    # plus the .dvc pointers `dvc pull` reads and the .git that DVC opens
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    needed = sources - {"."} | set(tracked)
    needed |= {"data/raw/fer2013.zip.dvc", "data/raw/.gitignore", ".dvc/config", ".git/HEAD"}
    needed |= {"src/ferflow/cli.py", "flows/retrain.py", "tasks/pipeline.py", "params.yaml", "prefect.yaml"}
    needed |= {"dvc.yaml", "profiles/from-scratch.yaml", "infra/deploy.sh", "mlflow/README.md"}

    assert len(tracked) > 20
    assert sorted(path for path in needed if _ignored(path, rules)) == []


# --- 6. make clean -----------------------------------------------------------------------


def test_make_clean_removes_the_local_mlflow_stores_too():
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^clean:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE).group(1)
    removed = set(recipe.split()) - {"rm", "-rf"}

    before = {"data/prepared", "models", "reports", "mlflow/mlflow.db", "mlflow/artifacts", "demo"}
    assert before | {"mlruns", "mlartifacts"} == removed
    assert ".venv" not in removed and "data/raw" not in removed
