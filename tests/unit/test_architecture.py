"""The layers the code promises, checked: import-linter contracts, no import circles, no
overlong module without a reason, and STAGES (so dvc.yaml and the Prefect cache key)
listing the code each stage really runs.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest
import yaml

from ferflow.stages import STAGES
from tests.conftest import REPO
from tests.stage_code import PACKAGE_DIR, expand, stage_code

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_LINES = 400
LONG_REASON = "Long on purpose:"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the tree at `root` (its pyproject.toml, its src/, flows/, tasks/)."""
    env = {"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": f"{root / 'src'}:{root}", "HOME": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_import_contracts_hold():
    result = lint_imports(REPO)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_mlflow_import_in_a_domain_module_breaks_a_contract(tmp_path):
    # given a copy of the code where the gate imports mlflow
    for name in ("src", "flows", "tasks"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    gate = tmp_path / "src" / "ferflow" / "evaluation" / "gate.py"
    gate.write_text(gate.read_text() + "\nimport mlflow  # planted\n")
    # when the contracts are checked, then the domain contract is broken and names the import
    result = lint_imports(tmp_path)

    assert result.returncode != 0
    assert "domain modules know nothing of tracking" in result.stdout
    assert "ferflow.evaluation.gate -> mlflow" in result.stdout


def test_every_top_level_module_is_under_a_contract():
    """A new module of src/ferflow must be placed in a layer, not slip past the rules."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    domain = next(c for c in config["contracts"] if c["name"].startswith("domain modules"))
    layers = next(c for c in config["contracts"] if c["type"] == "layers")
    placed = set(domain["source_modules"]) | set(layers["layers"])
    modules = {
        f"ferflow.{p.stem if p.is_file() else p.name}"
        for p in PACKAGE_DIR.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())
    }

    assert modules - placed == set()


def test_there_is_no_import_circle():
    graph = grimp.build_graph("ferflow", "flows", "tasks", cache_dir=None)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            # a package and its own submodules are one unit (re-exports)
            if imported.startswith(f"{module}.") or module.startswith(f"{imported}."):
                continue
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back and not any(a.startswith(f"{b}.") or b.startswith(f"{a}.") for a, b in _pairs(back)):
                cycles.append(" -> ".join([module, *back]))

    assert cycles == []


def _pairs(chain: tuple[str, ...]) -> list[tuple[str, str]]:
    return list(itertools.pairwise(chain))


def test_no_module_is_long_without_a_stated_reason():
    long = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > MAX_LINES and LONG_REASON not in text.split('"""')[1]:
            long.append(f"{path.relative_to(PACKAGE_DIR)} ({text.count(chr(10))} lines)")

    assert long == [], f"split these, or say why in their docstring ('{LONG_REASON} ...')"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stages_list_exactly_the_code_each_stage_runs(stage):
    declared, derived = expand(STAGES[stage].code), stage_code(stage)

    assert derived - declared == set(), "the stage runs code STAGES does not list (a hidden dependency)"
    assert declared - derived == set(), "STAGES lists code the stage never runs (a stale entry)"


# --- a param read through another module reruns the stage (DVC) ----------------------------


def test_changing_the_blank_image_policy_makes_dvc_rerun_validate_then_training(tmp_path):
    """validate.drop_blank_from_train is read by validate, which writes the train rows
    training uses (reports/training_rows.json): `dvc status` reports validate changed when
    the policy flips, and train changed when the rows file does. Training itself reads no
    validate.* param."""
    dvc = [sys.executable, "-m", "dvc"]
    shutil.copy(REPO / "dvc.yaml", tmp_path)
    shutil.copy(REPO / "params.yaml", tmp_path)
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / params["data"]["prepared"]).mkdir(parents=True)
    (tmp_path / params["data"]["prepared"] / "images.npy").write_bytes(b"pixels")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "validation.json").write_text("{}")
    (tmp_path / "reports" / "training_rows.json").write_text('{"dropped": {}}')
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "head.keras").write_bytes(b"weights")
    (tmp_path / "models" / "head.keras.lineage.json").write_text("{}")

    def run(*args: str) -> str:
        done = subprocess.run([*dvc, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run("init", "--no-scm", "-q")
    run("commit", "--force", "validate", "train")  # record deps, params and outs in dvc.lock
    assert "changed" not in run("status", "validate", "train")

    text = (tmp_path / "params.yaml").read_text()
    flipped = text.replace("drop_blank_from_train: false", "drop_blank_from_train: true", 1)
    assert flipped != text
    (tmp_path / "params.yaml").write_text(flipped)

    assert "modified:           validate" in run("status", "validate")  # the whole section
    assert "train" not in json.loads(run("status", "--json"))  # the policy alone: only validate
    # validate rerun leaves out a blank row: the rows file changes, so training is stale
    (tmp_path / "reports" / "training_rows.json").write_text('{"dropped": {"blank": [3]}}')
    assert "reports/training_rows.json" in json.dumps(json.loads(run("status", "--json"))["train"])
