"""What a person sees: the MLflow UI and the Great Expectations Data Docs in headless Chromium.

A real `mlflow server` on 127.0.0.1 holds two pipeline runs that differ in one param and a
registered model whose versions carry the `champion` / `challenger` aliases and the gate
decision. Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium) opens the
experiment's runs, the compare view of the two runs and the registered model page, and
checks that the metric names, the alias and the gate decision are on screen. It also opens
the Data Docs of a validation that fails one expectation. Screenshots go to
test-output/browser/ (git-ignored) for a person to look at.

By default the runs are logged per the MLflow naming conventions (seconds); with
`-m slow` the same checks also run against two real tiny pipeline runs (ferflow.stages:
synth, ingest, validate, train, finetune, evaluate, register), which take minutes on a CPU.

The MLflow 3 UI is a React single-page app with hash routes (`#/experiments/<id>/runs`,
`#/compare-runs?runs=[...]&experiments=[...]`, `#/models/<name>`): every check waits for
its text to render instead of sleeping.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, small_params

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = REPO / "test-output" / "browser"
MODEL_NAME = "fer-densenet169"
# Generous: the first render of the SPA compiles a lot of JavaScript on a busy 2-core machine.
RENDER_TIMEOUT_S = 90
SERVER_START_TIMEOUT_S = 300
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1600,1800",
)
# localStorage keys of the MLflow 3.17 UI (see its JS bundle): whether the side panel is open.
ASSISTANT_PANEL_KEY = "mlflow.assistant.panelOpen_v1"
ASSISTANT_OPENED_KEY = "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1"
# The metrics a person compares first; the conventions name them on every evaluated run.
SHOWN_METRICS = ("test.accuracy", "test.macro_f1", "test.weighted_f1")
# MLflow 3.17 chooses between its GenAI (traces) and model-training (runs) views by a switch
# kept in the browser (localStorage), not by the experiment's `mlflow.experimentKind` tag.
WORKFLOW_TYPE_KEY = "mlflow.workflowType_v1"
ML_VIEW = "workflowType=machine_learning"  # the URL parameter ferflow's links carry
PER_CLASS_PREFIXES = ("test.precision.", "test.recall.", "test.f1.", "test.auc.")
# Logged on every pipeline run; alphabetically near the top of the compare view's metrics.
FIRST_SUMMARY_METRIC = "finetune.best_val_accuracy"


def _require_browser() -> None:
    """Skip, saying what to install, when Chromium, its driver or Selenium is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not found: `apt-get install -y chromium chromium-driver` "
            "to run the browser tests"
        )
    pytest.importorskip("selenium", reason="selenium is not installed (uv sync --extra dev)")


# --- the MLflow server -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_health(url: str, process: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited with {process.returncode}:\n{log_file.read_text()[-3000:]}"
            )
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(f"{url}/health", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server at {url} not healthy after {SERVER_START_TIMEOUT_S}s; see {log_file}")


@contextlib.contextmanager
def mlflow_ui_server(root: Path) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with a SQLite store and proxied artifacts under `root`."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # The job runner (huey consumers) serves GenAI features only: seven idle processes here.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"  # no network here, and none wanted from a test
    command = [
        str(REPO / ".venv" / "bin" / "mlflow")
        if (REPO / ".venv" / "bin" / "mlflow").exists()
        else shutil.which("mlflow") or "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
    ]
    log_file = root / "server.log"
    with log_file.open("wb") as log:
        # Its own session, so the whole process group (uvicorn workers too) can be stopped.
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_for_health(url, process, log_file)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


# --- what the server holds -------------------------------------------------------------


@dataclass(frozen=True)
class TrackedRuns:
    url: str
    experiment_id: str
    run_ids: tuple[str, str]  # (champion's run, challenger's run)
    run_names: tuple[str, str]
    decisions: tuple[str, str]  # ferflow.gate.decision of each
    champion_version: str
    champion_run_name: str


def _log_conventional_runs(url: str, root: Path) -> TrackedRuns:
    """Two parent runs and two registered versions exactly as the pipeline names them, each
    with its training curves (both phases) and what the evaluate stage logs besides metrics:
    the keyed images of the run page (ferflow's own figures, drawn under `root`)."""
    import mlflow
    from mlflow.entities import Metric

    from ferflow.stages.evaluation import RUN_PAGE_IMAGES
    from ferflow.tracking import runs as tracking
    from tests.unit.test_compare import (
        BASELINE_RECALL,
        CLASSES,
        TUNED_RECALL,
        conventional_metrics,
        diagonal_confusion,
        log_conventional_run,
        per_class_rows,
    )
    from tests.unit.test_evaluate import history_records

    client = mlflow.MlflowClient(tracking_uri=url, registry_uri=url)
    experiment_id = client.create_experiment(
        "ferflow", tags={"mlflow.experimentKind": "custom_model_development"}
    )
    names = ("20261130-0100-data1a2b3c4d-p111111", "20261130-0200-data1a2b3c4d-p222222")
    decisions = ("promoted", "not-promoted")
    runs = []
    for name, lr, accuracy, recall, correct, decision in (
        (names[0], "0.0001", 0.5, BASELINE_RECALL, 4, decisions[0]),
        (names[1], "0.001", 0.62, TUNED_RECALL, 6, decisions[1]),
    ):
        runs.append(
            log_conventional_run(
                client,
                experiment_id,
                name,
                small_params(f"train.learning_rate={lr}"),
                conventional_metrics(accuracy),
                {"ferflow.gate.decision": decision, "ferflow.data_version": "1a2b3c4d"},
                diagonal_confusion(dict.fromkeys(CLASSES, correct)),
                per_class_rows(recall),
            )
        )
    history = history_records(head_epochs=3, finetune_epochs=2)
    figures = _draw_run_page_figures(root / "plots", history)
    for run_id in runs:
        client.log_batch(
            run_id,
            metrics=[
                Metric(key, row[key], 0, row["epoch"])
                for row in history
                for key in ("loss", "accuracy", "val_loss", "val_accuracy")
            ],
        )
        images = {key: figures / png for png, key in RUN_PAGE_IMAGES.items()}
        tracking.log_evaluation(url, run_id, {}, [], images=images, step=history[-1]["epoch"])
    client.create_registered_model(MODEL_NAME, description="FER2013 facial emotion classifier (DenseNet)")
    for run_id, alias, decision in zip(runs, ("champion", "challenger"), decisions, strict=True):
        version = client.create_model_version(
            MODEL_NAME, f"runs:/{run_id}/model", run_id=run_id, description=f"run {run_id}"
        )
        client.set_model_version_tag(MODEL_NAME, version.version, "ferflow.gate.decision", decision)
        client.set_registered_model_alias(MODEL_NAME, alias, version.version)
    return TrackedRuns(
        url,
        experiment_id,
        (runs[0], runs[1]),
        names,
        decisions,
        champion_version="1",
        champion_run_name=names[0],
    )


def _draw_run_page_figures(plots_dir: Path, history: list[dict[str, Any]]) -> Path:
    """ferflow's curves (both phases) and confusion matrices, as write_reports draws them."""
    import numpy as np

    from ferflow.evaluation import plots

    plots_dir.mkdir(parents=True, exist_ok=True)
    plots.history_figures(history, plots_dir)
    confusion = np.diag([6, 2, 5, 9, 5, 4, 7]) + np.eye(7, k=1, dtype=int)
    plots.confusion_figures(confusion, small_params().base.class_labels, plots_dir)
    return plots_dir


def _run_pipeline_twice(url: str, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> TrackedRuns:
    """Two real tiny pipeline runs (the second with another learning rate) into `url`."""
    import mlflow

    from ferflow import stages
    from ferflow.commands.data import synthesize

    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.chdir(workdir)
    tiny = ("model.backbone=densenet121", "model.input_size=32", "train.batch_size=32", "train.epochs=1")
    decisions = []
    for i, learning_rate in enumerate(("0.0001", "0.001")):
        params = small_params(*tiny, f"train.learning_rate={learning_rate}")
        paths = stages.Layout.from_params(params, workdir).with_raw(workdir / "raw")
        if i == 0:
            synthesize(params, paths.raw)
            stages.ingest(params, paths)
            stages.require_valid(stages.validate(params, paths))
        for stage in (stages.train, stages.finetune, stages.evaluate):
            stage(params, paths)
        decisions.append(stages.register(params, paths))
    client = mlflow.MlflowClient(tracking_uri=url, registry_uri=url)
    run_ids = (decisions[0]["run_id"], decisions[1]["run_id"])
    runs = [client.get_run(r) for r in run_ids]
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    return TrackedRuns(
        url,
        runs[0].info.experiment_id,
        run_ids,
        (runs[0].info.run_name, runs[1].info.run_name),
        (decisions[0]["decision"], decisions[1]["decision"]),
        champion_version=champion.version,
        champion_run_name=client.get_run(champion.run_id).info.run_name,
    )


@pytest.fixture(
    scope="module",
    params=["logged", pytest.param("pipeline", marks=pytest.mark.slow)],
)
def tracked(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrackedRuns]:
    _require_browser()
    root = tmp_path_factory.mktemp(f"mlflow-{request.param}")
    with mlflow_ui_server(root) as url, pytest.MonkeyPatch.context() as patch:
        if request.param == "pipeline":
            yield _run_pipeline_twice(url, tmp_path_factory.mktemp("pipeline"), patch)
        else:
            yield _log_conventional_runs(url, root)


# --- the browser -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium with a fresh profile, driven through Debian's chromedriver."""
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(RENDER_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _page_text(driver: Any) -> str:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.TAG_NAME, "body").text)
    except WebDriverException:  # the SPA replaced the body mid-read: try again
        return ""


# MLflow 3.17's compare tables are react-virtualized grids (class ReactVirtualized__Grid).
_SCROLL_CONTAINER_JS = """
return [...document.querySelectorAll(arguments[1])].find(
  (grid) => grid.textContent.includes(arguments[0]) && grid.scrollHeight > grid.clientHeight) || null;
"""


def text_seen_while_scrolling(driver: Any, anchor_text: str, boxes: str = ".ReactVirtualized__Grid") -> str:
    """Everything rendered while scrolling through the scrollable box holding `anchor_text`.

    MLflow's compare tables are virtualised boxes a few rows high: a row far down is not
    on the page until the box is scrolled to it, as a person would.
    """
    from selenium.webdriver.support.ui import WebDriverWait

    # The same text may show elsewhere first (a chart axis): wait for the box itself.
    box = WebDriverWait(driver, RENDER_TIMEOUT_S, poll_frequency=0.5).until(
        lambda d: d.execute_script(_SCROLL_CONTAINER_JS, anchor_text, boxes)
    )
    seen = [_page_text(driver)]
    for _ in range(200):  # bounded: a few hundred rows at most
        before = driver.execute_script("return arguments[0].scrollTop", box)
        driver.execute_script("arguments[0].scrollTop += arguments[0].clientHeight * 0.8", box)
        time.sleep(0.2)
        seen.append(str(box.text))
        if driver.execute_script("return arguments[0].scrollTop", box) == before:
            break
    return "\n".join(seen)


def open_and_wait(driver: Any, url: str, texts: tuple[str, ...], screenshot: str) -> str:
    """Open `url`, wait until every one of `texts` is rendered, save a screenshot; return the text.

    On timeout the screenshot is saved anyway and the failure names the missing texts.
    """
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.get(url)
    try:
        WebDriverWait(driver, RENDER_TIMEOUT_S, poll_frequency=0.5).until(
            lambda d: all(text in _page_text(d) for text in texts)
        )
    except TimeoutException:
        driver.save_screenshot(str(SCREENSHOTS / f"{screenshot}-FAILED.png"))
        shown = _page_text(driver)
        missing = [t for t in texts if t not in shown]
        pytest.fail(f"{url}: {missing} not rendered within {RENDER_TIMEOUT_S}s; page text:\n{shown[:2000]}")
    time.sleep(1.0)  # let charts finish their animation before the picture
    driver.save_screenshot(str(SCREENSHOTS / f"{screenshot}.png"))
    return _page_text(driver)


def _shot(tracked: TrackedRuns, page: str) -> str:
    """Screenshot name, e.g. `logged-compare-runs`."""
    source = "pipeline" if not tracked.run_names[0].startswith("20261130-0100") else "logged"
    return f"{source}-{page}"


# --- MLflow UI -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_ui(tracked: TrackedRuns, browser: Any) -> Any:
    """The browser on the MLflow UI, with the MLflow Assistant side panel closed.

    The panel would take a third of every screenshot; the UI keeps its state in
    localStorage, read when the app loads, hence the reload.
    """
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{tracked.url}/")
    # The app opens the panel on its first load and records that; close it only after that.
    WebDriverWait(browser, RENDER_TIMEOUT_S, poll_frequency=0.5).until(
        lambda d: d.execute_script(f"return window.localStorage.getItem('{ASSISTANT_OPENED_KEY}')")
    )
    browser.execute_script(f"window.localStorage.setItem('{ASSISTANT_PANEL_KEY}', 'false');")
    browser.refresh()
    return browser


def test_experiment_page_lists_both_runs_by_name(tracked: TrackedRuns, mlflow_ui: Any) -> None:
    # given two parent runs in the experiment
    # when the experiment's runs page is opened
    url = f"{tracked.url}/#/experiments/{tracked.experiment_id}/runs"
    text = open_and_wait(mlflow_ui, url, ("matching runs", *tracked.run_names), _shot(tracked, "experiment"))
    # then both readable run names are listed
    assert all(name in text for name in tracked.run_names)


def test_a_ferflow_link_opens_the_experiment_on_its_training_runs(
    tracked: TrackedRuns, mlflow_ui: Any
) -> None:
    # given the experiment link as ferflow prints it (the model-training view selected)
    url = f"{tracked.url}/#/experiments/{tracked.experiment_id}?{ML_VIEW}"
    # when it is opened
    text = open_and_wait(
        mlflow_ui, url, ("matching runs", *tracked.run_names), _shot(tracked, "experiment-link")
    )
    # then it lands on the runs table, not on the GenAI overview of traces
    assert "/runs" in mlflow_ui.current_url
    assert "Token Usage" not in text


def test_the_model_training_switch_makes_the_experiment_open_on_its_runs(
    tracked: TrackedRuns, mlflow_ui: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # given a browser that never chose a view (MLflow's default is GenAI)
    mlflow_ui.get(f"{tracked.url}/")
    mlflow_ui.execute_script(f"window.localStorage.removeItem('{WORKFLOW_TYPE_KEY}');")
    mlflow_ui.refresh()
    # when the sidebar's "Model training" switch is clicked once
    switch = WebDriverWait(mlflow_ui, RENDER_TIMEOUT_S, poll_frequency=0.5).until(
        lambda d: d.find_element(By.XPATH, "//*[normalize-space(text())='Model training']")
    )
    switch.click()
    WebDriverWait(mlflow_ui, RENDER_TIMEOUT_S).until(
        lambda d: (
            d.execute_script(f"return window.localStorage.getItem('{WORKFLOW_TYPE_KEY}')")
            == '"machine_learning"'
        )
    )
    # then the plain experiment link (what clicking the experiment opens) shows the runs table
    url = f"{tracked.url}/#/experiments/{tracked.experiment_id}"
    open_and_wait(
        mlflow_ui, url, ("matching runs", *tracked.run_names), _shot(tracked, "experiment-after-switch")
    )
    assert "/runs" in mlflow_ui.current_url


def _image_keys_shown(driver: Any) -> dict[str, bool]:
    """Each run-page image key -> whether its <img> is on the page and has loaded."""
    from ferflow.stages.evaluation import RUN_PAGE_IMAGES

    loaded = driver.execute_script(
        "return [...document.images].filter((i) => i.complete && i.naturalWidth > 0).map((i) => i.src)"
    )
    # MLflow stores the image of key "a/b" as images/a~b+step+<n>+...; src is URL-encoded
    return {
        key: any(f"images%2F{key.replace('/', '~')}%2Bstep" in src for src in loaded)
        for key in RUN_PAGE_IMAGES.values()
    }


def test_the_run_page_shows_the_curves_and_confusion_matrices(tracked: TrackedRuns, mlflow_ui: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from ferflow.stages.evaluation import RUN_PAGE_IMAGES

    # given the champion's parent run, evaluated
    run_id = tracked.run_ids[0]
    url = f"{tracked.url}/#/experiments/{tracked.experiment_id}/runs/{run_id}/model-metrics?{ML_VIEW}"
    # when its "Model metrics" tab is opened
    open_and_wait(mlflow_ui, url, tuple(RUN_PAGE_IMAGES.values()), _shot(tracked, "run-model-metrics"))
    # then every curve and confusion matrix is an image that has loaded
    WebDriverWait(mlflow_ui, RENDER_TIMEOUT_S, poll_frequency=0.5).until(
        lambda d: all(_image_keys_shown(d).values())
    )
    # (pictures of each image, scrolled into view inside its card, for a person to look at)
    for image in mlflow_ui.find_elements(By.XPATH, "//img[contains(@src, 'images%2F')]"):
        mlflow_ui.execute_script("arguments[0].scrollIntoView({block: 'center'})", image)
        key = re.search(r"images%2F([^%]+)", image.get_attribute("src"))
        name = key.group(1).replace("~", "-") if key else "unknown"
        image.screenshot(str(SCREENSHOTS / f"{_shot(tracked, 'run-image')}-{name}.png"))


def test_the_run_page_has_no_chart_per_class(tracked: TrackedRuns, mlflow_ui: Any) -> None:
    # given an evaluated parent run
    run_id = tracked.run_ids[0]
    url = f"{tracked.url}/#/experiments/{tracked.experiment_id}/runs/{run_id}/model-metrics?{ML_VIEW}"
    # when its "Model metrics" tab is opened
    # (MLflow 3.17 puts the image sections, confusion/ and curves/, above the metric charts,
    # so test.* is below the fold: wait for the page, then read the whole scrolling box as
    # a person would, since charts render as they scroll into view)
    text = open_and_wait(mlflow_ui, url, ("Model metrics", "curves/accuracy"), _shot(tracked, "run-charts"))
    text += text_seen_while_scrolling(mlflow_ui, "curves/accuracy", boxes="div")
    # then the headline test metrics have charts and no per-class metric has one
    assert all(metric in text for metric in ("test.accuracy", "test.macro_f1", "test.macro_auc"))
    assert not [line for line in text.splitlines() if line.startswith(PER_CLASS_PREFIXES)]
    # the section title reads "Model metrics (<number of charts>)"
    count = re.search(r"Model metrics\s*\((\d+)\)", text)
    assert count is not None and int(count.group(1)) <= 16, f"metric charts: {count}"


def test_the_per_class_metrics_are_one_table_under_artifacts(tracked: TrackedRuns, mlflow_ui: Any) -> None:
    from ferflow.files import PER_CLASS_ARTIFACT

    # given an evaluated parent run
    run_id = tracked.run_ids[0]
    # when its per-class table artifact is opened
    url = f"{tracked.url}/#/experiments/{tracked.experiment_id}/runs/{run_id}/artifacts/{PER_CLASS_ARTIFACT}"
    classes = small_params().base.classes
    text = open_and_wait(
        mlflow_ui, url, ("precision", "recall", *classes), _shot(tracked, "run-per-class-table")
    )
    # then it is shown as a table (a line per cell, not the raw JSON): the columns, a row per class
    lines = set(text.splitlines())
    assert {"class", "precision", "recall", "f1", "auc", "support"} <= lines
    assert set(classes) <= lines


def test_compare_view_shows_the_runs_side_by_side_with_metrics(tracked: TrackedRuns, mlflow_ui: Any) -> None:
    from selenium.webdriver.common.by import By

    # given the two runs
    runs = json.dumps(list(tracked.run_ids), separators=(",", ":"))
    url = f"{tracked.url}/#/compare-runs?runs={runs}&experiments={json.dumps([tracked.experiment_id])}"
    # when their compare view is opened
    open_and_wait(
        mlflow_ui,
        url,
        ("Comparing 2 Runs", *tracked.run_names, FIRST_SUMMARY_METRIC),
        _shot(tracked, "compare-runs"),
    )
    text = text_seen_while_scrolling(mlflow_ui, FIRST_SUMMARY_METRIC)
    # then the run names are side by side (same height, different columns), the metric names shown
    cells = [
        mlflow_ui.find_element(By.XPATH, f"//*[normalize-space(text())='{name}']")
        for name in tracked.run_names
    ]
    (a, b) = (cell.rect for cell in cells)
    assert abs(a["y"] - b["y"]) < 5 and abs(a["x"] - b["x"]) > 100, f"run names not side by side: {a} {b}"
    assert all(metric in text for metric in SHOWN_METRICS)


def test_compare_view_diff_only_shows_the_one_changed_param(tracked: TrackedRuns, mlflow_ui: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # given the compare view of two runs that differ only in train.learning_rate
    runs = json.dumps(list(tracked.run_ids), separators=(",", ":"))
    url = f"{tracked.url}/#/compare-runs?runs={runs}&experiments={json.dumps([tracked.experiment_id])}"
    open_and_wait(
        mlflow_ui, url, ("Comparing 2 Runs", "base.seed"), _shot(tracked, "compare-runs-all-params")
    )
    # when the Parameters section's "Show diff only" switch (the first switch) is turned on
    mlflow_ui.find_elements(By.XPATH, "//*[@role='switch']")[0].click()
    WebDriverWait(mlflow_ui, RENDER_TIMEOUT_S).until(lambda d: "base.seed" not in _page_text(d))
    time.sleep(1.0)
    mlflow_ui.save_screenshot(str(SCREENSHOTS / f"{_shot(tracked, 'compare-runs-diff')}.png"))
    # then train.learning_rate is the only param left
    assert "train.learning_rate" in _page_text(mlflow_ui)


def test_registered_model_page_shows_champion_and_gate_decision(tracked: TrackedRuns, mlflow_ui: Any) -> None:
    # given a registered model whose versions have aliases and gate decisions
    # when its page is opened
    url = f"{tracked.url}/#/models/{MODEL_NAME}"
    text = open_and_wait(
        mlflow_ui, url, ("Versions", "champion", "challenger", *tracked.decisions), _shot(tracked, "model")
    )
    # then the champion alias and each version's gate decision are visible
    assert "champion" in text
    assert all(decision in text for decision in tracked.decisions)


def test_champion_version_page_shows_gate_decision_and_description(
    tracked: TrackedRuns, mlflow_ui: Any
) -> None:
    # given the champion version, tagged with its gate decision and described by the registry
    # when its version page is opened
    url = f"{tracked.url}/#/models/{MODEL_NAME}/versions/{tracked.champion_version}"
    text = open_and_wait(
        mlflow_ui,
        url,
        (f"Version {tracked.champion_version}", "champion", "ferflow.gate.decision"),
        _shot(tracked, "champion-version"),
    )
    # then the alias, the decision tag with its value, the source run and a description show
    assert "promoted" in text
    assert tracked.champion_run_name in text
    assert "No description" not in text


# --- Great Expectations Data Docs ------------------------------------------------------


@pytest.fixture(scope="module")
def failed_validation(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A validation of synthetic faces that fails exactly the row-count expectation."""
    _require_browser()
    from ferflow import stages
    from ferflow.commands.data import synthesize

    root = tmp_path_factory.mktemp("validation")
    # Far more training rows than the synthetic set has: the `row_count` check must fail.
    params = small_params("validate.min_rows={train: 100000, val: 1, test: 1}")
    paths = stages.Layout.from_params(params, root).with_raw(root / "raw")
    synthesize(params, paths.raw)
    stages.ingest(params, paths)
    return stages.validate(params, paths)


def test_data_docs_show_the_failing_expectation(failed_validation: Any, browser: Any) -> None:
    # given a validation whose row_count check (rows >= min_rows on the splits table) failed
    assert [c.id for c in failed_validation.checks if c.failed] == ["row_count"]
    index = failed_validation.data_docs_index
    assert index is not None and index.exists()
    open_and_wait(browser, index.as_uri(), ("Data Docs", "Validation Results"), "data-docs-index")
    # the splits validation page, found on disk (the index links it too)
    (page,) = index.parent.glob("validations/*_splits/**/*.html")
    # when that validation result page is opened
    text = open_and_wait(
        browser, page.as_uri(), ("Status: Failed", "min_rows"), "data-docs-failed-validation"
    )
    # then it shows one unsuccessful expectation, rows >= min_rows, with the offending value
    assert "Values in rows must always be greater than or equal to those in min_rows" in text
    assert re.search(r"Unsuccessful Expectations\s+1\b", text)
    assert "1 unexpected values found" in text
