"""Bad inputs through the pipeline ingest -> validate: whichever stage stops names the file.

Each scenario writes a small synthetic JPEG folder, damages it one way, and runs the real
stages. One ingest + validation per scenario is shared by the tests that read its report
(Great Expectations runs take seconds each). Every scenario also checks that the raw input
is byte-for-byte unchanged afterwards.
"""

from __future__ import annotations

import hashlib
import html
import io
import itertools
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferflow.cli import main
from ferflow.contract.checks import CHECK_IDS
from ferflow.contract.validation import validate_dataset
from ferflow.data.ingest import IngestError, ingest
from ferflow.data.synth import write_synthetic_dataset
from tests.conftest import small_params


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file (and symlink target) under root: proof the input was not touched."""
    digest = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            digest[str(path)] = "link:" + str(path.readlink())
        elif path.is_file():
            digest[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def synthetic_folder(root: Path, seed: int = 5) -> Path:
    params = small_params()
    return write_synthetic_dataset(
        root,
        classes=params.base.classes,
        per_class=params.synth.per_class,
        test_per_class=params.synth.test_per_class,
        seed=seed,
    )


def save_image(path: Path, image: Image.Image, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def reencode(source: Path, target: Path, quality: int) -> Path:
    """A copy of a JPEG with other bytes (quality changed) but the same picture."""
    return save_image(target, Image.open(source).convert("L"), format="JPEG", quality=quality)


def run_pipeline(source: Path, work: Path, *overrides: str, reference: Path | None = None):
    """ingest -> validate, like the retraining flow; returns (report, input unchanged?)."""
    before = tree_digest(source)
    params = small_params(*overrides)
    ingest(source, work / "prepared", params, workers=1)
    report = validate_dataset(work / "prepared", params, work / "reports", reference)
    return report, tree_digest(source) == before


# --- a clean synthetic dataset ----------------------------------------------------------


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    work = tmp_path_factory.mktemp("clean")
    source = synthetic_folder(work / "raw")
    report, unchanged = run_pipeline(source, work)
    return work, report, unchanged


def test_clean_synthetic_data_passes(clean):
    _, report, unchanged = clean

    assert report.passed, report.failure_message()
    assert unchanged


def test_report_json_lists_every_check_with_its_fields(clean):
    work, _, _ = clean

    saved = json.loads((work / "reports" / "validation.json").read_text())

    assert [c["id"] for c in saved["checks"]] == list(CHECK_IDS)
    for check in saved["checks"]:
        assert {"id", "severity", "success", "observed", "examples"} <= set(check)


def test_accepted_dataset_saves_its_class_profile(clean):
    work, report, _ = clean

    saved = json.loads((work / "reports" / "profile.json").read_text())

    assert saved == report.profile
    assert sum(saved["splits"]["test"]["counts"].values()) == saved["splits"]["test"]["rows"]


def test_data_docs_index_is_written(clean):
    _, report, _ = clean

    assert report.data_docs_index is not None
    assert report.data_docs_index.is_file()
    assert "ferflow_contract_images" in report.data_docs_index.read_text()


def test_summary_markdown_has_a_row_per_check(clean):
    _, report, _ = clean

    table = report.summary_markdown()

    assert all(f"| {check_id} |" in table for check_id in CHECK_IDS)


# --- defects that convert or warn (defaults let them through, naming the files) -------


@pytest.fixture(scope="module")
def defects(tmp_path_factory):
    """Wrong size, RGB, RGBA, all-black, a train image copied / re-encoded into test, and
    the same picture filed under two classes (ingest converts; the contract warns)."""
    work = tmp_path_factory.mktemp("defects")
    raw = synthetic_folder(work / "raw")
    train_happy = sorted((raw / "train" / "happy").glob("*.jpg"))
    train_sad = sorted((raw / "train" / "sad").glob("*.jpg"))
    files = {
        "wrong_size": save_image(raw / "train/fear/big.jpg", Image.open(train_sad[0]).resize((60, 60))),
        "rgb": save_image(raw / "train/angry/rgb.jpg", noise((48, 48, 3))),
        "rgba": save_image(raw / "train/neutral/rgba.png", noise((48, 48, 4))),
        "black": save_image(raw / "train/angry/black.jpg", Image.new("L", (48, 48), 0)),
        "exact_copy": Path(shutil.copyfile(train_happy[0], raw / "test/happy/copy.jpg")),
        "reencoded": reencode(train_happy[1], raw / "test/happy/reencoded.jpg", quality=40),
        "conflicting": Path(shutil.copyfile(train_sad[1], raw / "train/surprise/also_sad.jpg")),
    }  # fmt: skip
    # one blank image is over 1% of a tiny split: allow 5% here, the default suits real data
    report, unchanged = run_pipeline(raw, work, "validate.max_blank_share=0.05")
    return (
        raw,
        files,
        report,
        unchanged,
        {"happy0": train_happy[0], "happy1": train_happy[1], "sad1": train_sad[1]},
    )


def noise(shape: tuple[int, ...]) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8))


def relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def test_converted_and_duplicated_images_pass_with_warnings(defects):
    _, _, report, unchanged, _ = defects

    assert report.passed, report.failure_message()
    assert {"image_size", "image_mode", "blank_images", "cross_split_duplicates"} <= {
        c.id for c in report.warnings
    }
    assert unchanged


def test_wrong_size_image_is_named(defects):
    raw, files, report, _, _ = defects

    check = report.check("image_size")

    assert not check.success
    assert f"{relative(files['wrong_size'], raw)} (60x60)" in check.examples


@pytest.mark.parametrize("kind", ["rgb", "rgba"])
def test_colour_image_is_named_with_its_mode(defects, kind):
    raw, files, report, _, _ = defects

    check = report.check("image_mode")

    assert any(e.startswith(relative(files[kind], raw)) for e in check.examples)
    assert check.observed["not_grayscale"] == 2


def test_all_black_image_is_named(defects):
    raw, files, report, _, _ = defects

    assert report.check("blank_images").examples == [relative(files["black"], raw)]


def test_exact_copy_of_train_image_in_test_is_leakage(defects):
    raw, files, report, _, originals = defects

    check = report.check("cross_split_duplicates")

    assert f"{relative(files['exact_copy'], raw)} = {relative(originals['happy0'], raw)}" in check.examples


def test_reencoded_copy_of_train_image_in_test_is_a_near_duplicate(defects):
    raw, files, report, _, originals = defects

    check = report.check("near_duplicates")

    expected = f"{relative(files['reencoded'], raw)} ~ {relative(originals['happy1'], raw)}"
    assert not check.success
    assert any(e.startswith(expected) for e in check.examples)


def test_same_picture_in_two_classes_is_a_conflict(defects):
    raw, files, report, _, originals = defects

    examples = " ".join(report.check("conflicting_labels").examples)

    assert f"{relative(files['conflicting'], raw)} (surprise)" in examples
    assert f"{relative(originals['sad1'], raw)} (sad)" in examples


def failed_columns(page: str) -> set[str]:
    """Columns whose section of a GX Data Docs validation page has a failed expectation."""
    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))
    sections = text.split(" Status Expectation Observed Value ")
    return {
        before.split()[-1]
        for before, section in itertools.pairwise(sections)
        if "unexpected values found" in section
    }


def test_data_docs_html_marks_the_failing_expectations(defects):
    _, _, report, _, _ = defects
    pages = list((report.data_docs_index.parent / "validations").rglob("*.html"))

    images_page = next(p.read_text() for p in pages if "ferflow_contract_images" in str(p))
    failed = failed_columns(images_page)

    assert {"leak_of_train", "near_duplicate_of_train", "is_blank", "conflicting_label", "mode"} <= failed
    assert "label" not in failed


def test_non_canonical_images_stop_ingest_when_rejected(defects, tmp_path):
    raw, files, _, _, _ = defects
    before = tree_digest(raw)

    with pytest.raises(IngestError) as err:
        ingest(raw, tmp_path / "prepared", small_params("ingest.non_canonical=reject"), workers=1)

    for kind in ("wrong_size", "rgb", "rgba"):
        assert relative(files[kind], raw) in str(err.value)
    assert tree_digest(raw) == before


# --- corrupt files: ingest stops, or quarantines and the contract fails -----------------


def decompression_bomb(path: Path) -> Path:
    """A few-KB PNG that decodes to 25 megapixels (over ingest.max_image_pixels)."""
    return save_image(path, Image.new("L", (5000, 5000), 0), format="PNG", optimize=True)


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory):
    work = tmp_path_factory.mktemp("corrupt")
    raw = synthetic_folder(work / "raw")
    good = sorted((raw / "train" / "happy").glob("*.jpg"))[0].read_bytes()
    outside = save_image(work / "outside.jpg", Image.new("L", (48, 48), 128))
    link = raw / "train/happy/link.jpg"
    link.symlink_to(outside)
    files = {
        "truncated": raw / "train/angry/truncated.jpg",
        "zero_byte": raw / "train/fear/empty.jpg",
        "text": raw / "test/sad/notes.jpg",
        "stray": raw / "train/README.txt",
        "bomb": decompression_bomb(raw / "train/surprise/bomb.png"),
        "symlink": link,
    }
    files["truncated"].write_bytes(good[: len(good) // 2])
    files["zero_byte"].write_bytes(b"")
    files["text"].write_text("this is not a picture\n")
    files["stray"].write_text("notes\n")
    return raw, files


@pytest.mark.parametrize("kind", ["truncated", "zero_byte", "text", "stray", "bomb", "symlink"])
def test_ingest_stops_on_a_bad_file_and_names_it(corrupt, kind, tmp_path):
    raw, files = corrupt
    before = tree_digest(raw)

    with pytest.raises(IngestError) as err:
        ingest(raw, tmp_path / "prepared", small_params(), workers=1)

    assert relative(files[kind], raw) in str(err.value)
    assert tree_digest(raw) == before


def test_quarantined_files_fail_the_contract_and_the_cli_names_them(corrupt, tmp_path, capsys, caplog):
    raw, files = corrupt
    before = tree_digest(raw)
    params_file = Path(__file__).resolve().parents[2] / "params.yaml"
    quarantine = ["--params", str(params_file), "--set", "ingest.on_bad_file=quarantine"]
    assert main(["ingest", str(raw), "--out", str(tmp_path / "prepared"), *quarantine]) == 0
    capsys.readouterr()

    status = main(
        ["validate", str(tmp_path / "prepared"), "--reports", str(tmp_path / "reports"), *quarantine]
    )

    assert status == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(message.startswith("decoded: rejected ") for message in errors), errors
    saved = json.loads((tmp_path / "reports" / "validation.json").read_text())
    decoded = next(c for c in saved["checks"] if c["id"] == "decoded")
    for path in files.values():
        assert relative(path, raw) in " ".join(decoded["examples"])
    assert tree_digest(raw) == before


def test_zip_member_escaping_the_archive_is_named(tmp_path):
    archive = tmp_path / "evil.zip"
    image = io.BytesIO()
    Image.new("L", (48, 48), 90).save(image, format="JPEG")
    with zipfile.ZipFile(archive, "w") as zf:
        for split in ("train", "test"):
            for label in small_params().base.classes:
                zf.writestr(f"{split}/{label}/a.jpg", image.getvalue())
        zf.writestr("train/happy/../../../escape.jpg", image.getvalue())
    before = hashlib.sha256(archive.read_bytes()).hexdigest()

    with pytest.raises(IngestError) as err:
        ingest(archive, tmp_path / "prepared", small_params(), workers=1)

    assert "../escape.jpg" in str(err.value)
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == before


# --- missing, empty and unknown classes; drift ------------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [("empty", "train/disgust"), ("unknown", "train/contempt")],
)
def test_empty_or_unknown_class_folder_stops_ingest(tmp_path, change, named):
    raw = synthetic_folder(tmp_path / "raw")
    if change == "empty":
        for path in (raw / "train/disgust").iterdir():
            path.unlink()
    else:
        (raw / "train/contempt").mkdir()
        shutil.copy(next((raw / "train/happy").iterdir()), raw / "train/contempt/x.jpg")
    before = tree_digest(raw)

    with pytest.raises(IngestError) as err:
        ingest(raw, tmp_path / "prepared", small_params(), workers=1)

    assert named in str(err.value)
    assert tree_digest(raw) == before


@pytest.fixture(scope="module")
def shrunk(tmp_path_factory, clean):
    """train/angry cut to 20% and test/disgust removed, validated against the clean profile."""
    clean_work, _, _ = clean
    work = tmp_path_factory.mktemp("shrunk")
    raw = synthetic_folder(work / "raw")
    angry = sorted((raw / "train" / "angry").glob("*.jpg"))
    for path in angry[len(angry) // 5 :]:
        path.unlink()
    shutil.rmtree(raw / "test" / "disgust")
    return run_pipeline(raw, work, reference=clean_work / "reports" / "profile.json")


def test_missing_class_in_a_split_stops_the_pipeline(shrunk):
    report, unchanged = shrunk

    check = report.check("every_class_in_split")

    assert not report.passed
    assert check in report.errors
    assert "test/disgust: no images" in check.examples
    assert unchanged


def test_class_cut_to_a_fifth_is_drift_with_both_shares(shrunk):
    report, _ = shrunk

    check = report.check("class_drift")

    assert check in report.errors
    assert any(e.startswith("train/angry: share 0.143 -> ") for e in check.examples)
    assert check.observed["shares"]["train"]["reference"]["angry"] == pytest.approx(1 / 7, abs=0.01)
    assert check.observed["shares"]["train"]["now"]["angry"] < 0.05


def test_cli_exits_0_on_a_passing_dataset(clean, tmp_path, capsys):
    work, _, _ = clean
    params_file = Path(__file__).resolve().parents[2] / "params.yaml"

    status = main(
        ["validate", str(work / "prepared"), "--reports", str(tmp_path), "--params", str(params_file)]
    )

    assert status == 0
    assert capsys.readouterr().out == (
        f"report: {tmp_path / 'validation.json'}\nData Docs: {tmp_path / 'data_docs' / 'index.html'}\n"
    )


def test_rejected_dataset_does_not_become_the_drift_reference(shrunk):
    report, _ = shrunk

    assert report.profile_path is None
    assert not (report.report_path.parent / "profile.json").exists()
