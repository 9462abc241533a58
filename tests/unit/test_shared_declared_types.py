"""``shared.api``: one msgspec type per body gives both the strict validation and the JSON Schema."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest

from shared import InvalidField, schema_components, schema_ref, validate_as


class Child(msgspec.Struct, forbid_unknown_fields=True):
    """A nested value."""

    name: str


class Body(msgspec.Struct, forbid_unknown_fields=True):
    """A request body."""

    count: Annotated[int, msgspec.Meta(ge=1, le=10)]
    label: str
    child: Child | None = None

    def __post_init__(self) -> None:
        if self.label == "forbidden":
            raise InvalidField("label", "label may not be 'forbidden'")


def refused(document: dict[str, Any]) -> InvalidField:
    with pytest.raises(InvalidField) as caught:
        validate_as(document, Body)
    return caught.value


def test_a_valid_document_becomes_the_type() -> None:
    assert validate_as({"count": 3, "label": "x"}, Body) == Body(count=3, label="x")


@pytest.mark.parametrize("count", ["3", 3.0, True, None, [3]])
def test_nothing_is_coerced_into_an_integer(count: Any) -> None:
    error = refused({"count": count, "label": "x"})
    assert error.field == "count"
    assert error.status == 422


def test_a_wrong_type_says_what_was_expected() -> None:
    assert refused({"count": "3", "label": "x"}).detail == "count must be an integer"
    assert refused({"count": 3, "label": 7}).detail == "label must be a string"


@pytest.mark.parametrize("count", [0, 11, -1, 10**40])
def test_a_value_out_of_bounds_names_the_bounds(count: int) -> None:
    error = refused({"count": count, "label": "x"})
    assert (error.field, error.detail) == ("count", "count must be from 1 to 10")


def test_a_missing_field_is_named() -> None:
    error = refused({"label": "x"})
    assert (error.field, error.detail) == ("count", "count is required")


def test_an_unknown_field_is_refused_and_named_at_most_64_characters_long() -> None:
    error = refused({"count": 1, "label": "x", "owner": "bob"})
    assert error.field == "owner"
    assert "unknown field 'owner'" in error.detail
    long = refused({"count": 1, "label": "x", "a" * 10_000: 1})
    assert long.field == "a" * 64
    assert len(long.detail) < 200


def test_a_nested_field_is_named_by_its_path() -> None:
    assert refused({"count": 1, "label": "x", "child": {"name": 5}}).field == "child.name"


def test_a_rule_raised_after_decoding_keeps_its_own_field_and_words() -> None:
    error = refused({"count": 1, "label": "forbidden"})
    assert (error.field, error.detail) == ("label", "label may not be 'forbidden'")


def test_the_schema_comes_from_the_same_type() -> None:
    schemas = schema_components(Body)
    assert set(schemas) == {"Body", "Child"}
    body = schemas["Body"]
    assert body["additionalProperties"] is False
    assert body["required"] == ["count", "label"]
    assert body["properties"]["count"] == {"type": "integer", "minimum": 1, "maximum": 10}
    assert body["description"] == "A request body."
    assert schema_ref(Child) == {"$ref": "#/components/schemas/Child"}
