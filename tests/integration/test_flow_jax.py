"""The product's flow on JAX, the GPU workers' backend, without TensorFlow: `ferflow run`
(ingest, contract, both phases, evaluation with MLflow logging, registration with its smoke
test) in a subprocess with KERAS_BACKEND=jax and TensorFlow made unimportable, as in the GPU
worker image (the jax-gpu extra installs no TensorFlow). Then the registered model loads
in the stock MLflow pyfunc client of this process, on TensorFlow, and predicts what the
JAX-trained file predicts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import PARAMS_FILE, REPO, TINY_PIPELINE

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(3600)]

MODEL_NAME = "fer-flow-jax"
OVERRIDES = [
    "data.raw=raw",
    *TINY_PIPELINE,
    "base.image_size=32",
    "model.input_size=32",
    "finetune.epochs=2",
    f"register.model_name={MODEL_NAME}",
]

# A GPU worker has no TensorFlow: any import of it fails, as it would there.
NO_TENSORFLOW = """
import sys
class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r} (a JAX GPU worker has no TensorFlow)")
        return None
sys.meta_path.insert(0, _NoTensorFlow())
from ferflow.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_flow_runs_on_jax_without_tensorflow_and_its_model_serves_on_tensorflow(tmp_path):
    pytest.importorskip("jax")
    from ferflow.commands.data import synthesize
    from ferflow.config import load_params

    shutil.copy(PARAMS_FILE, tmp_path / "params.yaml")
    synthesize(load_params(tmp_path / "params.yaml", OVERRIDES), tmp_path / "raw")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "MLFLOW_TRACKING_URI": uri,
        "PREFECT_HOME": str(tmp_path / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600",
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
    }
    env.pop("PREFECT_API_URL", None)
    sets = [arg for override in OVERRIDES for arg in ("--set", override)]

    # when the whole flow runs on JAX, TensorFlow unimportable
    done = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW, "run", "--params", "params.yaml", *sets],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=3000,
    )

    # then it trained, evaluated, registered and promoted a model
    assert done.returncode == 0, done.stderr[-4000:]
    promotion = json.loads((tmp_path / "reports" / "promotion.json").read_text())
    assert promotion["decision"] == "promoted", promotion
    history = json.loads((tmp_path / "models" / "history.json").read_text())["epochs"]
    assert [r["phase"] for r in history] == ["train", "finetune", "finetune"]

    # and the registered model serves in the stock pyfunc client on TensorFlow (this process)
    import keras
    import mlflow

    assert keras.backend.backend() == "tensorflow"
    # both: an earlier test of this process may have left the global registry URI elsewhere
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    served = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    faces = np.random.default_rng(0).integers(0, 256, (5, 32, 32)).astype("float32")
    probabilities = np.asarray(served.predict(faces))
    assert probabilities.shape == (5, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    trained = keras.saving.load_model(tmp_path / "models" / "model.keras", compile=False)
    np.testing.assert_allclose(probabilities, trained.predict(faces, verbose=0), atol=1e-5)
