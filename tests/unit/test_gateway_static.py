"""The demo page's files: content types, entity tags, the loader, and markup a strict CSP can run."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from services.gateway import assets, domain
from services.gateway.app import STATIC_DIR, load_assets


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("index.html", "text/html; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
        ("UPPER.JS", "text/javascript; charset=utf-8"),
    ],
)
def test_each_file_type_has_its_content_type(name: str, content_type: str) -> None:
    assert assets.asset(name, b"x").content_type == content_type


@pytest.mark.parametrize("name", ["notes.txt", "app.py", "Makefile", "index.html.bak", ".env"])
def test_a_file_without_a_known_type_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="no content type"):
        assets.asset(name, b"x")


def test_the_entity_tag_follows_the_content() -> None:
    first, same, other = (
        assets.asset("a.js", b"one"),
        assets.asset("b.js", b"one"),
        assets.asset("a.js", b"two"),
    )

    assert first.etag == same.etag != other.etag
    assert first.etag.startswith('"')
    assert first.etag.endswith('"')


@pytest.mark.parametrize(
    ("if_none_match", "matches"),
    [
        (None, False),
        ("", False),
        ('"abc"', True),
        ('W/"abc"', True),
        ('"other", "abc"', True),
        ("*", True),
        ('"other"', False),
        ("abc", False),
    ],
)
def test_if_none_match_compares_weakly(if_none_match: str | None, matches: bool) -> None:
    assert assets.etag_matches(if_none_match, '"abc"') is matches


def test_asset_headers_carry_the_page_policy() -> None:
    headers = assets.asset_headers(assets.asset("app.js", b"x"))

    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-cache"
    policy = {
        directive.split()[0]: directive.split()[1:]
        for directive in headers["Content-Security-Policy"].split("; ")
    }
    assert policy["default-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "script-src" not in policy  # it would override default-src, which allows no inline code
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]


def test_the_static_prefix_and_the_page_shadow_no_proxied_route() -> None:
    for route in domain.ROUTE_TABLE:
        assert route.prefix != "/"
        assert not (route.prefix + "/").startswith(assets.STATIC_PREFIX)
        assert not assets.STATIC_PREFIX.startswith(route.prefix + "/")


def test_the_loader_reads_every_file_by_name_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_bytes(b"<!doctype html>")
    (tmp_path / "app.js").write_bytes(b"1;")
    (tmp_path / ".hidden.js").write_bytes(b"2;")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "deep.js").write_bytes(b"3;")

    loaded = load_assets(tmp_path)

    assert sorted(loaded) == ["app.js", "index.html"]
    assert loaded["app.js"].body == b"1;"


def test_the_loader_refuses_a_directory_without_the_page(tmp_path: Path) -> None:
    (tmp_path / "app.js").write_bytes(b"1;")

    with pytest.raises(ValueError, match=r"no index\.html"):
        load_assets(tmp_path)


def test_the_loader_refuses_a_file_it_cannot_type(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_bytes(b"<!doctype html>")
    (tmp_path / "secrets.txt").write_bytes(b"nope")

    with pytest.raises(ValueError, match=r"secrets\.txt"):
        load_assets(tmp_path)


class _InlineCode(HTMLParser):
    """Collects everything in a page that a CSP without 'unsafe-inline' would refuse to run."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "style":
            self.found.append("<style>")
        if tag == "script":
            self._in_script = True
            if "src" not in names:
                self.found.append("<script> without src")
            self.scripts.append(dict(attrs).get("src") or "")
        self.found += [f"{tag} {name}=" for name in names if name == "style" or name.startswith("on")]
        self.found += [
            f"{tag} {name}=javascript:" for name, value in attrs if (value or "").startswith("javascript:")
        ]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.found.append("inline script text")


def test_the_shipped_page_has_no_inline_code_and_every_file_it_names_exists() -> None:
    loaded = load_assets(STATIC_DIR)
    parser = _InlineCode()
    parser.feed(loaded[assets.PAGE_FILE].body.decode())

    assert parser.found == []
    assert parser.scripts == ["/static/app.js"]
    page = loaded[assets.PAGE_FILE].body.decode()
    for name in ("app.js", "app.css", "favicon.svg"):
        assert f"{assets.STATIC_PREFIX}{name}" in page
        assert name in loaded
