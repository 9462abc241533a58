"""Every relative link in the README and docs/ leads to a file, and every #anchor to a heading."""

from __future__ import annotations

import re
from pathlib import Path

from tests.docs.mermaid import DOCS, README, ROOT

DOCUMENTS = [README, ROOT / "SECURITY.md", *sorted(DOCS.rglob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} (.+)$", re.MULTILINE)


def anchors(document: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"```.*?```", "", document.read_text(), flags=re.DOTALL)
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in _HEADING.findall(text)
    }


def broken_links(document: Path) -> list[str]:
    broken = []
    for target in _LINK.findall(document.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, fragment = target.partition("#")
        destination = (document.parent / path).resolve() if path else document
        if not destination.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            broken.append(f"{target} (no such heading)")
    return broken


def test_every_relative_link_and_anchor_resolves() -> None:
    broken = [f"{doc.relative_to(ROOT)}: {link}" for doc in DOCUMENTS for link in broken_links(doc)]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_a_link_to_a_missing_file_or_heading_is_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Revocation, event by event\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "[ok](other.md#revocation-event-by-event) [web](https://example.com) [self](#title)\n"
        "[gone](missing.md) [bad anchor](other.md#nothing)\n# Title\n"
    )
    assert broken_links(doc) == ["missing.md (no such file)", "other.md#nothing (no such heading)"]
