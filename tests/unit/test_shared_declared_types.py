"""``shared.core.api``: one msgspec type per body or query gives the strict validation and its OpenAPI."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest
from starlette.datastructures import QueryParams

from shared.core import InvalidField, query_as, query_parameters, schema_components, schema_ref, validate_as


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


class Query(msgspec.Struct, kw_only=True):
    """A query string."""

    flag: Annotated[bool, msgspec.Meta(description="A switch.")] = False
    size: Annotated[int, msgspec.Meta(ge=1, le=50)] = 10
    token: Annotated[str, msgspec.Meta(max_length=8)] | None = None


def read_query(pairs: list[tuple[str, str]]) -> Query:
    return query_as(QueryParams(pairs), Query)


def refused_query(pairs: list[tuple[str, str]]) -> InvalidField:
    with pytest.raises(InvalidField) as caught:
        read_query(pairs)
    return caught.value


def test_an_empty_query_is_the_declared_defaults() -> None:
    assert read_query([]) == Query()


def test_query_values_become_their_declared_types() -> None:
    assert read_query([("flag", "true"), ("size", "50"), ("token", "abc")]) == Query(
        flag=True, size=50, token="abc"
    )


@pytest.mark.parametrize("size", ["05", "+5", " 5", "5 ", "1e1", "0x10", "٣", "", "ten", "9" * 30])
def test_a_query_integer_is_plain_decimal_only(size: str) -> None:
    assert refused_query([("size", size)]).field == "size"


@pytest.mark.parametrize("size", ["0", "51", "-3"])
def test_a_query_integer_out_of_bounds_names_the_bounds(size: str) -> None:
    assert refused_query([("size", size)]).detail == "size must be from 1 to 50"


@pytest.mark.parametrize("flag", ["1", "0", "True", "yes", ""])
def test_a_query_boolean_is_true_or_false_only(flag: str) -> None:
    assert refused_query([("flag", flag)]).detail == "flag must be true or false"


def test_a_repeated_query_parameter_is_refused() -> None:
    assert refused_query([("size", "5"), ("size", "5")]).detail == "size must be given at most once"


def test_a_query_string_over_its_length_is_refused() -> None:
    assert refused_query([("token", "x" * 9)]).detail == "token must be at most 8 characters"


def test_parameters_the_type_does_not_declare_are_ignored() -> None:
    assert read_query([("_", "123"), ("size", "3")]) == Query(size=3)


def test_query_parameters_are_published_from_the_same_type() -> None:
    flag, size, token = query_parameters(Query)
    assert flag == {
        "name": "flag",
        "in": "query",
        "required": False,
        "description": "A switch.",
        "schema": {"type": "boolean", "default": False},
    }
    assert size["schema"] == {"type": "integer", "minimum": 1, "maximum": 50, "default": 10}
    assert token["schema"] == {"type": "string", "maxLength": 8}


class Texts(msgspec.Struct, forbid_unknown_fields=True):
    """Strings with length limits, some also carrying schema extras (a ``Metadata`` wrapper)."""

    both: Annotated[str, msgspec.Meta(min_length=2, max_length=5)] = "ab"
    longest: Annotated[str, msgspec.Meta(max_length=5)] = ""
    shortest: Annotated[str, msgspec.Meta(min_length=2)] = "ab"
    masked: Annotated[
        str, msgspec.Meta(min_length=2, max_length=5, extra_json_schema={"format": "password"})
    ] = "ab"
    described: Annotated[int, msgspec.Meta(ge=1, le=3, description="A small count.")] = 1


@pytest.mark.parametrize(
    ("field", "value", "detail"),
    [
        ("both", "a", "both must be 2 to 5 characters"),
        ("both", "abcdef", "both must be 2 to 5 characters"),
        ("longest", "abcdef", "longest must be at most 5 characters"),
        ("shortest", "a", "shortest must be at least 2 characters"),
        ("masked", "", "masked must be 2 to 5 characters"),
        ("described", 4, "described must be from 1 to 3"),
    ],
)
def test_a_length_or_bound_is_named_in_words_also_under_schema_extras(
    field: str, value: Any, detail: str
) -> None:
    with pytest.raises(InvalidField) as caught:
        validate_as({field: value}, Texts)
    assert (caught.value.field, caught.value.detail) == (field, detail)
