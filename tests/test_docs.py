"""The README and docs/ link to files of the repo by relative path; a moved or renamed file must not leave a
dead link behind (the README is the first thing a new user reads)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target)


def relative_links(doc: Path) -> list[str]:
    targets = [m.group(1).split("#")[0] for m in LINK.finditer(doc.read_text(encoding="utf-8"))]
    return [t for t in targets if t and not re.match(r"[a-z]+:", t)]  # skip http:, mailto:, ...


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_point_at_files(doc):
    dead = [t for t in relative_links(doc) if not (doc.parent / t).exists()]
    assert not dead, f"{doc.name} links to missing files: {dead}"


def test_the_link_check_sees_links():
    # the README links to docs/ (if this finds none, the regex above has stopped matching)
    assert "docs/review-log.md" in relative_links(ROOT / "README.md")
