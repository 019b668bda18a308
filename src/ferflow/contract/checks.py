"""The checks of the data contract: their ids, what they mean, and their default severity.

Severities come from `validate.severity` in params.yaml (check id -> error | warning | off);
a check not named there gets the default below. The defaults let the real FER2013 through
with warnings (it has exact and conflicting-label duplicates, train/test copies and a few
blank images) and stop on real corruption.
"""

from __future__ import annotations

from dataclasses import dataclass

from ferflow.config import Params
from ferflow.contract.report import Severity
from ferflow.errors import FerflowError


class UnknownCheckError(FerflowError, ValueError):
    """validate.severity names a check that does not exist."""


@dataclass(frozen=True)
class Check:
    id: str
    description: str
    default: Severity


CHECKS: tuple[Check, ...] = (
    Check("decoded", "every file decoded (rejected.csv is empty)", "error"),
    Check("image_size", "original width and height equal base.image_size", "warning"),
    Check("image_mode", "original images are 8-bit grayscale (PIL mode L)", "warning"),
    Check("label_set", "the labels are exactly base.classes", "error"),
    Check("every_class_in_split", "every split has every class", "error"),
    Check("min_class_count", "each class has validate.min_class_count images per split", "warning"),
    Check("row_count", "rows per split within validate.min_rows and validate.max_rows", "error"),
    Check("blank_images", "no blank images (pixel std < validate.blank_std_threshold)", "warning"),
    Check("blank_share", "blank images per split at most validate.max_blank_share", "error"),
    Check("duplicates_within_split", "no exact duplicate images within a split", "warning"),
    Check(
        "cross_split_duplicates", "no val/test image is an exact copy of a train (or val) image", "warning"
    ),
    Check("conflicting_labels", "identical images carry a single label", "warning"),
    Check("near_duplicates", "no val/test image is a near copy (pHash) of a train (or val) image", "warning"),
    Check("class_drift", "class shares within validate.max_drift of the reference profile", "error"),
)
CHECK_IDS = tuple(c.id for c in CHECKS)
DESCRIPTIONS = {c.id: c.description for c in CHECKS}


def severities(params: Params) -> dict[str, Severity]:
    """Severity of every check: params first, then defaults that follow ingest's policy."""
    unknown = sorted(set(params.validation.severity) - set(CHECK_IDS))
    if unknown:
        raise UnknownCheckError(
            f"validate.severity names unknown check(s) {unknown}; valid ids: {list(CHECK_IDS)}"
        )
    result: dict[str, Severity] = {c.id: c.default for c in CHECKS}
    if params.validation.leakage == "error":
        # Copies of train images in val/test break the contract (validate.leakage).
        result["cross_split_duplicates"] = "error"
        result["near_duplicates"] = "error"
    if params.ingest.non_canonical == "reject":
        # The user asked for canonical originals only: a converted image breaks the contract.
        result["image_size"] = "error"
        result["image_mode"] = "error"
    result.update(params.validation.severity)
    return result
