"""Models in MLflow: logging a model, loading one by URI (as evaluation, the smoke test and
serving do), and what the registry holds as a sentence for error messages. The registered
versions and their aliases are ferflow.tracking.registry.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ferflow.errors import FerflowError
from ferflow.tracking.store import client, experiment_id, model_signature, redact

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"

PredictFn = Callable[[np.ndarray], np.ndarray]


class RegistryError(FerflowError, RuntimeError):
    """The registry is not in a state this command can work with; the message says why."""


def is_model_uri(model: str) -> bool:
    """True for `models:/...`, `runs:/...` and other URIs; False for a local file path."""
    return model.startswith(("models:/", "runs:/")) or "://" in model


MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # no such model/version; alias


def version_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


# --- logging models ----------------------------------------------------------------------


def log_model(model: Any, image_size: int, num_classes: int, example: np.ndarray) -> str:
    """Log the Keras model once on the active run, with a signature (and an example .npy).

    Loadable with stock `mlflow.pyfunc.load_model(uri).predict(batch)` for a float32
    `(n, S, S)` batch, returning `(n, num_classes)` probabilities. Returns the model URI.
    """
    import mlflow

    # No `input_example=`: MLflow 3.17's Keras flavour writes it before creating the model
    # folder (FileNotFoundError). The example goes next to the model as a .npy instead.
    info = mlflow.keras.log_model(
        model, name=MODEL_ARTIFACT, signature=model_signature(image_size, num_classes)
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "input_example.npy"
        np.save(path, example.astype(np.float32), allow_pickle=False)
        mlflow.log_artifact(str(path), "model_example")
    return str(info.model_uri)


def log_model_file(
    uri: str, model_path: Path, experiment: str, image_size: int, num_classes: int, run_id: str | None
) -> tuple[str, str]:
    """Log a .keras file as an MLflow Keras model; returns (model URI, run id).

    Used when training did not log the model itself (no `model_uri` in run.json): into
    `run_id` when given, else a new run of `experiment`.
    """
    import keras
    import mlflow

    tracker = client(uri)
    model = keras.saving.load_model(model_path, compile=False)
    experiment_ref = None if run_id else experiment_id(tracker, experiment, uri)
    with mlflow.start_run(run_id=run_id, experiment_id=experiment_ref) as active:
        info = mlflow.keras.log_model(
            model, name=MODEL_ARTIFACT, signature=model_signature(image_size, num_classes)
        )
    return str(info.model_uri), active.info.run_id


def fetch_model_file(model_uri: str, destination: Path) -> Path:
    """The .keras file MLflow holds for the logged model `model_uri`, copied to `destination`
    (written aside, then renamed): the local model file is then byte for byte the one its
    registered versions serve."""
    import os
    import shutil

    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder))
        found = sorted(local.rglob("*.keras"))
        if len(found) != 1:
            raise RegistryError(
                f"{model_uri} holds {len(found)} .keras files, not one: see the run's artifacts"
            )
        partial = destination.with_name(f".partial-{destination.name}")
        shutil.copyfile(found[0], partial)
        os.replace(partial, destination)
    return destination


# --- loading models ----------------------------------------------------------------------


def load_predict_fn(model_uri: str, uri: str, batch_size: int) -> PredictFn:
    """A `predict_fn(batch (n,S,S) float32) -> (n,k)` for an MLflow model URI.

    `models:/name@alias`, `models:/name/3`, `runs:/id/model` load the Keras flavour when
    there is one (fast batched predict), else the generic pyfunc flavour.
    """
    import mlflow

    client(uri)
    try:
        keras_model = mlflow.keras.load_model(model_uri)
    except Exception as keras_err:  # not a Keras-flavour model: fall back to pyfunc
        log.debug("no keras flavour for %s (%s); loading pyfunc", model_uri, keras_err)
        try:
            pyfunc = mlflow.pyfunc.load_model(model_uri)
        except Exception as err:
            raise RegistryError(
                f"cannot load model {model_uri!r} from {redact(uri)}: {str(err).splitlines()[0]}. Check "
                "the URI (`models:/NAME@champion`, `models:/NAME/VERSION`, `runs:/RUN_ID/model`), "
                f"--model-name and MLFLOW_TRACKING_URI. {registered_models(client(uri))}"
            ) from err

        def predict(batch: np.ndarray) -> np.ndarray:
            with contextlib.redirect_stdout(io.StringIO()):  # Keras' progress bar
                return np.asarray(pyfunc.predict(batch))

        return predict
    return lambda batch: np.asarray(keras_model.predict(batch, batch_size=batch_size, verbose=0))


def serve_predict(model_uri: str, uri: str, batch: np.ndarray) -> np.ndarray | str:
    """Predict `batch` the way serving does (stock pyfunc); the probabilities, or what went
    wrong as a sentence."""
    import mlflow

    client(uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
        # The Keras flavour predicts with Keras' default progress bar on stdout: not ours to show.
        with contextlib.redirect_stdout(io.StringIO()):
            return np.asarray(model.predict(batch.astype(np.float32)))
    except Exception as err:
        return f"{model_uri} cannot be loaded or run with mlflow.pyfunc: {type(err).__name__}: {err}"


def registered_models(client: Any) -> str:
    """What the registry holds, as one sentence: names and where their aliases point."""
    try:
        found = client.search_registered_models(max_results=20)
    except Exception as err:  # a listing is a courtesy: never hide the real error
        log.debug("cannot list registered models: %s", err)
        return ""
    if not found:
        return "The registry holds no model yet: run the pipeline first (`make demo`'s model: run in demo/)"
    described = []
    for model in found:
        aliases = ", ".join(
            f"{alias}: v{version}" for alias, version in sorted((model.aliases or {}).items())
        )
        described.append(f"{model.name} ({aliases or 'no aliases'})")
    return "Registered models: " + "; ".join(described)
