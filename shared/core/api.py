"""Endpoint types declared once: a msgspec Struct both validates a request body and describes it.

A service declares each body and response as a ``msgspec.Struct`` (constraints as
``msgspec.Meta``, ``forbid_unknown_fields=True`` for requests, rules msgspec cannot state in
``__post_init__`` raising :class:`InvalidField`). :func:`validate_as` turns a strictly decoded JSON
object into that type, or a 422 naming the first wrong field; :func:`schema_components` gives
the JSON Schemas for the OpenAPI document from the same types.

The JSON itself is decoded first by ``read_json_object`` (``shared.core.tokens.loads_strict``),
because msgspec keeps the last of duplicate keys where this project refuses them, and a body
that is not an object is a 400, not a 422.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

import msgspec
import msgspec.inspect

from shared.core.errors import ValidationFailed

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


_INTEGER = re.compile(r"-?(0|[1-9][0-9]{0,17})")
_BOOLEANS = {"true": True, "false": False}
_FIELDS: dict[type[Any], tuple[msgspec.inspect.Field, ...]] = {}


class MultiValued(Protocol):
    """Query parameters as Starlette's ``QueryParams`` holds them: every value of a name."""

    def getlist(self, key: Any) -> list[str]: ...


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


def query_as(query: MultiValued, type_: type[T]) -> T:
    """The query parameters ``type_`` declares, as ``type_``; else :class:`InvalidField`.

    Each parameter at most once. An integer is written in plain decimal (no ``+``, spaces,
    leading zeros or exponent) and a boolean as ``true`` or ``false``; then the declared
    constraints apply as for a body. Parameters the type does not declare are ignored, as HTTP
    servers do (a cache-busting ``?_=123`` must not fail a request).
    """
    document: dict[str, Any] = {}
    for field in _fields(type_):
        name = field.encode_name
        values = query.getlist(name)
        if len(values) > 1:
            raise InvalidField(name, f"{name} must be given at most once")
        if values:
            document[name] = _scalar(name, values[0], field.type)
    return validate_as(document, type_)


def query_parameters(type_: type[Any]) -> list[dict[str, Any]]:
    """The OpenAPI ``parameters`` (``in: query``) that :func:`query_as` reads into ``type_``."""
    properties = schema_components(type_)[type_.__name__]["properties"]
    parameters = []
    for field in _fields(type_):
        schema = dict(properties[field.encode_name])
        # An absent parameter is how a query says None: publish only the type it may hold.
        present = [option for option in schema.get("anyOf", ()) if option.get("type") != "null"]
        if len(present) == 1 and len(schema["anyOf"]) == 2:
            schema = dict(present[0])
        description = schema.pop("description", None)
        parameter = {"name": field.encode_name, "in": "query", "required": field.required, "schema": schema}
        if description is not None:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


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


def _fields(type_: type[Any]) -> tuple[msgspec.inspect.Field, ...]:
    # Once per type: msgspec.inspect takes about half a millisecond, on every listing otherwise.
    fields = _FIELDS.get(type_)
    if fields is None:
        fields = _FIELDS[type_] = tuple(getattr(msgspec.inspect.type_info(type_), "fields", ()))
    return fields


def _scalar(name: str, text: str, kind: msgspec.inspect.Type) -> object:
    """One query value as the JSON value it stands for, so the body rules can judge it."""
    kind = _base(kind)
    if isinstance(kind, msgspec.inspect.IntType):
        if not _INTEGER.fullmatch(text):
            raise InvalidField(name, f"{name} must be a whole number written in plain decimal")
        return int(text)
    if isinstance(kind, msgspec.inspect.BoolType):
        if text not in _BOOLEANS:
            raise InvalidField(name, f"{name} must be true or false")
        return _BOOLEANS[text]
    return text


def _base(kind: msgspec.inspect.Type) -> msgspec.inspect.Type:
    """``kind`` without its annotations, and without ``| None`` when that is all it adds."""
    if isinstance(kind, msgspec.inspect.UnionType):
        kinds = [option for option in kind.types if not isinstance(option, msgspec.inspect.NoneType)]
        kind = kinds[0] if len(kinds) == 1 else kind
    while isinstance(kind, msgspec.inspect.Metadata):
        kind = kind.type
    return kind


def _names(type_: type[Any]) -> str:
    fields = [field.encode_name for field in _fields(type_)]
    return " and ".join([", ".join(fields[:-1]), fields[-1]] if len(fields) > 1 else fields)


def _bounds(type_: type[Any], name: str) -> str:
    """What a field's constraints ask for, in words: ``from 1 to 1000``, ``12 to 1024 characters``."""
    for field in _fields(type_):
        if field.encode_name != name:
            continue
        kind = _base(field.type)
        if isinstance(kind, msgspec.inspect.IntType):
            low, high = kind.ge, kind.le
            if low is not None and high is not None:
                return f"from {low} to {high}"
            if low is not None:
                return f"at least {low}"
            if high is not None:
                return f"at most {high}"
        if isinstance(kind, msgspec.inspect.StrType):
            shortest, longest = kind.min_length, kind.max_length
            if shortest and longest is not None:
                return f"{shortest} to {longest} characters"
            if longest is not None:
                return f"at most {longest} characters"
            if shortest:
                return f"at least {shortest} characters"
    return "within its documented limits"
