"""Code references in prose: ``path/to/file.py:name`` (or ``:Class.method``), checked with ``ast``."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

# A repository path ending in .py, a colon, then a dotted Python name. ``file.py::test`` (a pytest
# node id) does not match: a name cannot start with a colon.
_REFERENCE = re.compile(r"(?<![\w/.<>-])((?:[\w.-]+/)*[\w-]+\.py):([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")


@dataclass(frozen=True)
class Reference:
    source: Path
    line: int
    path: str
    name: str

    def __str__(self) -> str:
        return f"{self.source.name}:{self.line}: {self.path}:{self.name}"


def references(document: Path) -> list[Reference]:
    found = []
    for number, line in enumerate(document.read_text().splitlines(), start=1):
        for match in _REFERENCE.finditer(line):
            found.append(Reference(document, number, match.group(1), match.group(2)))
    return found


def _defined_names(body: list[ast.stmt]) -> dict[str, list[ast.stmt]]:
    """The names a module or class body defines, each with the body it opens (empty for data)."""
    names: dict[str, list[ast.stmt]] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names[node.name] = node.body
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for element in ast.walk(target):
                    if isinstance(element, ast.Name):
                        names.setdefault(element.id, [])
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.setdefault(node.target.id, [])
        elif isinstance(node, ast.If | ast.Try):
            # Definitions under `if TYPE_CHECKING:` or a guarded import still define the name.
            names.update({key: value for key, value in _defined_names(node.body).items() if key not in names})
    return names


def problem(root: Path, reference: Reference) -> str | None:
    """Why ``reference`` does not resolve, or None when it names something that exists."""
    path = root / reference.path
    if not path.is_file():
        return "no such file"
    body = ast.parse(path.read_text(), filename=str(path)).body
    for depth, part in enumerate(reference.name.split(".")):
        names = _defined_names(body)
        if part not in names:
            where = ".".join(reference.name.split(".")[:depth]) or "the module"
            return f"{where} defines no {part!r}"
        body = names[part]
    return None
