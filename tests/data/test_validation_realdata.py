"""The data contract on the real FER2013 zip (skipped unless FERFLOW_FER2013_ZIP is set).

The zip is ingested and validated once for this module (about a minute on 2 shared
cores); the report lists every example (`validate.max_examples` raised) so each reported
duplicate can be checked against the pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ferflow.contract.validation import validate_dataset
from ferflow.data.dataset import load_prepared
from ferflow.data.ingest import ingest
from tests.conftest import small_params

pytestmark = pytest.mark.realdata

ALL_EXAMPLES = "validate.max_examples=100000"


@pytest.fixture(scope="module")
def real(fer2013_zip: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("fer2013_contract")
    params = small_params(ALL_EXAMPLES)
    ingest(fer2013_zip, work / "prepared", params)
    report = validate_dataset(work / "prepared", params, work / "reports")
    prepared = load_prepared(work / "prepared")
    row_of = {source: row for row, source in enumerate(prepared.manifest["source"])}
    return report, prepared, row_of


def test_default_policy_passes_real_fer2013_with_warnings_only(real):
    report, _, _ = real

    assert report.passed, report.failure_message()
    assert {"cross_split_duplicates", "conflicting_labels", "blank_images"} <= {c.id for c in report.warnings}


def test_every_reported_cross_split_copy_has_identical_pixels(real):
    report, prepared, row_of = real
    check = report.check("cross_split_duplicates")

    pairs = [example.split(" = ") for example in check.examples]

    assert check.observed["copies_of_train"] == len(pairs) > 0
    assert check.observed["per_split"].get("test", 0) > 0
    for copy, original in pairs:
        assert np.array_equal(prepared.images[row_of[copy]], prepared.images[row_of[original]])
        assert (
            prepared.manifest.loc[row_of[copy], "split"] != prepared.manifest.loc[row_of[original], "split"]
        )


def test_every_conflicting_group_has_identical_pixels_and_two_labels(real):
    report, prepared, row_of = real
    check = report.check("conflicting_labels")

    assert check.observed["groups"] == len(check.examples) > 0
    for group in check.examples:
        members = [m.rsplit(" (", 1) for m in group.removesuffix(" ...").split(" = ")]
        rows = [row_of[source] for source, _ in members]
        assert all(np.array_equal(prepared.images[rows[0]], prepared.images[r]) for r in rows)
        manifest = prepared.manifest
        whole_group = manifest[manifest["sha256"] == manifest.loc[rows[0], "sha256"]]
        assert whole_group["label"].nunique() >= 2


def test_reported_blank_images_are_near_constant(real):
    report, prepared, row_of = real
    check = report.check("blank_images")

    stds = [prepared.images[row_of[source]].std() for source in check.examples]

    assert check.observed["blank"] == len(check.examples) > 0
    assert max(stds) < small_params().validation.blank_std_threshold
