"""Pure listing rules: page size, the opaque cursor that continues a listing, and the next link.

A listing is newest first (``created_at``, ties by insertion order) and is read a page at a
time. The cursor names the last order of the page the client has, by the two values the client
already saw on it (``created_at`` and ``id``), so it reveals nothing the page did not: not the
row numbers, nor how many orders anyone else holds. It is signed with a key the service keeps
beside its data, over the listing it belongs to, so a cursor edited by hand, or carried from one
user's listing (or the admin's ``all=true`` one) to another, is refused with a 422 naming
``cursor``. The store confines every page to the caller's own rows in any case: the signature
makes tampering visible, it is not what keeps listings apart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

import msgspec

from services.orders.domain import OrderDocument
from shared.core import InvalidField

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
CURSOR_KEY_BYTES = 32
# One version byte, the 27-character timestamp, the 16-byte id and a 16-byte tag: 80 characters
# of base64url. Anything longer is refused before it is decoded.
MAX_CURSOR_LENGTH = 128

_VERSION = b"\x01"
_TIMESTAMP_LENGTH = 27
_ID_BYTES = 16
_TAG_BYTES = 16
_PAYLOAD_LENGTH = len(_VERSION) + _TIMESTAMP_LENGTH + _ID_BYTES
_CURSOR = re.compile(r"[A-Za-z0-9_-]+")
_TIMESTAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
# Domain separation: this key signs cursors and nothing else.
_CONTEXT = b"orders-listing-cursor\x00"


class OrderPage(msgspec.Struct, gc=False):
    """One page of a listing and the link to the next."""

    orders: Annotated[
        list[OrderDocument],
        msgspec.Meta(
            max_length=MAX_PAGE_SIZE, description="Newest first; ties in the order they were placed."
        ),
    ]
    next: Annotated[
        str | None,
        msgspec.Meta(
            description=(
                "The next page as a query-only relative reference (`?cursor=...&limit=...`, with"
                " `all=true` kept), resolved against the path just called; null on the last page."
            )
        ),
    ]


class ListingQuery(msgspec.Struct, kw_only=True):
    """The query of a listing, read by ``shared.query_as`` and published from the same fields."""

    all_users: Annotated[
        bool, msgspec.Meta(description="`true` lists every user's orders; for admins only.")
    ] = msgspec.field(default=False, name="all")
    limit: Annotated[
        int,
        msgspec.Meta(
            ge=1, le=MAX_PAGE_SIZE, description=f"Orders per page, {DEFAULT_PAGE_SIZE} when absent."
        ),
    ] = DEFAULT_PAGE_SIZE
    cursor: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=MAX_CURSOR_LENGTH,
                description=(
                    "Opaque: copied from the previous page's `next`. Valid only for the listing that"
                    " gave it out (the same caller, with or without `all=true`)."
                ),
            ),
        ]
        | None
    ) = None


@dataclass(frozen=True)
class Position:
    """Where a page ends: the ``created_at`` text and ``id`` of its last order."""

    created_at: str
    order_id: str


@dataclass(frozen=True)
class PageRequest:
    """A validated page query: how many orders, and after which one (None for the first page)."""

    limit: int
    after: Position | None


def listing_scope(owner: str | None) -> str:
    """The listing a cursor belongs to: one owner's orders, or everyone's (``owner`` None)."""
    return "all" if owner is None else f"owner:{owner}"


def page_request(query: ListingQuery, *, key: bytes, scope: str) -> PageRequest:
    """The page a listing query asks for; a cursor not signed for ``scope`` raises :class:`InvalidField`."""
    after = None if query.cursor is None else decode_cursor(query.cursor, key=key, scope=scope)
    return PageRequest(limit=query.limit, after=after)


def encode_cursor(position: Position, *, key: bytes, scope: str) -> str:
    """The opaque cursor for the page after ``position`` in the listing ``scope``."""
    payload = _VERSION + position.created_at.encode("ascii") + bytes.fromhex(position.order_id)
    token = payload + _tag(payload, key=key, scope=scope)
    return base64.urlsafe_b64encode(token).rstrip(b"=").decode("ascii")


def decode_cursor(text: str, *, key: bytes, scope: str) -> Position:
    """The position ``text`` names, if this service signed it for ``scope``."""
    refused = InvalidField("cursor", "cursor is not one this listing gave out; start again without it")
    if len(text) > MAX_CURSOR_LENGTH or not _CURSOR.fullmatch(text):
        raise refused
    try:
        token = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise refused from None
    payload, tag = token[:-_TAG_BYTES], token[-_TAG_BYTES:]
    if len(payload) != _PAYLOAD_LENGTH or not hmac.compare_digest(tag, _tag(payload, key=key, scope=scope)):
        raise refused
    # Signed by this service, so well formed; checked anyway, as a key can leak with a backup.
    timestamp = payload[len(_VERSION) : len(_VERSION) + _TIMESTAMP_LENGTH]
    if payload[:1] != _VERSION or not _TIMESTAMP.fullmatch(timestamp):
        raise refused
    return Position(created_at=timestamp.decode("ascii"), order_id=payload[-_ID_BYTES:].hex())


def next_link(position: Position | None, *, key: bytes, scope: str, limit: int, want_all: bool) -> str | None:
    """The query-only reference to the next page (RFC 3986 section 5.2), or None on the last page.

    Relative to the path the client used, so it works at orders' ``/orders`` and at the
    gateway's ``/api/orders`` alike.
    """
    if position is None:
        return None
    query = [("all", "true")] if want_all else []
    query += [("cursor", encode_cursor(position, key=key, scope=scope)), ("limit", str(limit))]
    return "?" + urlencode(query)


def _tag(payload: bytes, *, key: bytes, scope: str) -> bytes:
    message = _CONTEXT + scope.encode("utf-8") + b"\x00" + payload
    return hmac.new(key, message, hashlib.sha256).digest()[:_TAG_BYTES]
