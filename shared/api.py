"""Endpoint types declared once: a msgspec Struct both validates a request body and describes it.

A service declares each body and response as a ``msgspec.Struct`` (constraints as
``msgspec.Meta``, ``forbid_unknown_fields=True`` for requests, rules msgspec cannot state in
``__post_init__`` raising :class:`InvalidField`). :func:`validate_as` turns a strictly decoded JSON
object into that type, or a 422 naming the first wrong field; :func:`schema_components` gives
the JSON Schemas for the OpenAPI document from the same types.

The JSON itself is decoded first by ``read_json_object`` (``shared.tokens.loads_strict``),
because msgspec keeps the last of duplicate keys where this project refuses them, and a body
that is not an object is a 400, not a 422.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
import msgspec.inspect

from shared.errors import ValidationFailed

T = TypeVar("T")

SCHEMA_REF_TEMPLATE = "#/components/schemas/{name}"
# Field names come from the client: an unknown one is echoed back at most this long.
MAX_FIELD_NAME_ECHO = 64

_MISSING = re.compile(r"Object missing required field `(?P<field>.*)`", re.DOTALL)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>.*)`", re.DOTALL)
_WRONG_TYPE = re.compile(
    r"Expected `(?P<expected>[^`]+)`, got `[^`]+` - at `\$\.(?P<field>[^`]+)`", re.DOTALL
)
_AT_FIELD = re.compile(r".* - at `\$\.(?P<field>[^`]+)`", re.DOTALL)
_KINDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "object": "an object",
    "array": "an array",
    "null": "null",
}


class InvalidField(ValidationFailed):
    """A 422 whose ``field`` names the part of the request that is wrong."""

    def __init__(self, field: str, detail: str):
        super().__init__(detail)
        self.field = field


def validate_as(document: Mapping[str, Any], type_: type[T]) -> T:
    """``document``, a JSON object decoded strictly, as ``type_``; else :class:`InvalidField`.

    Strict: no coercion (``"2"``, ``2.0`` and ``true`` are not integers), unknown fields refused
    when the type forbids them, every ``msgspec.Meta`` constraint checked.
    """
    try:
        return msgspec.convert(document, type_, strict=True)
    except msgspec.ValidationError as exc:
        raise _invalid_field(str(exc), type_) from None


def schema_components(*types: type[Any]) -> dict[str, Any]:
    """The JSON Schemas of ``types`` and of every type they use, by name (``components.schemas``)."""
    _, components = msgspec.json.schema_components(types, ref_template=SCHEMA_REF_TEMPLATE)
    return components


def schema_ref(type_: type[Any]) -> dict[str, str]:
    """A ``$ref`` to ``type_`` among :func:`schema_components`."""
    return {"$ref": SCHEMA_REF_TEMPLATE.format(name=type_.__name__)}


def _invalid_field(message: str, type_: type[Any]) -> InvalidField:
    if match := _MISSING.fullmatch(message):
        field = match["field"]
        return InvalidField(field, f"{field} is required")
    if match := _UNKNOWN.fullmatch(message):
        field = match["field"][:MAX_FIELD_NAME_ECHO]
        return InvalidField(field, f"unknown field {field!r}: send only {_names(type_)}")
    if match := _WRONG_TYPE.fullmatch(message):
        field, expected = match["field"], match["expected"]
        return InvalidField(field, f"{field} must be {_KINDS.get(expected, expected)}")
    if match := _AT_FIELD.fullmatch(message):
        field = match["field"]
        return InvalidField(field, f"{field} must be {_bounds(type_, field)}")
    return InvalidField("body", message)


def _names(type_: type[Any]) -> str:
    info = msgspec.inspect.type_info(type_)
    fields = [field.encode_name for field in getattr(info, "fields", ())]
    return " and ".join([", ".join(fields[:-1]), fields[-1]] if len(fields) > 1 else fields)


def _bounds(type_: type[Any], name: str) -> str:
    """What a field's constraints ask for, in words: ``from 1 to 1000``."""
    info = msgspec.inspect.type_info(type_)
    for field in getattr(info, "fields", ()):
        if field.encode_name == name and isinstance(field.type, msgspec.inspect.IntType):
            low, high = field.type.ge, field.type.le
            if low is not None and high is not None:
                return f"from {low} to {high}"
            if low is not None:
                return f"at least {low}"
            if high is not None:
                return f"at most {high}"
    return "within its documented limits"
