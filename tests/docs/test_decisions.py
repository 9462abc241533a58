"""The decision records: one per question, each in the same four parts, each indexed."""

from __future__ import annotations

import re

from tests.docs.mermaid import DOCS

DECISIONS = DOCS / "decisions"
PARTS = ("Context", "Decision", "Consequences", "Alternatives")


def records() -> list[str]:
    return sorted(path.name for path in DECISIONS.glob("[0-9][0-9][0-9][0-9]-*.md"))


def test_every_record_has_context_decision_consequences_and_alternatives_in_that_order() -> None:
    assert len(records()) >= 7
    wrong = {}
    for name in records():
        headings = re.findall(r"^## (\w+)", (DECISIONS / name).read_text(), re.MULTILINE)
        if headings != list(PARTS):
            wrong[name] = headings
    assert not wrong, f"records whose sections are not {PARTS}: {wrong}"


def test_records_are_numbered_in_sequence_and_titled_with_their_number() -> None:
    for index, name in enumerate(records(), start=1):
        assert name.startswith(f"{index:04d}-"), f"{name} breaks the numbering"
        first_line = (DECISIONS / name).read_text().splitlines()[0]
        assert first_line.startswith(f"# {index:04d}: "), f"{name} is titled {first_line!r}"


def test_the_index_lists_every_record() -> None:
    index = (DECISIONS / "README.md").read_text()
    missing = [name for name in records() if f"({name})" not in index]
    assert not missing, f"docs/decisions/README.md does not list {missing}"
