"""The orders domain rules, each on its own: validation, ids, visibility and the JSON shape."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from services.orders import domain
from services.orders.domain import Order, OrderDraft
from shared.core import AccessClaims, Forbidden, InvalidField, NotFound, ValidationFailed

NOW = datetime(2025, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)


def claims(sub: str = "alice", role: str | None = "user") -> AccessClaims:
    return AccessClaims(
        sub=sub,
        aud="orders",
        iss="http://localhost:8000",
        jti="jti-1",
        iat=0,
        exp=300,
        sid="sid-1",
        client_id="test-client",
        role=role,
        scope=None,
    )


def an_order(owner: str = "alice") -> Order:
    return domain.place_order(OrderDraft("tea", 2), owner=owner, order_id=domain.new_order_id(), now=NOW)


def field_of(document: dict[str, Any]) -> str:
    with pytest.raises(InvalidField) as caught:
        domain.parse_order_draft(document)
    return caught.value.field


def test_a_valid_request_becomes_a_draft() -> None:
    assert domain.parse_order_draft({"item": "tea", "quantity": 3}) == OrderDraft("tea", 3)


def test_item_is_stored_without_outer_spaces() -> None:
    assert domain.parse_order_draft({"item": "  green tea \u00a0", "quantity": 1}).item == "green tea"


@pytest.mark.parametrize(
    "item",
    [
        "a",
        "x" * 200,
        "  " + "x" * 200 + "  ",
        "café ☕",
        "日本茶",
        "שלום עולם",
        "مرحبا",
        "👩\u200d👩\u200d👧",
        "👩🏽\u200d💻",
        "❤\ufe0f\u200d🔥",
        "tea\u00a0cup",
    ],
)
def test_item_accepts_1_to_200_characters_of_any_script(item: str) -> None:
    assert domain.parse_order_draft({"item": item, "quantity": 1}).item == item.strip()


@pytest.mark.parametrize("item", ["", "   ", "\u3000", "x" * 201, " " + "x" * 201])
def test_item_outside_1_to_200_characters_after_trimming_is_rejected(item: str) -> None:
    assert field_of({"item": item, "quantity": 1}) == "item"


@pytest.mark.parametrize(
    "item",
    ["tea\x00", "tea\n", "\ttea", "te\ra", "tea\x1b[31m", "tea\x7f", "tea\x85", "tea\x9b", "tea\ud800"],
)
def test_item_with_control_characters_or_lone_surrogates_is_rejected(item: str) -> None:
    with pytest.raises(InvalidField, match="control") as caught:
        domain.parse_order_draft({"item": item, "quantity": 1})
    assert caught.value.field == "item"


@pytest.mark.parametrize(
    "item",
    [
        pytest.param("admin\u202e", id="right-to-left override"),
        pytest.param("\u202ealert", id="override first"),
        pytest.param("a\u202db", id="left-to-right override"),
        pytest.param("tea\u200b", id="zero width space"),
        pytest.param("t\u200cea", id="zero width non-joiner"),
        pytest.param("tea\u200d", id="joiner at the end"),
        pytest.param("a\u200db", id="joiner between letters"),
        pytest.param("☕\u200d\u200d☕", id="two joiners"),
        pytest.param("\u2066tea\u2069", id="left-to-right isolate"),
        pytest.param("\u2067tea", id="right-to-left isolate"),
        pytest.param("\u2068tea", id="first strong isolate"),
        pytest.param("\ufefftea", id="byte order mark"),
        pytest.param("t\u00adea", id="soft hyphen"),
        pytest.param("\u200etea", id="left-to-right mark"),
        pytest.param("\u061ctea", id="arabic letter mark"),
        pytest.param("tea\u2060", id="word joiner"),
        pytest.param("tea\U000e0041", id="tag character"),
        pytest.param("tea\u2028", id="line separator"),
        pytest.param("tea\u2029", id="paragraph separator"),
        pytest.param("tea\ue000", id="private use"),
        pytest.param("tea\u3164", id="hangul filler"),
        pytest.param("te\u034fa", id="combining grapheme joiner"),
    ],
)
def test_item_with_format_bidi_or_invisible_characters_is_rejected(item: str) -> None:
    with pytest.raises(InvalidField, match="invisible or bidirectional") as caught:
        domain.parse_order_draft({"item": item, "quantity": 1})
    assert caught.value.field == "item"


def test_every_format_character_is_rejected() -> None:
    format_characters = [chr(cp) for cp in range(0x110000) if unicodedata.category(chr(cp)) == "Cf"]
    assert len(format_characters) > 100
    assert not [char for char in format_characters if domain.is_plain_text(f"a{char}b")]


@pytest.mark.parametrize("item", [None, 1, 1.5, True, ["tea"], {"name": "tea"}])
def test_item_that_is_not_a_string_is_rejected(item: Any) -> None:
    with pytest.raises(InvalidField, match="must be a string"):
        domain.parse_order_draft({"item": item, "quantity": 1})


def test_missing_item_is_rejected() -> None:
    with pytest.raises(InvalidField, match="item is required"):
        domain.parse_order_draft({"quantity": 1})


@pytest.mark.parametrize("quantity", [1, 2, 999, 1000])
def test_quantity_accepts_integers_from_1_to_1000(quantity: int) -> None:
    assert domain.parse_order_draft({"item": "tea", "quantity": quantity}).quantity == quantity


@pytest.mark.parametrize("quantity", [0, -1, 1001, 10**30, -(10**30)])
def test_quantity_outside_1_to_1000_is_rejected(quantity: int) -> None:
    with pytest.raises(InvalidField, match="from 1 to 1000") as caught:
        domain.parse_order_draft({"item": "tea", "quantity": quantity})
    assert caught.value.field == "quantity"


@pytest.mark.parametrize("quantity", [True, False, 1.0, 2.5, "1", None, [1], {"n": 1}])
def test_quantity_that_is_not_an_integer_is_rejected(quantity: Any) -> None:
    with pytest.raises(InvalidField, match="must be an integer") as caught:
        domain.parse_order_draft({"item": "tea", "quantity": quantity})
    assert caught.value.field == "quantity"


def test_missing_quantity_is_rejected() -> None:
    with pytest.raises(InvalidField, match="quantity is required"):
        domain.parse_order_draft({"item": "tea"})


@pytest.mark.parametrize("name", ["owner", "id", "created_at", "price", "Item", ""])
def test_unknown_members_are_rejected_by_name(name: str) -> None:
    with pytest.raises(InvalidField, match="unknown field") as caught:
        domain.parse_order_draft({"item": "tea", "quantity": 1, name: "x"})
    assert caught.value.field == name


def test_a_long_unknown_member_name_is_cut_short_in_the_error() -> None:
    with pytest.raises(InvalidField) as caught:
        domain.parse_order_draft({"x" * 5000: 1})
    assert caught.value.field == "x" * 64
    assert len(caught.value.detail) < 200


def test_unknown_members_are_reported_before_missing_ones() -> None:
    assert field_of({"itme": "tea", "quantity": 1}) == "itme"


def test_validation_errors_are_422_validation_failed() -> None:
    with pytest.raises(ValidationFailed) as caught:
        domain.parse_order_draft({})
    assert (caught.value.status, caught.value.code) == (422, "validation_failed")


def test_new_order_ids_are_32_hex_digits_and_distinct() -> None:
    ids = {domain.new_order_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(order_id) == 32 and domain.is_order_id(order_id) for order_id in ids)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "0" * 31,
        "0" * 33,
        "A" * 32,
        "g" * 32,
        "0" * 32 + "\n",
        "12345678-1234-4234-8234-123456789abc",
        "\u0660" * 32,  # Arabic-Indic digits are digits to \d, not to an id
        "' OR 1=1 --",
    ],
)
def test_text_of_any_other_shape_is_not_an_order_id(text: str) -> None:
    assert not domain.is_order_id(text)


def test_placing_an_order_gives_it_the_owner_id_and_time() -> None:
    order = domain.place_order(OrderDraft("tea", 2), owner="alice", order_id="a" * 32, now=NOW)
    assert order == Order(id="a" * 32, item="tea", quantity=2, owner="alice", created_at=NOW)


def test_placing_an_order_stores_the_time_in_utc() -> None:
    local = NOW.astimezone(timezone(timedelta(hours=-5)))
    order = domain.place_order(OrderDraft("tea", 2), owner="alice", order_id="a" * 32, now=local)
    assert order.created_at == NOW
    assert order.created_at.tzinfo is UTC


def test_placing_an_order_with_a_naive_time_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        domain.place_order(OrderDraft("tea", 2), owner="alice", order_id="a" * 32, now=datetime(2025, 1, 1))


def test_an_order_document_has_exactly_the_public_shape() -> None:
    order = domain.place_order(OrderDraft("tea", 2), owner="alice", order_id="b" * 32, now=NOW)
    assert msgspec.structs.asdict(order.to_document()) == {
        "id": "b" * 32,
        "item": "tea",
        "quantity": 2,
        "owner": "alice",
        "created_at": "2025-01-31T12:00:00.123456Z",
    }
    assert msgspec.json.decode(msgspec.json.encode(order.to_document())) == msgspec.structs.asdict(
        order.to_document()
    )


def test_timestamps_round_trip_and_sort_as_text() -> None:
    earlier, later = NOW.replace(microsecond=0), NOW + timedelta(days=400)
    assert domain.parse_timestamp(domain.format_timestamp(earlier)) == earlier
    assert domain.format_timestamp(earlier) < domain.format_timestamp(later)
    assert datetime.fromisoformat(domain.format_timestamp(NOW)) == NOW


@pytest.mark.parametrize("role", ["user", "admin", None])
def test_a_listing_shows_the_callers_own_orders_by_default(role: str | None) -> None:
    assert domain.listing_owner(claims("alice", role), want_all=False) == "alice"


def test_an_admin_may_list_everyones_orders() -> None:
    assert domain.listing_owner(claims("root", "admin"), want_all=True) is None


@pytest.mark.parametrize("role", ["user", None, "Admin", "administrator"])
def test_anyone_but_an_admin_asking_for_all_orders_is_forbidden(role: str | None) -> None:
    with pytest.raises(Forbidden):
        domain.listing_owner(claims("alice", role), want_all=True)


def test_the_owner_may_read_their_order() -> None:
    order = an_order("alice").to_document()
    assert domain.readable_order(order, claims("alice")) is order


@pytest.mark.parametrize("reader", [claims("bob"), claims("root", "admin"), claims("Alice")])
def test_someone_elses_order_reads_as_not_found(reader: AccessClaims) -> None:
    with pytest.raises(NotFound) as other:
        domain.readable_order(an_order("alice").to_document(), reader)
    with pytest.raises(NotFound) as missing:
        domain.readable_order(None, reader)
    assert other.value.detail == missing.value.detail
