"""Read a FER dataset (folder, .zip or fer2013.csv) into the canonical prepared dataset.

Accepted sources:

- a folder in the download layout `train/<class>/*.jpg` and `test/<class>/*.jpg`, possibly
  inside one wrapping folder (the Kaggle zip has `fer2013/` on top);
- the same layout as a `.zip`, read in place (never extracted);
- the challenge CSV `fer2013.csv` (`emotion`, `pixels`, `Usage`);
- a folder (or zip) of `<class>/*.jpg` with no split level: every image goes to `test`
  (what evaluation on a new labelled batch needs).

`read_source` returns the canonical images and manifest without writing anything;
`ingest` writes them with `ferflow.data.dataset.write_prepared`, plus `rejected.csv`.
Rows are ordered by split (train, val, test), then by source path (or CSV line), and the
validation split is a seeded, stratified function of the pixels and labels only, so the
same input and params give byte-identical output, and a folder, its zip and a CSV of the
same pixels give the same rows.

Raw input is only ever read. Bad files are collected and reported together
(`ingest.on_bad_file: error`) or skipped and listed in `rejected.csv` (`quarantine`).

Long on purpose: the three source formats share one row order, one split function and one
bad-file policy, and keeping them side by side is what keeps their outputs identical.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import logging
import multiprocessing
import multiprocessing.pool
import os
import signal
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ferflow.config import Params
from ferflow.data.dataset import MANIFEST_COLUMNS, SPLITS, write_prepared
from ferflow.data.images import IMAGE_SUFFIXES, DecodedImage, canonical_from_pixels, decode_payload
from ferflow.data.safezip import UnsafeMember, is_junk, member_problem, read_member, total_uncompressed
from ferflow.errors import FerflowError
from ferflow.progress import bar

log = logging.getLogger(__name__)

SourceKind = Literal["folder", "zip", "csv"]
REJECTED_FILE = "rejected.csv"
SPLIT_FOLDERS = ("train", "test")
# Label order of the `emotion` column of the original challenge CSV (not alphabetical).
FER2013_CSV_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER2013_CSV_SIDE = 48
CSV_COLUMNS = ("emotion", "pixels", "Usage")
MAX_LISTED = 10  # bad files named in an error message; rejected.csv has them all
POOL_MIN_FILES = 4000  # below this, starting worker processes costs more than it saves


class IngestError(FerflowError, ValueError):
    """The source cannot be ingested; the message names the file or CSV row and the fix."""


@dataclass(frozen=True)
class Rejected:
    """A file or CSV row left out of the dataset, and why."""

    source: str
    reason: str


@dataclass(frozen=True)
class SourceDataset:
    """Everything `read_dataset` learned from a source: what `ingest` writes."""

    images: np.ndarray  # uint8 (N, S, S), same order as manifest
    manifest: pd.DataFrame  # MANIFEST_COLUMNS
    rejected: tuple[Rejected, ...]
    info: dict[str, Any]  # the dataset.json content


@dataclass(frozen=True)
class _Row:
    """One decoded image before the split assignment."""

    id: str
    source: str
    order: tuple[str, int]  # sort key inside a split: (path, 0) or ("", csv line)
    label: str
    pool: str  # "train" (to be split into train/val) or "test"
    image: DecodedImage


@dataclass(frozen=True)
class _Entry:
    """One image file of a folder or zip, with the label and pool its path gives."""

    path: str  # posix path inside the dataset, without a wrapping folder: the row id
    source: str  # posix path relative to the source root (with the wrapping folder, if any)
    label: str
    pool: str
    location: Path | zipfile.ZipInfo


# --- public API -------------------------------------------------------------------------


def read_source(
    source: str | Path, params: Params, workers: int | None = None
) -> tuple[np.ndarray, pd.DataFrame]:
    """Canonical images (N, S, S) uint8 and their manifest, without writing anything.

    A folder or zip of `<class>/*.jpg` without `train/`/`test/` gives only `test` rows:
    this is how evaluation reads a new labelled batch. See `read_dataset` for the rest.
    """
    dataset = read_dataset(source, params, workers=workers)
    return dataset.images, dataset.manifest


def ingest(
    source: str | Path, out_dir: str | Path, params: Params, workers: int | None = None
) -> SourceDataset:
    """Read `source` and write the prepared dataset (and `rejected.csv`) into `out_dir`.

    Nothing is written when the source is rejected, so a failed ingest leaves `out_dir` as
    it was.
    """
    source, out_dir = Path(source), Path(out_dir)
    if source.is_dir() and out_dir.resolve().is_relative_to(source.resolve()):
        raise IngestError(
            f"output folder {out_dir} is inside the source folder {source}; "
            "write the prepared dataset somewhere else (raw data is never modified)"
        )
    dataset = read_dataset(source, params, workers=workers)
    write_prepared(out_dir, dataset.images, dataset.manifest, dataset.info)
    _write_rejected(out_dir / REJECTED_FILE, dataset.rejected)
    counts = dataset.info["counts"]
    log.info(
        "ingested %d images from %s into %s: train %d, val %d, test %d",
        len(dataset.images),
        source,
        out_dir,
        *(sum(counts[split].values()) for split in SPLITS),
    )
    return dataset


def read_dataset(source: str | Path, params: Params, workers: int | None = None) -> SourceDataset:
    """Read, validate, decode and split `source`; raise `IngestError` on bad input.

    Args:
        source: a folder, a .zip or a fer2013.csv.
        params: uses `base` (classes, image_size, seed) and `ingest`.
        workers: decoding processes; None picks 2 for large folders/zips, 1 otherwise.
    """
    source = Path(source)
    kind = source_kind(source)
    if kind == "csv":
        rows, rejected = _read_csv(source, params)
        layout = "csv"
    else:
        rows, rejected, layout = _read_images(source, kind, params, workers)
    rejected = sorted(rejected, key=lambda r: r.source)
    _apply_bad_file_policy(source, rejected, params.ingest.on_bad_file)
    if not rows:
        raise IngestError(f"{source}: no usable images found; check the folder layout")
    _log_conversions(rows, params.base.image_size)
    images, manifest = _build_manifest(rows, params)
    info = _dataset_info(source, kind, layout, manifest, rejected, params)
    return SourceDataset(images, manifest, tuple(rejected), info)


def source_kind(source: Path) -> SourceKind:
    """'folder', 'zip' or 'csv', or an `IngestError` saying what is accepted."""
    if not source.exists():
        raise IngestError(f"source {source} does not exist; give a folder, a .zip or fer2013.csv")
    if source.is_dir():
        return "folder"
    if source.suffix.lower() == ".csv":
        return "csv"
    if source.suffix.lower() == ".zip":
        if not zipfile.is_zipfile(source):
            raise IngestError(f"{source} is named .zip but is not a zip archive (corrupt download?)")
        return "zip"
    raise IngestError(
        f"source {source} is neither a folder, a .zip nor a .csv; give the FER download folder, "
        "its zip, or fer2013.csv"
    )


def assign_validation(
    labels: np.ndarray,
    sha256: list[str],
    val_fraction: float,
    seed: int,
    group_duplicates: bool,
) -> np.ndarray:
    """Which rows of the train pool go to `val`: a seeded, stratified split.

    With `group_duplicates`, rows with the same pixels form one group that goes to one side,
    so a validation image never has an exact copy in train. A group counts toward the
    stratum of its most common label. Groups are keyed by their sha256 and sorted, so the
    result does not depend on the row order of the source.

    Returns a boolean mask over the rows (True = val).
    """
    keys: list[str | int] = list(sha256) if group_duplicates else list(range(len(labels)))
    members: dict[str | int, list[int]] = defaultdict(list)
    for row, key in enumerate(keys):
        members[key].append(row)
    strata: dict[int, list[str | int]] = defaultdict(list)
    for key, rows in members.items():
        label_counts = Counter(int(labels[row]) for row in rows)
        # Most common label; ties go to the lowest index so the choice is deterministic.
        stratum = min(label_counts, key=lambda label: (-label_counts[label], label))
        strata[stratum].append(key)

    is_val = np.zeros(len(labels), dtype=bool)
    for stratum, group_keys in sorted(strata.items()):
        group_keys.sort(key=str)
        rng = np.random.default_rng([seed, stratum])  # one stream per class: stable if others change
        target = round(val_fraction * sum(len(members[key]) for key in group_keys))
        taken = 0
        for position in rng.permutation(len(group_keys)):
            rows = members[group_keys[position]]
            if taken + len(rows) <= target:
                is_val[rows] = True
                taken += len(rows)
            if taken == target:
                break
    return is_val


# --- folders and zips -------------------------------------------------------------------


def _read_images(
    source: Path, kind: SourceKind, params: Params, workers: int | None
) -> tuple[list[_Row], list[Rejected], str]:
    """Decoded rows, rejected files and the layout ('splits' or 'classes') of a folder or zip."""
    archive = zipfile.ZipFile(source) if kind == "zip" else None
    files: dict[str, Any]
    try:
        if archive is not None:
            files, dirs, rejected = _list_zip(source, archive, params.ingest.max_zip_bytes)
        else:
            files, dirs, rejected = _list_folder(source)
        entries, layout, stray = _classify(source, files, dirs, params.base.classes)
        rejected += stray
        payloads = (_read_payload(entry, archive, params.ingest.max_file_bytes) for entry in entries)
        decoded = _decode_all(payloads, len(entries), params, workers, str(source))
    finally:
        if archive is not None:
            archive.close()
    rows = []
    size = params.base.image_size
    for entry, result in zip(entries, decoded, strict=True):
        if isinstance(result, str):
            rejected.append(Rejected(entry.source, result))
        elif result.converted and params.ingest.non_canonical == "reject":
            rejected.append(Rejected(entry.source, _not_canonical(result, size)))
        else:
            rows.append(_Row(entry.path, entry.source, (entry.path, 0), entry.label, entry.pool, result))
    return rows, rejected, layout


def _list_folder(root: Path) -> tuple[dict[str, Path], set[str], list[Rejected]]:
    """Files (relative posix path -> path), folders, and symlinks that may not be followed."""
    real_root = root.resolve()
    files: dict[str, Path] = {}
    dirs: set[str] = set()
    rejected: list[Rejected] = []
    for dirpath, dirnames, filenames in os.walk(root):  # does not follow symlinked folders
        here = Path(dirpath)
        for name in sorted(dirnames):
            relative = (here / name).relative_to(root).as_posix()
            if is_junk(relative):
                log.debug("skipping hidden folder %s", relative)
                dirnames.remove(name)
            elif not _is_text(relative):
                rejected.append(Rejected(_printable(relative), NOT_UTF8 + " (folder not read)"))
                dirnames.remove(name)
            elif (here / name).is_symlink():
                rejected.append(Rejected(relative, "symlinked folder (not followed); copy the files in"))
            else:
                dirs.add(relative)
        for name in filenames:
            path = here / name
            relative = path.relative_to(root).as_posix()
            if is_junk(relative):
                log.debug("skipping hidden file %s", relative)
            elif not _is_text(relative):
                rejected.append(Rejected(_printable(relative), NOT_UTF8))
            elif path.is_symlink() and not path.resolve().is_relative_to(real_root):
                rejected.append(
                    Rejected(relative, f"symlink pointing outside the dataset folder (to {path.resolve()})")
                )
            else:
                files[relative] = path
    return files, dirs, rejected


# A file name with bytes that are not UTF-8 cannot go into manifest.csv nor be printed.
NOT_UTF8 = "file name is not UTF-8 text (shown with \\x escapes); rename it"


def _is_text(name: str) -> bool:
    """False for a name holding bytes that are not UTF-8 (Python keeps them as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _list_zip(
    source: Path, archive: zipfile.ZipFile, max_zip_bytes: int
) -> tuple[dict[str, zipfile.ZipInfo], set[str], list[Rejected]]:
    """Members (name -> info), folders, and members that are unsafe to use."""
    infos = archive.infolist()
    total = total_uncompressed(infos)
    if total > max_zip_bytes:
        raise IngestError(
            f"{source}: {total} bytes uncompressed exceeds ingest.max_zip_bytes={max_zip_bytes}; "
            "raise the bound if this archive is trusted"
        )
    files: dict[str, zipfile.ZipInfo] = {}
    dirs: set[str] = set()
    rejected: list[Rejected] = []
    for info in infos:
        problem = member_problem(info)
        if problem:
            rejected.append(Rejected(info.filename, problem))
        elif is_junk(info.filename):
            log.debug("skipping hidden zip member %s", info.filename)
        elif info.is_dir():
            dirs.add(info.filename.rstrip("/"))
        else:
            files[info.filename] = info
            # Zips often omit folder entries: the folders are implied by the paths.
            dirs.update(_parent_folders(info.filename))
    return files, dirs, rejected


def _parent_folders(path: str) -> Iterator[str]:
    """'a/b/c.jpg' -> 'a', 'a/b' (string work: pathlib is slow for 30,000 members)."""
    parts = path.split("/")[:-1]
    for end in range(1, len(parts) + 1):
        yield "/".join(parts[:end])


def _classify(
    source: Path, files: dict[str, Any], dirs: set[str], classes: tuple[str, ...]
) -> tuple[list[_Entry], str, list[Rejected]]:
    """Check the folder layout and give each image file its label and pool.

    Structural problems (unknown or empty class folders, a missing split) stop at once:
    they mean the source is not a FER dataset, not that one file is bad.
    """
    prefix = _wrapper_prefix(files, dirs, classes)
    files = {path.removeprefix(prefix): where for path, where in files.items()}
    dirs = {d.removeprefix(prefix) for d in dirs if d.startswith(prefix) and d != prefix.rstrip("/")}
    tops = {d.split("/")[0] for d in dirs}
    if tops & set(SPLIT_FOLDERS):
        layout, depth = "splits", 3
        _check_split_folders(source, tops)
    elif tops and tops <= set(classes):
        layout, depth = "classes", 2
    elif tops & set(classes):
        raise IngestError(
            f"{source}: unknown class folder(s) {sorted(tops - set(classes))}; expected only "
            f"{', '.join(classes)} (base.classes); rename or remove them"
        )
    else:
        raise IngestError(
            f"{source}: cannot tell the layout; expected folders train/ and test/ holding class "
            f"folders, or class folders {', '.join(classes)}; found folders {sorted(tops) or 'none'}"
        )
    class_dirs = {d for d in dirs if d.count("/") == depth - 2}
    _check_class_folders(source, class_dirs, classes, files)

    entries: list[_Entry] = []
    rejected: list[Rejected] = []
    for path in sorted(files):
        parts = path.split("/")
        shown = prefix + path
        if len(parts) != depth:
            where = "train/<class>/ or test/<class>/" if depth == 3 else "a class folder"
            rejected.append(Rejected(shown, f"stray file: not directly inside {where}"))
        elif Path(path).suffix.lower() not in IMAGE_SUFFIXES:
            rejected.append(Rejected(shown, "not an image file (by its suffix); move it out of the dataset"))
        else:
            pool = parts[0] if depth == 3 else "test"
            entries.append(_Entry(path, shown, parts[-2], pool, files[path]))
    return entries, layout, rejected


def _wrapper_prefix(files: dict[str, Any], dirs: set[str], classes: tuple[str, ...]) -> str:
    """'fer2013/' when everything sits inside one folder that is neither a split nor a class."""
    tops = {path.split("/")[0] for path in [*files, *dirs]}
    if len(tops) != 1 or any("/" not in path for path in files):
        return ""
    (top,) = tops
    return "" if top in SPLIT_FOLDERS or top in classes else f"{top}/"


def _check_split_folders(source: Path, tops: set[str]) -> None:
    unknown = sorted(tops - set(SPLIT_FOLDERS))
    if unknown:
        raise IngestError(
            f"{source}: unknown folder(s) {unknown} next to train/ and test/; "
            "expected only train/ and test/ (move the others out)"
        )
    missing = [split for split in SPLIT_FOLDERS if split not in tops]
    if missing:
        raise IngestError(
            f"{source}: missing split folder {missing[0]}/; the download layout has both train/ and test/"
        )


def _check_class_folders(
    source: Path, class_dirs: set[str], classes: tuple[str, ...], files: dict[str, Any]
) -> None:
    unknown = sorted(d for d in class_dirs if d.split("/")[-1] not in classes)
    if unknown:
        raise IngestError(
            f"{source}: unknown class folder(s) {unknown}; expected only {', '.join(classes)} "
            "(base.classes); rename or remove them"
        )
    parents = {d.rpartition("/")[0] for d in class_dirs}
    for parent in sorted(parents):
        present = {d.split("/")[-1] for d in class_dirs if d.rpartition("/")[0] == parent}
        missing = [name for name in classes if name not in present]
        if missing:
            log.warning("%s: no class folder for %s in %s/", source, ", ".join(missing), parent or ".")
    for folder in sorted(class_dirs):
        if not any(path.startswith(folder + "/") for path in files):
            raise IngestError(
                f"{source}: class folder {folder}/ is empty; add its images or remove the folder"
            )


def _read_payload(entry: _Entry, archive: zipfile.ZipFile | None, max_bytes: int) -> bytes | str:
    """The file's bytes, or the reason they cannot be read."""
    if isinstance(entry.location, zipfile.ZipInfo):
        assert archive is not None
        try:
            return read_member(archive, entry.location, max_bytes)
        except UnsafeMember as err:
            return str(err)
    try:
        size = entry.location.stat().st_size
        if size > max_bytes:
            return f"{size} bytes exceeds ingest.max_file_bytes={max_bytes}"
        return entry.location.read_bytes()
    except OSError as err:
        return f"cannot read the file: {err.strerror or err}"


def _decode_all(
    payloads: Iterable[bytes | str], total: int, params: Params, workers: int | None, label: str
) -> list[DecodedImage | str]:
    """Decode every payload, in order; in 2 processes when there are many."""
    decode = functools.partial(
        decode_payload, size=params.base.image_size, max_pixels=params.ingest.max_image_pixels
    )
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if total >= POOL_MIN_FILES else 1
    progress = functools.partial(bar, total=total, desc=f"ingest {label}", unit="img")
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return list(progress(map(decode, payloads)))
    with decoding_pool(workers) as pool:
        return list(progress(pool.imap(decode, payloads, chunksize=256)))


def decoding_pool(workers: int) -> multiprocessing.pool.Pool:
    """`workers` forked processes that die quietly when the pool terminates them.

    fork, not spawn: spawn re-imports the caller's __main__, which fails for `python -` and
    notebooks. The workers only decode bytes with PIL and never touch the parent's threads.
    """
    # SIGTERM stays blocked while forking, so none reaches a worker before it has reset the
    # handlers it inherits (it is delivered, or stays pending, once unblocked)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        return multiprocessing.get_context("fork").Pool(workers, initializer=reset_worker_signals)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def reset_worker_signals() -> None:
    """Pool initializer: a forked worker inherits the parent's handlers, such as the CLI's
    SIGTERM -> `Terminated`, which printed a traceback per worker when a successful ingest
    ended its pool (`Pool.terminate` sends SIGTERM). SIGTERM now ends a worker silently and
    Ctrl-C is the parent's to handle (it terminates the pool)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _not_canonical(image: DecodedImage, size: int) -> str:
    return (
        f"not canonical: {image.width}x{image.height} mode {image.mode}, expected {size}x{size} "
        "mode L (ingest.non_canonical=reject; set it to convert to accept it)"
    )


# --- fer2013.csv ------------------------------------------------------------------------


class _BadRow(ValueError):
    """A CSV row that cannot be used; str(err) is the reason."""


def _read_csv(path: Path, params: Params) -> tuple[list[_Row], list[Rejected]]:
    usage_pool = {"Training": "train", "PublicTest": "test"}
    if params.ingest.csv_private_test == "test":
        usage_pool["PrivateTest"] = "test"
    rows: list[_Row] = []
    rejected: list[Rejected] = []
    skipped = 0
    with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: tolerate a BOM
        reader = csv.DictReader(handle)
        missing = [column for column in CSV_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise IngestError(
                f"{path}: missing column(s) {missing} (found {reader.fieldnames}); "
                f"fer2013.csv has the columns {', '.join(CSV_COLUMNS)}"
            )
        for record in bar(reader, desc=f"ingest {path.name}", unit="row"):
            line = reader.line_num
            where = f"{path.name} line {line}"
            if record["Usage"] == "PrivateTest" and "PrivateTest" not in usage_pool:
                skipped += 1
                continue
            try:
                row = _parse_csv_row(record, usage_pool, line, where, params)
            except _BadRow as err:
                rejected.append(Rejected(where, str(err)))
                continue
            rows.append(row)
    if skipped:
        log.info("skipped %d PrivateTest rows of %s (ingest.csv_private_test=skip)", skipped, path.name)
    return rows, rejected


def _parse_csv_row(
    record: dict[str, str], usage_pool: dict[str, str], line: int, where: str, params: Params
) -> _Row:
    usage = record["Usage"]
    if usage not in usage_pool:
        raise _BadRow(f"unknown Usage {usage!r}; expected Training, PublicTest or PrivateTest")
    label = _csv_label(record["emotion"] or "", params.base.classes)
    pixels = _csv_pixels(record["pixels"] or "")
    size = params.base.image_size
    canonical = canonical_from_pixels(pixels, size)
    side = FER2013_CSV_SIDE
    image = DecodedImage(canonical, side, side, "L", converted=canonical.shape != pixels.shape)
    return _Row(f"csv:{line}", where, ("", line), label, usage_pool[usage], image)


def _csv_label(text: str, classes: tuple[str, ...]) -> str:
    try:
        code = int(text)
    except ValueError:
        raise _BadRow(f"emotion {text!r} is not an integer 0..6") from None
    if not 0 <= code < len(FER2013_CSV_CLASSES):
        raise _BadRow(f"emotion {code} is outside 0..6")
    label = FER2013_CSV_CLASSES[code]
    if label not in classes:
        raise _BadRow(f"emotion {code} ({label}) is not one of base.classes {list(classes)}")
    return label


def _csv_pixels(text: str) -> np.ndarray:
    values = text.split()
    expected = FER2013_CSV_SIDE * FER2013_CSV_SIDE
    if len(values) != expected:
        raise _BadRow(f"{len(values)} pixel values, expected {expected} (48x48)")
    try:
        pixels = np.array(values, dtype=np.int64)
    except ValueError:
        bad = next((value for value in values if not value.lstrip("+-").isdigit()), values[0])
        raise _BadRow(f"pixel value {bad!r} is not an integer") from None
    if pixels.min() < 0 or pixels.max() > 255:
        raise _BadRow(f"pixel values must be 0..255, found {pixels.min()}..{pixels.max()}")
    return pixels.astype(np.uint8).reshape(FER2013_CSV_SIDE, FER2013_CSV_SIDE)


# --- bad files, manifest, provenance ------------------------------------------------------


def _apply_bad_file_policy(source: Path, rejected: list[Rejected], policy: str) -> None:
    if not rejected:
        return
    if policy == "error":
        listed = "\n".join(f"  {r.source}: {r.reason}" for r in rejected[:MAX_LISTED])
        more = f"\n  ... and {len(rejected) - MAX_LISTED} more" if len(rejected) > MAX_LISTED else ""
        raise IngestError(
            f"{source}: {len(rejected)} bad file(s) or row(s):\n{listed}{more}\n"
            "fix or remove them, or set ingest.on_bad_file=quarantine to skip them "
            f"(they are then listed in {REJECTED_FILE})"
        )
    log.warning(
        "quarantined %d bad file(s) or row(s) of %s; they are listed in %s",
        len(rejected),
        source,
        REJECTED_FILE,
    )


def _log_conversions(rows: list[_Row], size: int) -> None:
    kinds = Counter(
        f"{row.image.width}x{row.image.height} {row.image.mode}" for row in rows if row.image.converted
    )
    if kinds:
        shown = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common(5))
        log.info(
            "converted %d of %d images to %dx%d grayscale (%s)", kinds.total(), len(rows), size, size, shown
        )


def _build_manifest(rows: list[_Row], params: Params) -> tuple[np.ndarray, pd.DataFrame]:
    """Assign splits, order rows (split, then source), and compute hashes and statistics."""
    classes = params.base.classes
    hashes = [hashlib.sha256(row.image.pixels.tobytes()).hexdigest() for row in rows]
    split = ["test" if row.pool == "test" else "train" for row in rows]
    pool = [index for index, row in enumerate(rows) if row.pool == "train"]
    is_val = assign_validation(
        np.array([classes.index(rows[i].label) for i in pool], dtype=np.int64),
        [hashes[i] for i in pool],
        params.ingest.val_fraction,
        params.base.seed,
        params.ingest.group_duplicates,
    )
    for index, val in zip(pool, is_val, strict=True):
        if val:
            split[index] = "val"
    order = sorted(range(len(rows)), key=lambda i: (SPLITS.index(split[i]), rows[i].order))
    images = np.stack([rows[i].image.pixels for i in order]).astype(np.uint8, copy=False)
    mean, std = _pixel_statistics(images)
    manifest = pd.DataFrame(
        {
            "id": [rows[i].id for i in order],
            "source": [rows[i].source for i in order],
            "split": [split[i] for i in order],
            "label": [rows[i].label for i in order],
            "label_index": [classes.index(rows[i].label) for i in order],
            "sha256": [hashes[i] for i in order],
            "width": [rows[i].image.width for i in order],
            "height": [rows[i].image.height for i in order],
            "mode": [rows[i].image.mode for i in order],
            "converted": [rows[i].image.converted for i in order],
            "mean": mean,
            "std": std,
        },
        columns=list(MANIFEST_COLUMNS),
    )
    return images, manifest


def _pixel_statistics(images: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-image pixel mean and std, in chunks: float64 of all of FER2013 would be 600 MB."""
    mean = np.empty(len(images))
    std = np.empty(len(images))
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].reshape(-1, images[0].size).astype(np.float64)
        mean[start : start + chunk] = block.mean(axis=1)
        std[start : start + chunk] = block.std(axis=1)
    return mean, std


def _dataset_info(
    source: Path,
    kind: SourceKind,
    layout: str,
    manifest: pd.DataFrame,
    rejected: list[Rejected],
    params: Params,
) -> dict[str, Any]:
    """The dataset.json content: nothing time- or machine-dependent, so it is reproducible."""
    classes = list(params.base.classes)
    pairs = Counter(zip(manifest["split"], manifest["label"], strict=True))
    counts = {split: {name: pairs[(split, name)] for name in classes} for split in SPLITS}
    return {
        "classes": classes,
        "class_labels": list(params.base.class_labels),
        "image_size": params.base.image_size,
        "rows": len(manifest),
        "counts": counts,
        "converted": int(manifest["converted"].sum()),
        "rejected": len(rejected),
        "source_kind": kind,
        "source_layout": layout,
        "source_name": source.name,
        "source_digest": source_digest(source),
        "params_digest": params.section_digest("ingest", "base"),
    }


def source_digest(source: Path) -> str:
    """sha256 of a zip or CSV file; of the sorted (path, file sha256) list of a folder."""
    digest = hashlib.sha256()
    if source.is_file():
        with source.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    for path in sorted(_folder_files(source)):
        relative = path.relative_to(source).as_posix()
        line = f"{relative}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n"
        digest.update(line.encode("utf-8", "surrogateescape"))  # any file name, UTF-8 or not
    return digest.hexdigest()


def _folder_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [name for name in dirnames if not is_junk(name)]
        for name in filenames:
            path = Path(dirpath) / name
            if not is_junk(name) and (not path.is_symlink() or path.resolve().is_relative_to(root.resolve())):
                yield path


def _write_rejected(path: Path, rejected: Iterable[Rejected]) -> None:
    """Always written (header only when empty), so a stale list never survives a re-run."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["source", "reason"])
        writer.writerows([r.source, r.reason] for r in rejected)
