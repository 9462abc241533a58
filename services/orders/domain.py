"""Pure order rules: what a valid order request is, who may see which orders, and an order's JSON."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from shared.core import AccessClaims, Conflict, Forbidden, InvalidField, NotFound, validate_as

AUDIENCE = "orders"
ITEM_MAX_LENGTH = 200
QUANTITY_MIN = 1
QUANTITY_MAX = 1000
_ORDER_ID = re.compile(r"[0-9a-f]{32}")
# Fixed width, so text order is time order in SQLite and in any client.
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# Text that shows something other than what it holds is refused, so an admin's listing of
# everyone's orders shows each item as its owner typed it. Cc: C0/C1 controls and DEL. Cf: format
# characters, the invisible and the bidirectional ones (U+200B zero width space, U+202E
# right-to-left override, U+2066-2069 isolates, U+FEFF). Zl, Zp: line and paragraph separators.
# Co: private use, which renders as whatever a font puts there. Cs: lone surrogates, which JSON
# escapes can carry but UTF-8 cannot.
REJECTED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
# Letters (Lo) and a mark (Mn) that render as blank space: the Hangul fillers and the combining
# grapheme joiner, the usual stand-ins for an invisible character where Cf is refused.
INVISIBLE_CHARACTERS = frozenset("\u034f\u115f\u1160\u3164\uffa0")
_ZERO_WIDTH_JOINER = "\u200d"
# What may end an emoji before a joiner besides a pictograph: the presentation selector U+FE0F
# and the skin tone modifiers U+1F3FB-1F3FF.
_EMOJI_MODIFIERS = frozenset("\ufe0f\U0001f3fb\U0001f3fc\U0001f3fd\U0001f3fe\U0001f3ff")


class OrderDraft(msgspec.Struct, forbid_unknown_fields=True):
    """An order to place: what and how many. Its owner is always the token's subject."""

    item: Annotated[
        str,
        msgspec.Meta(
            description=(
                f"1 to {ITEM_MAX_LENGTH} characters after trimming outer spaces; no control,"
                f" invisible or bidirectional characters (Unicode {', '.join(sorted(REJECTED_CATEGORIES))})."
            )
        ),
    ]
    quantity: Annotated[int, msgspec.Meta(ge=QUANTITY_MIN, le=QUANTITY_MAX)]

    def __post_init__(self) -> None:
        # What msgspec cannot state: trimming, and the characters refused (see is_plain_text).
        self.item = _clean_item(self.item)


class QuotaExceeded(Conflict):
    """409: the caller already holds as many orders as one user may."""

    code = "order_quota_exceeded"


class OrderDocument(msgspec.Struct, frozen=True, gc=False):
    """An order as clients see it."""

    # Field for field as the store keeps it, so a row becomes one without conversion and msgspec
    # encodes it without an intermediate dict.
    id: Annotated[str, msgspec.Meta(pattern=f"^{_ORDER_ID.pattern}$")]
    item: str
    quantity: int
    owner: Annotated[str, msgspec.Meta(description="The `sub` of the token that placed it.")]
    created_at: Annotated[str, msgspec.Meta(description="UTC, `2025-01-31T12:00:00.000000Z`.")]


class Identity(msgspec.Struct, frozen=True, gc=False):
    """Who the token says the caller is."""

    sub: str
    role: str | None


@dataclass(frozen=True)
class Order:
    """A placed order. ``owner`` is the ``sub`` of the token that placed it."""

    id: str
    item: str
    quantity: int
    owner: str
    created_at: datetime

    def to_document(self) -> OrderDocument:
        """The JSON shape, with ``created_at`` as an ISO-8601 UTC string."""
        return OrderDocument(
            id=self.id,
            item=self.item,
            quantity=self.quantity,
            owner=self.owner,
            created_at=format_timestamp(self.created_at),
        )


def parse_order_draft(document: Mapping[str, Any]) -> OrderDraft:
    """Validate a ``POST /orders`` body; the first wrong field raises :class:`InvalidField`."""
    return validate_as(document, OrderDraft)


def _clean_item(value: str) -> str:
    if not is_plain_text(value):
        raise InvalidField("item", "item must not contain control, invisible or bidirectional characters")
    item = value.strip()
    if not 1 <= len(item) <= ITEM_MAX_LENGTH:
        raise InvalidField(
            "item", f"item must be 1 to {ITEM_MAX_LENGTH} characters, not counting outer spaces"
        )
    return item


def is_plain_text(text: str) -> bool:
    """True when every character of ``text`` shows as itself: no control, format or invisible ones.

    The one format character allowed is U+200D (zero width joiner) between two pictographs, as
    in the family emoji; anywhere else it is as invisible as the others.
    """
    # ASCII printables are nearly every item: skip the per-character lookups for them.
    if text.isascii() and text.isprintable():
        return True
    for index, char in enumerate(text):
        if char in INVISIBLE_CHARACTERS:
            return False
        if unicodedata.category(char) in REJECTED_CATEGORIES and not _joins_emoji(text, index):
            return False
    return True


def _joins_emoji(text: str, index: int) -> bool:
    if text[index] != _ZERO_WIDTH_JOINER or not 0 < index < len(text) - 1:
        return False
    before, after = text[index - 1], text[index + 1]
    emoji_end = unicodedata.category(before) == "So" or before in _EMOJI_MODIFIERS
    return emoji_end and unicodedata.category(after) == "So"


def new_order_id() -> str:
    """A random id (122 bits from the OS), so knowing one order's id tells nothing about another's."""
    return uuid.uuid4().hex


def is_order_id(text: str) -> bool:
    """True for the shape :func:`new_order_id` makes; anything else cannot name an order."""
    return _ORDER_ID.fullmatch(text) is not None


def place_order(draft: OrderDraft, *, owner: str, order_id: str, now: datetime) -> Order:
    """The order ``owner`` places at ``now`` (an aware datetime, stored in UTC)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return Order(
        id=order_id, item=draft.item, quantity=draft.quantity, owner=owner, created_at=now.astimezone(UTC)
    )


def listing_owner(claims: AccessClaims, want_all: bool) -> str | None:
    """Whose orders a listing shows: the caller's, or everyone's (``None``) for an admin who asks."""
    if not want_all:
        return claims.sub
    if not claims.is_admin:
        raise Forbidden("only an admin may list every user's orders")
    return None


def readable_order(order: OrderDocument | None, claims: AccessClaims) -> OrderDocument:
    """The order if the caller owns it. Someone else's order is "not found", so ids reveal nothing."""
    if order is None or order.owner != claims.sub:
        raise NotFound("no such order")
    return order


def quota_exceeded(limit: int) -> QuotaExceeded:
    """The error for a caller who already holds ``limit`` orders."""
    return QuotaExceeded(f"you hold {limit} orders, the most one user may hold")


def format_timestamp(moment: datetime) -> str:
    """``2025-01-31T12:00:00.000000Z`` for an aware datetime."""
    return moment.astimezone(UTC).strftime(_TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    """The inverse of :func:`format_timestamp`."""
    return datetime.strptime(text, _TIMESTAMP_FORMAT).replace(tzinfo=UTC)
