"""The Mermaid diagrams of the docs: find them, render them with mermaid-cli, stamp the SVGs.

``python -m tests.docs.mermaid`` (``make diagrams``) renders every block whose SVG is missing or
stale to ``docs/diagrams/<name>.svg`` (``--force``: every block). Each block names itself in
Mermaid's front matter (``title: ...``); the file name is that title in lower case with dashes.

mermaid-cli's output is not byte-for-byte repeatable (flowchart shapes get random jitter), so
each SVG opens with a comment holding the SHA-256 of the source it was drawn from: a test can
tell a stale SVG from a current one without rendering anything.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
DIAGRAMS = DOCS / "diagrams"
README = ROOT / "README.md"
# `make mermaid` installs mermaid-cli here, inside the (gitignored) project cache.
MERMAID_PREFIX = ROOT / ".cache" / "mermaid"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu"]
RENDER_TIMEOUT_SECONDS = 120

_BLOCK = re.compile(r"^```mermaid\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_TITLE = re.compile(r"\A---\ntitle: (?P<title>[^\n]+)\n---\n")
_STAMP = re.compile(r"\A<!-- mermaid source sha256 (?P<digest>[0-9a-f]{64}) from (?P<doc>\S+) -->\n")


@dataclass(frozen=True)
class Diagram:
    """One ```mermaid block of a Markdown file."""

    doc: Path
    source: str

    @property
    def title(self) -> str | None:
        match = _TITLE.match(self.source)
        return match.group("title").strip() if match else None

    @property
    def name(self) -> str:
        title = self.title or ""
        return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")

    @property
    def svg(self) -> Path:
        return DIAGRAMS / f"{self.name}.svg"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()

    def stamp(self) -> str:
        return f"<!-- mermaid source sha256 {self.digest} from {self.doc.relative_to(ROOT)} -->\n"


def documents() -> list[Path]:
    """Every Markdown file whose diagrams are rendered: docs/ and the README."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def diagrams(paths: list[Path] | None = None) -> list[Diagram]:
    return [
        Diagram(doc=path, source=match.group(1))
        for path in (documents() if paths is None else paths)
        for match in _BLOCK.finditer(path.read_text())
    ]


def recorded_digest(svg_text: str) -> str | None:
    """The source digest stamped on a rendered SVG, or None if it carries none."""
    match = _STAMP.match(svg_text)
    return match.group("digest") if match else None


def mmdc() -> Path | None:
    """The project-local mermaid-cli, else one on PATH."""
    local = MERMAID_PREFIX / "node_modules" / ".bin" / "mmdc"
    if local.exists():
        return local
    found = shutil.which("mmdc")
    return Path(found) if found else None


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_tool() -> str | None:
    """Why diagrams cannot be rendered here, or None when they can."""
    if shutil.which("node") is None:
        return "node is not installed (Debian: apt-get install -y nodejs npm)"
    if mmdc() is None:
        return "mermaid-cli is not installed: run `make mermaid`"
    if chromium() is None:
        return "chromium is not installed (Debian: apt-get install -y chromium)"
    return None


def render(blocks: list[Diagram], work: Path) -> tuple[subprocess.CompletedProcess[str], list[Path]]:
    """Render ``blocks`` with one Chromium start; the SVG of the n-th block is the n-th path.

    mermaid-cli renders every ```mermaid block of a Markdown input to ``<output>-<n>.svg``.
    """
    tool, browser = mmdc(), chromium()
    if tool is None or browser is None:
        raise RuntimeError(f"cannot render diagrams: {missing_tool()}")
    markdown = "".join(f"```mermaid\n{block.source}```\n\n" for block in blocks)
    (work / "diagrams.md").write_text(markdown)
    (work / "puppeteer.json").write_text(json.dumps({"executablePath": browser, "args": CHROMIUM_ARGS}))
    result = subprocess.run(
        [str(tool), "-q", "-i", "diagrams.md", "-o", "rendered.md", "-p", "puppeteer.json"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=RENDER_TIMEOUT_SECONDS,
        check=False,
    )
    return result, [work / f"rendered-{n}.svg" for n in range(1, len(blocks) + 1)]


def is_current(diagram: Diagram) -> bool:
    """True when the committed SVG was drawn from the diagram's source as it reads now."""
    return diagram.svg.is_file() and recorded_digest(diagram.svg.read_text()) == diagram.digest


def main(argv: list[str] | None = None) -> int:
    force = "--force" in (sys.argv[1:] if argv is None else argv)
    reason = missing_tool()
    if reason:
        print(f"cannot render diagrams: {reason}", file=sys.stderr)
        return 1
    found = diagrams()
    untitled = [diagram for diagram in found if diagram.title is None]
    if untitled:
        print(f"{untitled[0].doc.relative_to(ROOT)}: a mermaid block has no title", file=sys.stderr)
        return 1
    # Only diagrams whose source changed are drawn again: a re-render of an unchanged flowchart
    # differs in its random jitter alone, and would be churn in every commit.
    stale = [diagram for diagram in found if force or not is_current(diagram)]
    if stale:
        with tempfile.TemporaryDirectory(prefix="mermaid-") as tmp:
            result, outputs = render(stale, Path(tmp))
            if result.returncode != 0:
                print(result.stderr, file=sys.stderr)
                return 1
            DIAGRAMS.mkdir(parents=True, exist_ok=True)
            for diagram, output in zip(stale, outputs, strict=True):
                diagram.svg.write_text(diagram.stamp() + output.read_text())
                print(f"{diagram.svg.relative_to(ROOT)}  <- {diagram.doc.relative_to(ROOT)}: {diagram.title}")
    print(f"{len(found) - len(stale)} of {len(found)} diagrams already current")
    wanted = {diagram.svg for diagram in found}
    for orphan in sorted(set(DIAGRAMS.glob("*.svg")) - wanted):
        orphan.unlink()
        print(f"removed {orphan.relative_to(ROOT)}: no diagram has that title any more")
    return 0


if __name__ == "__main__":
    sys.exit(main())
