"""The demo page's files as data: content types, entity tags and the page's security headers.

Pure: the app reads the files once at start-up (:func:`services.gateway.app.load_assets`) and the
routes answer from memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# The demo page: served from memory, so a request path is only ever a key into a table of the
# files read at start-up and can never name a file on disk.
PAGE_FILE = "index.html"
STATIC_PREFIX = "/static/"

CONTENT_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}

# default-src covers scripts, styles, images and fetch, and 'self' alone forbids inline code, so
# injected markup cannot run. base-uri, form-action and frame-ancestors do not fall back to
# default-src, so they are named.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

PAGE_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # A page this one opens (or that opens it) gets no window handle to reach into it.
    "Cross-Origin-Opener-Policy": "same-origin",
    # The names carry no version, so a browser must revalidate; the ETag makes that a 304.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Asset:
    """One file of the demo page, held in memory with its content type and entity tag."""

    body: bytes
    content_type: str
    etag: str


def asset(name: str, body: bytes) -> Asset:
    """The asset for file ``name``; a name without a known content type is a :class:`ValueError`."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    content_type = CONTENT_TYPES.get(suffix.lower())
    if content_type is None:
        raise ValueError(f"no content type for static file {name!r}")
    return Asset(body=body, content_type=content_type, etag=f'"{hashlib.sha256(body).hexdigest()[:32]}"')


def asset_headers(item: Asset) -> dict[str, str]:
    """The response headers for ``item``: its type and tag plus the page's security headers."""
    return {**PAGE_HEADERS, "Content-Type": item.content_type, "ETag": item.etag}


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weakly compared, as RFC 9110 13.1.2 says for it)."""
    if if_none_match is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags
