"""A newcomer's first hour (issue #14): where the data comes from and what the infra needs.

Docker has no engine here, so these tests read the files: README and docs text, the compose
file, the Kubernetes manifest, .dockerignore against the Dockerfiles' COPY lines, the Makefile.
"""

from __future__ import annotations

import re

from tests.conftest import REPO

README = REPO / "README.md"


def _section(markdown: str, heading: str) -> str:
    """The text under `heading` up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    start = markdown.index(f"\n{heading}\n")
    rest = markdown[start + len(heading) + 2 :]
    end = re.search(rf"^#{{1,{len(level)}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


# --- 1. where FER2013 comes from ---------------------------------------------------------


def test_readme_says_where_to_get_fer2013_and_on_what_terms():
    section = _section(README.read_text(), "### Getting FER2013")

    # the two public sources, and the forms ferflow reads
    assert "msambare" in section and "kaggle.com/datasets/msambare/fer2013" in section
    assert "challenges-in-representation-learning-facial-expression-recognition-challenge" in section
    assert "fer2013.csv" in section and ".zip" in section and "folder" in section
    assert "`train/`" in section and "`test/`" in section
    # the terms: the user's to accept, never ferflow's
    assert "non-commercial" in section and "real" in section and "terms" in section
    assert "never downloads" in section
