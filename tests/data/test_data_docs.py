"""The Data Docs a person opens: offline, the same verdict as ferflow, and what was found.

One synthetic dataset with a test image that copies a train image is ingested once and
validated twice: with the default severity (cross_split_duplicates is a warning: the
contract passes with warnings) and with `validate.leakage=error` (the same copy fails
it). The index and Great Expectations' pages are read as a browser without network
would: no remote script, stylesheet or image may be referenced.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ferflow.contract.checks import CHECK_IDS
from ferflow.contract.data_docs import render_index
from ferflow.contract.report import CheckResult, ValidationReport
from ferflow.contract.validation import validate_dataset
from ferflow.data.ingest import ingest
from tests.conftest import small_params
from tests.data.test_validation_pipeline import synthetic_folder

# an attribute that makes a browser fetch something: <script src>, <link href>, <img src>, ...
REMOTE_ASSET = re.compile(
    r"<(script|link|img|iframe|source|embed)\b[^>]*\b(src|href)\s*=\s*[\"']?\s*(https?:)?//", re.I
)
REMOTE_CSS = re.compile(r"url\(\s*[\"']?\s*(https?:)?//|@import", re.I)


class Rows(HTMLParser):
    """Text of each cell of each table row that has an id, keyed by that id."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self._row: str | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        row_id = dict(attrs).get("id")
        if tag == "tr" and row_id:
            self._row, self.rows[row_id] = row_id, []
        elif tag == "td" and self._row:
            self.rows[self._row].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row and self.rows[self._row]:
            self.rows[self._row][-1] += data


def check_rows(page: str) -> dict[str, list[str]]:
    """check id -> [id, severity, status, rule, observed, examples], whitespace collapsed."""
    parser = Rows()
    parser.feed(page)
    return {
        key.removeprefix("check-"): [" ".join(cell.split()) for cell in cells]
        for key, cells in parser.rows.items()
        if key.startswith("check-")
    }


def visible_text(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def validation_page(docs: Path, table: str) -> str:
    (page,) = (docs / "validations").glob(f"ferflow_contract_{table}/**/*.html")
    return page.read_text()


@pytest.fixture(scope="module")
def leaked(tmp_path_factory):
    """A prepared dataset whose test/happy/copy.jpg copies a train image; (dir, copy, original)."""
    work = tmp_path_factory.mktemp("leaked")
    raw = synthetic_folder(work / "raw")
    original = sorted((raw / "train" / "happy").glob("*.jpg"))[0]
    copy = Path(shutil.copyfile(original, raw / "test" / "happy" / "copy.jpg"))
    ingest(raw, work / "prepared", small_params(), workers=1)
    return work, copy.relative_to(raw).as_posix(), original.relative_to(raw).as_posix()


@pytest.fixture(scope="module")
def warned(leaked):
    work, *_ = leaked
    return validate_dataset(work / "prepared", small_params(), work / "reports-warn")


@pytest.fixture(scope="module")
def failed(leaked):
    work, *_ = leaked
    return validate_dataset(work / "prepared", small_params("validate.leakage=error"), work / "reports-error")


@pytest.mark.parametrize("name", ["warned", "failed"])
def test_data_docs_reference_nothing_remote(name, request):
    report = request.getfixturevalue(name)
    docs = report.data_docs_index.parent
    pages = sorted(docs.rglob("*.html"))

    assert report.data_docs_index in pages
    assert len(pages) >= 1 + 4 + 4  # the index, then a validation and a suite page per table
    for page in pages:
        text = page.read_text()
        assert not REMOTE_ASSET.search(text), f"{page}: {REMOTE_ASSET.search(text)}"
        assert not REMOTE_CSS.search(text), page
        assert "<style>" in text, f"{page} is unstyled offline"


def test_index_links_resolve_to_files_in_the_docs_folder(warned):
    index = warned.data_docs_index
    links = re.findall(r'href="([^"#]+)"', index.read_text())

    assert links
    for link in links:
        assert (index.parent / html.unescape(link)).resolve().is_file(), link


def test_index_lists_every_check_with_the_status_of_validation_json(warned):
    rows = check_rows(warned.data_docs_index.read_text())
    saved = json.loads(warned.report_path.read_text())

    assert list(rows) == list(CHECK_IDS)
    assert saved["verdict"] == "passed with warnings"
    for check in saved["checks"]:
        assert rows[check["id"]][1:3] == [check["severity"], check["status"]], check["id"]


def test_copied_test_image_is_a_warning_that_names_both_files(warned, leaked):
    _, copy, original = leaked
    index = warned.data_docs_index.read_text()
    row = check_rows(index)["cross_split_duplicates"]

    assert warned.passed
    assert row[2] == "warning"
    assert f"{copy} = {original}" in row[5]
    assert "data contract passed with warnings" in visible_text(index)
    assert '"copies_of_train": 1' in html.unescape(row[4])


def test_suite_with_only_warnings_says_passed_with_warnings_not_failed(warned, leaked):
    _, copy, original = leaked
    page = visible_text(validation_page(warned.data_docs_index.parent, "images"))

    assert "Status: Passed with warnings" in page
    assert "Status: Failed" not in page
    assert "ferflow check cross_split_duplicates (warning) found:" in page
    assert f"{copy} = {original}" in page


def test_index_suite_rows_carry_the_suite_verdict(warned):
    text = visible_text(warned.data_docs_index.read_text())

    assert "Validation Results" in text
    assert "ferflow_contract_images images passed with warnings" in text
    assert "ferflow_contract_splits splits passed" in text


def test_error_level_copy_fails_on_the_index_and_the_suite_page(failed, leaked):
    _, copy, original = leaked
    index = failed.data_docs_index.read_text()
    row = check_rows(index)["cross_split_duplicates"]
    page = visible_text(validation_page(failed.data_docs_index.parent, "images"))

    assert not failed.passed
    assert row[1:3] == ["error", "failed"]
    assert f"{copy} = {original}" in row[5]
    assert "data contract failed" in visible_text(index)
    assert "Status: Failed" in page
    assert "ferflow check cross_split_duplicates (error) found:" in page


def test_passing_suite_page_says_passed(failed):
    page = visible_text(validation_page(failed.data_docs_index.parent, "splits"))

    assert "Status: Passed" in page
    assert "Status: Passed with warnings" not in page


# --- the index alone (no Great Expectations) --------------------------------------------


def test_index_escapes_file_names_and_shows_every_status(tmp_path):
    checks = [
        CheckResult("decoded", "every file decoded", "error", False, {"rejected": 1}, ["a<b>.jpg (bad)"]),
        CheckResult("blank_images", "no blank images", "warning", False, {"blank": 1}, ["x.jpg"]),
        CheckResult("image_mode", "grayscale", "warning", True, {"not_grayscale": 0}),
        CheckResult("class_drift", "drift", "off", True, "off"),
    ]
    report = ValidationReport(data_dir=tmp_path, checks=checks, profile={})

    page = render_index(report, [], tmp_path)
    rows = check_rows(page)

    assert report.verdict == "failed"
    assert {k: v[2] for k, v in rows.items()} == {
        "decoded": "failed",
        "blank_images": "warning",
        "image_mode": "passed",
        "class_drift": "off",
    }
    assert "a&lt;b&gt;.jpg (bad)" in page
    assert "<b>" not in page
