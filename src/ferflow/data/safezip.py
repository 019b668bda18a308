"""Read a zip archive in place, without trusting its member names or sizes.

Ingest never extracts a zip to disk, so a hostile member cannot write anywhere; still,
members that *would* be dangerous to extract (`../` paths, absolute paths, symlinks) are
reported, because an archive that holds them is not a FER download and a person should
look at it. Sizes are bounded twice: from the central directory (cheap, before reading)
and while reading (the directory can lie).
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import PurePosixPath

# Entries that archivers add and that are never data: skipped, not errors.
JUNK_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})


class UnsafeMember(ValueError):
    """A zip member that must not be read; str(err) is the reason."""


def is_junk(path: str) -> bool:
    """Hidden files (`.DS_Store`, `._x.jpg`) and archiver folders like `__MACOSX/`."""
    return any(part.startswith(".") or part in JUNK_NAMES for part in PurePosixPath(path).parts)


def member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why `info` is unsafe to use, or None when it is a plain relative file."""
    name = info.filename
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path in the zip (would be extracted outside the target folder)"
    if "\\" in name:
        return "backslash in the member name (Windows path; re-create the zip with '/' separators)"
    if ".." in PurePosixPath(name).parts:
        return "'..' in the member path (would be extracted outside the target folder)"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link member (could point outside the dataset)"
    if info.flag_bits & 0x1:
        return "encrypted member (give an unencrypted zip)"
    return None


def total_uncompressed(infos: list[zipfile.ZipInfo]) -> int:
    """Sum of the declared uncompressed sizes of the members."""
    return sum(info.file_size for info in infos)


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int) -> bytes:
    """The member's bytes, never more than `max_bytes` even if the header understates them."""
    if info.file_size > max_bytes:
        raise UnsafeMember(f"{info.file_size} bytes uncompressed exceeds ingest.max_file_bytes={max_bytes}")
    try:
        with archive.open(info) as stream:
            data = stream.read(max_bytes + 1)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as err:
        raise UnsafeMember(f"cannot read the member: {err}") from None
    if len(data) > max_bytes:
        raise UnsafeMember(f"more than ingest.max_file_bytes={max_bytes} bytes once decompressed")
    return data
