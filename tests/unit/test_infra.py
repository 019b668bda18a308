"""infra/, prefect.yaml and dvc.yaml agree with each other and with the code.

Docker has no engine here, so these tests parse the files: service names, ports, env
var names, image tags, commands that reference real modules, and work pool names that
equal params.yaml.
"""

from __future__ import annotations

import json
import re
import shlex

import pytest
import yaml

from ferflow.config import load_params
from ferflow.stages import STAGES
from tests.conftest import PARAMS_FILE, REPO

INFRA = REPO / "infra"
COMPOSE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / ".env.example"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def defaults():
    return load_params(PARAMS_FILE)


def env_example() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


def pool_of(command: list[str]) -> str:
    return command[command.index("--pool") + 1]


# --- docker compose ---------------------------------------------------------------------


def test_compose_runs_the_whole_stack(compose):
    assert {"postgres", "minio", "mlflow", "prefect-server", "worker-cpu", "worker-gpu"} <= set(
        compose["services"]
    )


def test_every_variable_compose_uses_is_in_env_example(compose):
    used = set(re.findall(r"\$\{([A-Z0-9_]+)\}", COMPOSE.read_text()))

    assert used - set(env_example()) == set()


def test_env_example_holds_placeholders_not_secrets():
    secrets = {k: v for k, v in env_example().items() if re.search("PASSWORD|SECRET", k)}

    assert secrets
    assert all(value.startswith("change-me") for value in secrets.values())


def test_mlflow_server_uses_postgres_proxied_s3_and_basic_auth(compose):
    command = " ".join(compose["services"]["mlflow"]["command"])

    assert "--app-name=basic-auth" in command
    assert "--backend-store-uri=postgresql://" in command and "@postgres:5432/mlflow" in command
    assert "--artifacts-destination=s3://${MLFLOW_BUCKET}" in command
    assert "--serve-artifacts" in command


def test_mlflow_auth_admin_comes_from_the_environment_not_the_ini(compose):
    environment = compose["services"]["mlflow"]["environment"]
    ini = (INFRA / "mlflow" / "basic_auth.ini").read_text()

    assert {"MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"} <= set(environment)
    assert "admin_password" not in ini


def test_postgres_creates_the_databases_mlflow_and_prefect_use(compose):
    sql = (INFRA / "postgres" / "init-databases.sql").read_text()
    prefect_url = compose["services"]["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]

    assert "CREATE DATABASE mlflow" in sql and "CREATE DATABASE prefect" in sql
    assert prefect_url.endswith("@postgres:5432/prefect")


def test_workers_poll_the_pools_params_names(compose, defaults):
    services = compose["services"]

    assert pool_of(services["worker-cpu"]["command"]) == defaults.flow.work_pool
    assert pool_of(services["worker-gpu"]["command"]) == defaults.flow.gpu_work_pool


def test_workers_reach_the_servers_by_their_service_names_and_ports(compose):
    environment = compose["services"]["worker-cpu"]["environment"]

    assert environment["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert environment["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert "4200" in compose["services"]["prefect-server"]["command"]


def test_gpu_worker_reserves_nvidia_devices(compose):
    devices = compose["services"]["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]

    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_built_images_have_dockerfiles_and_the_env_tag(compose):
    built = {name: s for name, s in compose["services"].items() if "build" in s}

    assert {"mlflow", "worker-cpu", "worker-gpu"} <= set(built)
    for service in built.values():
        assert (INFRA / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        assert service["image"].endswith(":${FERFLOW_IMAGE_TAG}")


@pytest.mark.parametrize(("dockerfile", "extra"), [("worker-cpu", "cpu"), ("worker-gpu", "jax-gpu")])
def test_worker_images_install_the_locked_extra(dockerfile, extra, defaults):
    text = (INFRA / "docker" / f"{dockerfile}.Dockerfile").read_text()
    pool = defaults.flow.work_pool if extra == "cpu" else defaults.flow.gpu_work_pool

    assert f"uv sync --frozen --extra {extra}" in text
    assert f'"--pool", "{pool}"' in text


def test_the_gpu_worker_trains_on_jax_with_the_gpu_profile_and_a_compile_cache(compose, prefect_yaml):
    image = (INFRA / "docker" / "worker-gpu.Dockerfile").read_text()
    service = compose["services"]["worker-gpu"]
    deployment = yaml.safe_load((INFRA / "k8s" / "gpu-worker.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    gpu_run = {d.name: d for d in prefect_yaml.deployments}["weekly-retrain-gpu"]

    assert "KERAS_BACKEND=jax" in image and "tensorflow" not in image.split("FROM", 1)[1].lower()
    assert service["environment"]["KERAS_BACKEND"] == "jax" == env["KERAS_BACKEND"]
    cache = env["FERFLOW_COMPILATION_CACHE"]
    assert service["environment"]["FERFLOW_COMPILATION_CACHE"] == cache
    assert any(cache.startswith(m["mountPath"]) for m in pod["containers"][0]["volumeMounts"])
    assert any(v.endswith(":/var/cache/ferflow") for v in service["volumes"])
    assert gpu_run.parameters["params_file"] == "profiles/gpu.yaml"
    profile = load_params(REPO / "profiles" / "gpu.yaml")
    assert profile.finetune.epochs == "auto" and profile.finetune.time_budget_s
    assert profile.runtime.mixed_precision and profile.train.batch_size % 8 == 0


def test_compose_deploy_service_runs_the_deploy_script(compose):
    command = compose["services"]["deploy"]["command"]

    assert (REPO / command[0]).is_file()


# --- kubernetes and work pool templates --------------------------------------------------


def test_k8s_gpu_worker_requests_a_gpu_on_the_gpu_pool(defaults):
    deployment = yaml.safe_load((INFRA / "k8s" / "gpu-worker.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]

    assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert pool_of(container["command"]) == defaults.flow.gpu_work_pool
    # a placeholder for the user's registry and tag (tests/unit/test_infra_setup.py)
    assert container["image"] == "REGISTRY/ferflow-worker-gpu:TAG"


def test_gpu_kubernetes_job_template_requests_gpus():
    template = json.loads((INFRA / "prefect" / "gpu-kubernetes-job-template.json").read_text())
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]

    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpus }}"
    assert "gpus" in template["variables"]["properties"]


def test_cpu_pool_template_is_prefects_process_template_with_quiet_defaults():
    template = json.loads((INFRA / "prefect" / "cpu-pool-job-template.json").read_text())

    assert set(template["job_configuration"]) >= {"command", "env", "working_dir"}
    assert (
        template["variables"]["properties"]["env"]["default"]["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    )


# --- prefect.yaml -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def prefect_yaml():
    from prefect.cli.deploy._models import PrefectYamlModel

    return PrefectYamlModel.model_validate(yaml.safe_load((REPO / "prefect.yaml").read_text()))


def test_deployments_run_the_real_flow_with_its_parameters(prefect_yaml):
    from flows.retrain import retrain

    parameters = set(retrain.parameters.properties)
    for deployment in prefect_yaml.deployments:
        module, _, name = deployment.entrypoint.partition(":")
        assert (REPO / module).is_file() and name == retrain.fn.__name__
        assert set(deployment.parameters) <= parameters


def test_deployments_use_params_pools_schedule_and_concurrency(prefect_yaml, defaults):
    by_name = {d.name: d for d in prefect_yaml.deployments}
    cpu, gpu = by_name[defaults.flow.deployment], by_name[f"{defaults.flow.deployment}-gpu"]

    assert cpu.work_pool.name == defaults.flow.work_pool
    assert gpu.work_pool.name == defaults.flow.gpu_work_pool
    for deployment in (cpu, gpu):
        assert deployment.schedules[0].cron == defaults.flow.schedule_cron
        assert deployment.concurrency_limit.limit == defaults.flow.concurrency_limit


def test_deployments_send_ferflows_log_lines_to_the_flow_run(prefect_yaml):
    from flows.local import QUIET_ENVIRONMENT

    for deployment in prefect_yaml.deployments:
        env = deployment.work_pool.job_variables["env"]
        assert set(env["PREFECT_LOGGING_EXTRA_LOGGERS"].split(",")) == {"ferflow", "flows", "tasks"}
        for name in ("PREFECT_LOGGING_EXTRA_LOGGERS", "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"):
            assert env[name] == QUIET_ENVIRONMENT[name]  # what `ferflow run` sets for a local run


def test_each_deployment_sets_its_keras_backend_over_the_pool_template(prefect_yaml):
    # a deployment's env is merged over the pool template's, whose KERAS_BACKEND is tensorflow:
    # the GPU deployment must say jax, or its flow runs import TensorFlow on the GPU image
    template = json.loads((INFRA / "prefect" / "cpu-pool-job-template.json").read_text())
    assert template["variables"]["properties"]["env"]["default"]["KERAS_BACKEND"] == "tensorflow"
    by_name = {d.name: d.work_pool.job_variables["env"] for d in prefect_yaml.deployments}
    assert by_name["weekly-retrain"]["KERAS_BACKEND"] == "tensorflow"
    assert by_name["weekly-retrain-gpu"]["KERAS_BACKEND"] == "jax"


def test_deploy_script_creates_the_pools_prefect_yaml_uses(prefect_yaml):
    script = (INFRA / "deploy.sh").read_text()

    for deployment in prefect_yaml.deployments:
        assert f":-{deployment.work_pool.name}}}" in script
    assert "deploy --all" in script


# --- dvc.yaml ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _resolved(path: str, defaults) -> str:
    return path.replace("${data.raw}", defaults.data.raw).replace("${data.prepared}", defaults.data.prepared)


def test_the_committed_dvc_yaml_is_what_the_stage_table_writes():
    """dvc.yaml is derived from STAGES (ferflow.stages.dvcfile): edit the table, then
    `make dvc-yaml`."""
    from ferflow.stages.dvcfile import render

    assert (REPO / "dvc.yaml").read_text() == render(), "dvc.yaml is stale: run `make dvc-yaml`"


def test_a_change_to_the_stage_table_shows_in_the_written_dvc_yaml(monkeypatch):
    # given one more param read by the train stage
    from dataclasses import replace

    from ferflow.stages import dvcfile

    changed = {
        **STAGES,
        "train": replace(STAGES["train"], params=(*STAGES["train"].params, "evaluate.tta_flip")),
    }
    monkeypatch.setattr(dvcfile, "STAGES", changed)
    # when dvc.yaml is written, then its train stage lists it, and nothing else changed
    written = yaml.safe_load(dvcfile.render())["stages"]
    committed = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert written["train"]["params"] == [*committed["train"]["params"], "evaluate.tta_flip"]
    assert {k: v for k, v in written.items() if k != "train"} == {
        k: v for k, v in committed.items() if k != "train"
    }


def test_dvc_params_name_existing_params_keys(dvc_stages, defaults):
    flat = defaults.flat()
    keys = set(flat) | {k.rsplit(".", i)[0] for k in flat for i in range(1, k.count(".") + 1)}

    for name, stage in dvc_stages.items():
        assert set(stage["params"]) <= keys, name


def test_dvc_code_deps_exist(dvc_stages):
    for stage in dvc_stages.values():
        for dep in stage["deps"]:
            if dep.startswith("src/"):
                assert (REPO / dep).exists(), dep


def test_dvc_stages_match_the_stage_declarations(dvc_stages, defaults):
    """The Prefect cache and DVC invalidate a stage on the same params and code; the stages
    without a command are the flow's own steps (DVC pull and push), not DVC stages."""
    assert set(dvc_stages) == {name for name, spec in STAGES.items() if spec.cmd}
    for name, spec in STAGES.items():
        if not spec.cmd:
            continue
        stage = dvc_stages[name]
        code = {d.removeprefix("src/ferflow/") for d in stage["deps"] if d.startswith("src/")}
        data = {_resolved(d, defaults) for d in stage["deps"] if not d.startswith("src/")}
        expected_inputs = {
            _resolved(f"${{data.{i}}}", defaults) if i in ("raw", "prepared") else i for i in spec.inputs
        }
        assert set(stage["params"]) == set(spec.params), name
        assert code == set(spec.code), name
        assert expected_inputs <= data, name


def test_dvc_commands_are_real_cli_commands(dvc_stages):
    from ferflow.cli import _build_parser

    commands = set(_build_parser()._subparsers._group_actions[0].choices)
    for stage in dvc_stages.values():
        argv = shlex.split(stage["cmd"])
        assert argv[0] == "ferflow" and argv[1] in commands, stage["cmd"]


def test_registration_output_is_never_replayed_from_the_dvc_cache(dvc_stages):
    outs = dvc_stages["register"]["outs"]

    assert outs == [{"reports/promotion.json": {"cache": False}}]
    assert dvc_stages["register"]["cmd"] == "ferflow register"  # the guarded stage, like the flow's


def test_demo_and_dvc_write_where_gitignore_keeps_out_of_git():
    ignored = (REPO / ".gitignore").read_text().splitlines()

    for path in ("/.prefect/", "/models/", "/reports/"):
        assert path in ignored
