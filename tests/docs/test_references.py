"""Every ``path/to/file.py:name`` in the docs names a function, class or constant that exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.mermaid import DOCS, README, ROOT
from tests.docs.references import Reference, problem, references

DOCUMENTS = [README, ROOT / "SECURITY.md", *sorted(DOCS.rglob("*.md"))]


def test_every_code_reference_in_the_docs_exists() -> None:
    found = [reference for document in DOCUMENTS for reference in references(document)]
    assert len(found) > 50, "the reference pattern no longer finds the docs' references"
    broken = [f"{reference} ({reason})" for reference in found if (reason := problem(ROOT, reference))]
    assert not broken, "references to code that does not exist:\n" + "\n".join(broken)


def test_every_document_under_docs_anchors_itself_in_code() -> None:
    bare = [str(path.relative_to(ROOT)) for path in sorted(DOCS.rglob("*.md")) if not references(path)]
    assert not bare, f"documents without a single file.py:function reference: {bare}"


@pytest.fixture
def module(tmp_path: Path) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(
        "LIMIT = 3\n"
        "TABLE: dict[str, int] = {}\n"
        "def function():\n    def inner(): ...\n"
        "async def handler(request): ...\n"
        "class Store:\n    size = 1\n    def get(self): ...\n    @property\n    def ready(self): ...\n"
    )
    return tmp_path


@pytest.mark.parametrize(
    "name", ["LIMIT", "TABLE", "function", "function.inner", "handler", "Store", "Store.get", "Store.ready"]
)
def test_a_reference_to_a_definition_resolves(module: Path, name: str) -> None:
    assert problem(module, Reference(module, 1, "pkg/mod.py", name)) is None


@pytest.mark.parametrize(
    ("path", "name", "reason"),
    [
        ("pkg/mod.py", "missing", "the module defines no 'missing'"),
        ("pkg/mod.py", "Store.put", "Store defines no 'put'"),
        ("pkg/other.py", "function", "no such file"),
    ],
)
def test_a_reference_to_nothing_is_reported_with_its_reason(
    module: Path, path: str, name: str, reason: str
) -> None:
    assert problem(module, Reference(module, 1, path, name)) == reason


def test_the_pattern_finds_references_and_skips_pytest_node_ids(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "See `services/gateway/routes.py:forward` and shared/web/jwks.py:JWKSCache.key_for, then\n"
        "`tests/unit/test_tokens.py::test_x`, `services/<name>/openapi.py` and `shared/core/tokens.py`.\n"
    )
    assert [(r.path, r.name, r.line) for r in references(doc)] == [
        ("services/gateway/routes.py", "forward", 1),
        ("shared/web/jwks.py", "JWKSCache.key_for", 1),
    ]
