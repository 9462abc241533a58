"""Routes added by configuration (``GATEWAY_ROUTES``): a new upstream without a code change.

Each entry reads ``PREFIX=UPSTREAM[/PATH]@AUDIENCE``, entries separated by commas, e.g.
``/api/invoices=invoices/invoices@invoices``: requests under ``/api/invoices`` go to upstream
``invoices`` (its origins in ``INVOICES_URL``) with the prefix replaced by ``/invoices``, after the
gateway verifies a bearer token for audience ``invoices``. Added routes come after the built-in
table, and may neither shadow one of its routes nor be shadowed by one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from services.gateway.domain import Route
from shared.core import SettingsError

VARIABLE = "GATEWAY_ROUTES"

# Plain path segments only: nothing a client could spell two ways, nothing that needs escaping.
_PATH = r"(?:/[A-Za-z0-9._~-]+)+"
_ENTRY = re.compile(
    rf"(?P<prefix>{_PATH})=(?P<upstream>[a-z][a-z0-9_]*)(?P<path>{_PATH})?@(?P<audience>[a-z][a-z0-9._-]*)"
)

# Paths the gateway answers itself, ahead of the route table: a route under one would never match.
RESERVED_PREFIXES = ("/static", "/openapi.json", "/healthz", "/readyz", "/metrics", "/forward-auth")


def _has_dot_segment(path: str) -> bool:
    return any(segment in (".", "..") for segment in path.split("/"))


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def parse_routes(raw: str, table: Sequence[Route]) -> tuple[Route, ...]:
    """The routes ``raw`` adds after ``table``; :class:`SettingsError` names the entry at fault.

    Every added route requires a token: the public routes (login, the JWKS) are built in, and a
    route without an audience would hand its upstream the session cookie.
    """
    added: list[Route] = []
    for entry in (item.strip() for item in raw.split(",")):
        if not entry:
            continue
        match = _ENTRY.fullmatch(entry)
        if match is None or _has_dot_segment(match["prefix"]) or _has_dot_segment(match["path"] or ""):
            raise SettingsError(
                f"{VARIABLE}: {entry!r} is not PREFIX=UPSTREAM[/PATH]@AUDIENCE "
                "(e.g. /api/invoices=invoices/invoices@invoices)"
            )
        route = Route(
            prefix=match["prefix"],
            upstream=match["upstream"],
            upstream_prefix=match["path"] or "",
            audience=match["audience"],
        )
        for reserved in RESERVED_PREFIXES:
            if _under(route.prefix, reserved):
                raise SettingsError(
                    f"{VARIABLE}: {route.prefix} lies under {reserved}, which the gateway serves"
                )
        for earlier in (*table, *added):
            # First match wins, so a route under an earlier prefix would never be reached.
            if _under(route.prefix, earlier.prefix):
                raise SettingsError(f"{VARIABLE}: {route.prefix} is already routed by {earlier.prefix}")
        added.append(route)
    return tuple(added)
