"""Every Mermaid diagram of the docs renders, and its committed SVG is drawn from its current source."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs import mermaid
from tests.docs.mermaid import DIAGRAMS, README, ROOT


def test_every_diagram_has_a_title_that_names_its_svg_uniquely() -> None:
    found = mermaid.diagrams()
    assert found, "no mermaid block found in README.md or docs/"
    untitled = [
        f"{diagram.doc.relative_to(ROOT)}: {diagram.source[:40]!r}" for diagram in found if not diagram.name
    ]
    assert not untitled, f"mermaid blocks without a front-matter title: {untitled}"
    names = [diagram.name for diagram in found]
    assert len(names) == len(set(names)), f"two diagrams share a title: {sorted(names)}"


def test_every_diagram_has_its_committed_svg_drawn_from_its_current_source() -> None:
    stale = []
    for diagram in mermaid.diagrams():
        if not diagram.svg.exists():
            stale.append(f"{diagram.svg.relative_to(ROOT)} is missing")
        elif not mermaid.is_current(diagram):
            stale.append(
                f"{diagram.svg.relative_to(ROOT)} is not drawn from {diagram.title!r} as it reads now"
            )
    assert not stale, "run `make diagrams`: " + "; ".join(stale)


def test_no_svg_is_left_without_its_diagram() -> None:
    wanted = {diagram.svg for diagram in mermaid.diagrams()}
    orphans = sorted(str(path.relative_to(ROOT)) for path in set(DIAGRAMS.glob("*.svg")) - wanted)
    assert not orphans, f"SVGs whose diagram is gone (`make diagrams` removes them): {orphans}"


def _readme_svg_links() -> list[str]:
    return re.findall(r"\]\(((?:\./)?docs/diagrams/[^)\s]+\.svg)\)", README.read_text())


def test_the_readme_links_every_diagram_svg_and_every_link_resolves() -> None:
    links = _readme_svg_links()
    broken = [link for link in links if not (ROOT / link).is_file()]
    assert not broken, f"README links SVGs that do not exist: {broken}"
    linked = {(ROOT / link).resolve() for link in links}
    unlinked = sorted(
        str(path.relative_to(ROOT)) for path in DIAGRAMS.glob("*.svg") if path.resolve() not in linked
    )
    assert not unlinked, f"README does not link these diagrams: {unlinked}"


def test_an_svg_drawn_from_an_edited_source_is_stale(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("```mermaid\n---\ntitle: Probe\n---\nsequenceDiagram\n    A->>B: hi\n```\n")
    (before,) = mermaid.diagrams([doc])
    svg = f"<!-- mermaid source sha256 {before.digest} from doc.md -->\n<svg/>"
    doc.write_text(doc.read_text().replace("hi", "hello"))
    (after,) = mermaid.diagrams([doc])

    assert before.name == after.name == "probe"
    assert mermaid.recorded_digest(svg) == before.digest != after.digest
    assert mermaid.recorded_digest("<svg/>") is None


@pytest.mark.skipif(mermaid.missing_tool() is not None, reason=str(mermaid.missing_tool()))
def test_every_diagram_renders_with_mermaid_cli(tmp_path: Path) -> None:
    found = mermaid.diagrams()
    result, outputs = mermaid.render(found, tmp_path)
    if result.returncode != 0:
        failing = []
        for doc in mermaid.documents():
            blocks = mermaid.diagrams([doc])
            work = tmp_path / doc.stem
            work.mkdir()
            if blocks and mermaid.render(blocks, work)[0].returncode != 0:
                failing.append(str(doc.relative_to(ROOT)))
        pytest.fail(f"mermaid-cli cannot render diagrams of {failing}:\n{result.stderr[:2000]}")
    for diagram, output in zip(found, outputs, strict=True):
        svg = output.read_text()
        assert svg.startswith("<svg"), f"{diagram.title!r} did not render to an SVG"
        assert "Syntax error" not in svg, f"{diagram.title!r} rendered mermaid's error picture"
