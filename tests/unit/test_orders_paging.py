"""The listing rules on their own: page size, the signed cursor and the next link."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs

import pytest
from starlette.datastructures import QueryParams

from services.orders import paging
from services.orders.paging import Position
from shared.core import InvalidField, query_as

KEY = b"k" * paging.CURSOR_KEY_BYTES
ALICE = paging.listing_scope("alice")
POSITION = Position(created_at="2025-01-31T12:00:00.123456Z", order_id="0123456789abcdef" * 2)


def parse(
    limit: list[str],
    cursor: list[str],
    scope: str = ALICE,
    key: bytes = KEY,
    all_users: list[str] | None = None,
) -> paging.PageRequest:
    """A listing query string as the route reads it."""
    pairs = [("all", value) for value in all_users or []]
    pairs += [("limit", value) for value in limit] + [("cursor", value) for value in cursor]
    query = query_as(QueryParams(pairs), paging.ListingQuery)
    return paging.page_request(query, key=key, scope=scope)


def refused_field(limit: list[str], cursor: list[str], scope: str = ALICE, key: bytes = KEY) -> str:
    with pytest.raises(InvalidField) as caught:
        parse(limit, cursor, scope=scope, key=key)
    return caught.value.field


def test_without_parameters_a_listing_is_the_first_page_of_the_default_size() -> None:
    assert parse([], []) == paging.PageRequest(limit=paging.DEFAULT_PAGE_SIZE, after=None)


@pytest.mark.parametrize("limit", ["1", "7", "20", "99", str(paging.MAX_PAGE_SIZE)])
def test_a_limit_from_one_to_the_maximum_is_the_page_size(limit: str) -> None:
    assert parse([limit], []).limit == int(limit)


@pytest.mark.parametrize(("values", "expected"), [([], False), (["false"], False), (["true"], True)])
def test_all_flag_is_absent_true_or_false(values: list[str], expected: bool) -> None:
    pairs = [("all", value) for value in values]
    assert query_as(QueryParams(pairs), paging.ListingQuery).all_users is expected


@pytest.mark.parametrize("values", [[""], ["1"], ["0"], ["yes"], ["TRUE"], ["True"], ["true", "true"]])
def test_all_flag_in_any_other_spelling_is_rejected(values: list[str]) -> None:
    with pytest.raises(InvalidField) as caught:
        parse([], [], all_users=values)
    assert caught.value.field == "all"


def test_parameters_a_listing_does_not_read_are_ignored() -> None:
    query = query_as(QueryParams([("_", "123"), ("limit", "5")]), paging.ListingQuery)
    assert query == paging.ListingQuery(limit=5)


@pytest.mark.parametrize(
    "limit",
    [
        ["0"],
        ["-1"],
        ["101"],
        ["1000"],
        ["99999999999999999999"],
        [""],
        ["ten"],
        ["1.5"],
        ["+5"],
        [" 5"],
        ["05"],
        ["5 "],
        ["0x10"],
        ["٣"],
        ["5", "5"],
    ],
)
def test_any_other_limit_is_refused_naming_limit(limit: list[str]) -> None:
    assert refused_field(limit, []) == "limit"


def test_a_cursor_round_trips_to_its_position() -> None:
    cursor = paging.encode_cursor(POSITION, key=KEY, scope=ALICE)
    assert paging.decode_cursor(cursor, key=KEY, scope=ALICE) == POSITION
    request = parse(["5"], [cursor])
    assert request == paging.PageRequest(limit=5, after=POSITION)


def test_a_cursor_is_url_safe_and_does_not_spell_out_its_position() -> None:
    cursor = paging.encode_cursor(POSITION, key=KEY, scope=ALICE)
    assert len(cursor) <= paging.MAX_CURSOR_LENGTH
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert POSITION.order_id not in cursor
    assert "2025" not in cursor


def test_a_cursor_from_one_users_listing_is_refused_in_anothers() -> None:
    cursor = paging.encode_cursor(POSITION, key=KEY, scope=ALICE)
    assert refused_field([], [cursor], scope=paging.listing_scope("bob")) == "cursor"


def test_a_cursor_from_the_admins_full_listing_is_refused_in_their_own_and_back() -> None:
    everyone = paging.listing_scope(None)
    root = paging.listing_scope("root")
    assert (
        refused_field([], [paging.encode_cursor(POSITION, key=KEY, scope=everyone)], scope=root) == "cursor"
    )
    assert (
        refused_field([], [paging.encode_cursor(POSITION, key=KEY, scope=root)], scope=everyone) == "cursor"
    )


def test_a_user_named_all_does_not_share_the_full_listings_scope() -> None:
    assert paging.listing_scope("all") != paging.listing_scope(None)


def test_a_cursor_signed_with_another_key_is_refused() -> None:
    cursor = paging.encode_cursor(POSITION, key=b"x" * paging.CURSOR_KEY_BYTES, scope=ALICE)
    assert refused_field([], [cursor]) == "cursor"


def _flip(cursor: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[index] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize("index", [0, 1, 20, 27, 28, 43, 44, 59])
def test_a_cursor_with_any_byte_changed_is_refused(index: int) -> None:
    cursor = paging.encode_cursor(POSITION, key=KEY, scope=ALICE)
    assert refused_field([], [_flip(cursor, index)]) == "cursor"


@pytest.mark.parametrize(
    "cursor",
    ["", "a", "!!!!", "abc=", "%00", "x" * (paging.MAX_CURSOR_LENGTH + 1), "é" * 10, "AAAA" * 20, "A" * 81],
)
def test_a_malformed_cursor_is_refused_naming_cursor(cursor: str) -> None:
    assert refused_field([], [cursor]) == "cursor"


def test_a_repeated_cursor_is_refused_even_when_both_are_good() -> None:
    cursor = paging.encode_cursor(POSITION, key=KEY, scope=ALICE)
    assert refused_field([], [cursor, cursor]) == "cursor"


def test_the_next_link_is_a_query_only_reference_carrying_cursor_and_limit() -> None:
    link = paging.next_link(POSITION, key=KEY, scope=ALICE, limit=7, want_all=False)
    assert link is not None
    assert link.startswith("?")
    query = parse_qs(link[1:], strict_parsing=True)
    assert query["limit"] == ["7"]
    assert "all" not in query
    assert paging.decode_cursor(query["cursor"][0], key=KEY, scope=ALICE) == POSITION


def test_the_next_link_of_the_full_listing_keeps_all_true() -> None:
    everyone = paging.listing_scope(None)
    link = paging.next_link(POSITION, key=KEY, scope=everyone, limit=20, want_all=True)
    assert link is not None
    assert parse_qs(link[1:])["all"] == ["true"]


def test_the_last_page_has_no_next_link() -> None:
    assert paging.next_link(None, key=KEY, scope=ALICE, limit=20, want_all=False) is None
