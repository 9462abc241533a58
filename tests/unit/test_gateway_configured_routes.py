"""``GATEWAY_ROUTES`` and the forward-auth settings: read by name, checked before anything starts."""

from __future__ import annotations

import ipaddress

import pytest

from services.gateway.configured_routes import parse_routes
from services.gateway.domain import ROUTE_TABLE, Route, resolve
from services.gateway.settings import GatewaySettings
from shared.core import SettingsError

INVOICES = Route(
    prefix="/api/invoices", upstream="invoices", upstream_prefix="/invoices", audience="invoices"
)


def test_without_gateway_routes_the_table_is_the_built_in_one() -> None:
    settings = GatewaySettings.from_env({})

    assert settings.routes == ROUTE_TABLE
    assert settings.audiences() == ("orders",)


def test_a_configured_route_is_added_after_the_built_in_ones_with_its_upstream() -> None:
    settings = GatewaySettings.from_env(
        {
            "GATEWAY_ROUTES": "/api/invoices=invoices/invoices@invoices",
            "INVOICES_URL": "http://127.0.0.1:8003,http://127.0.0.1:8004",
        }
    )

    assert settings.routes == (*ROUTE_TABLE, INVOICES)
    assert settings.upstream_urls()["invoices"] == ("http://127.0.0.1:8003", "http://127.0.0.1:8004")
    assert settings.audiences() == ("orders", "invoices")
    assert resolve("/api/invoices/7", settings.routes).path == "/invoices/7"


def test_several_routes_without_an_upstream_path_strip_the_prefix() -> None:
    routes = parse_routes(" /api/a=alpha@alpha , /wiki=wiki@wiki ,", ROUTE_TABLE)

    assert routes == (Route("/api/a", "alpha", "", "alpha"), Route("/wiki", "wiki", "", "wiki"))
    assert resolve("/wiki/page", (*ROUTE_TABLE, *routes)).path == "/page"


def test_a_configured_routes_upstream_needs_its_url() -> None:
    with pytest.raises(SettingsError, match="INVOICES_URL is required"):
        GatewaySettings.from_env({"GATEWAY_ROUTES": "/api/invoices=invoices/invoices@invoices"})


@pytest.mark.parametrize(
    "entry",
    [
        "/api/invoices=invoices/invoices",  # no audience: it would be handed the session cookie
        "api/invoices=invoices@invoices",
        "/api/invoices/=invoices@invoices",
        "/api/../admin=invoices@invoices",
        "/api/%2e%2e=invoices@invoices",
        "/api/invoices=Invoices@invoices",
        "/api/invoices=invoices/invoices@",
        "/api/invoices invoices@invoices",
        "=invoices@invoices",
    ],
)
def test_a_malformed_entry_fails_fast_naming_the_variable_and_the_entry(entry: str) -> None:
    with pytest.raises(SettingsError, match=r"GATEWAY_ROUTES: .* is not PREFIX=UPSTREAM"):
        GatewaySettings.from_env({"GATEWAY_ROUTES": entry, "INVOICES_URL": "http://127.0.0.1:8003"})


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("/api/orders=invoices@invoices", "already routed by /api/orders"),
        ("/auth/invoices=invoices@invoices", "already routed by /auth"),
        ("/api/x=invoices@invoices,/api/x/y=invoices@invoices", "already routed by /api/x"),
        ("/static/x=invoices@invoices", "lies under /static"),
        ("/forward-auth=invoices@invoices", "lies under /forward-auth"),
        ("/readyz=invoices@invoices", "lies under /readyz"),
    ],
)
def test_a_route_that_would_never_be_reached_is_refused(entry: str, reason: str) -> None:
    with pytest.raises(SettingsError, match=reason):
        GatewaySettings.from_env({"GATEWAY_ROUTES": entry, "INVOICES_URL": "http://127.0.0.1:8003"})


def test_a_wider_prefix_after_a_narrower_one_is_allowed() -> None:
    routes = parse_routes("/api=catchall@catchall", ROUTE_TABLE)

    table = (*ROUTE_TABLE, *routes)
    assert resolve("/api/orders/1", table).route.upstream == "orders"
    assert resolve("/api/other", table).route.upstream == "catchall"


def test_forward_auth_is_off_by_default_and_asked_only_from_loopback() -> None:
    settings = GatewaySettings.from_env({})

    assert settings.forward_auth_audiences == ()
    assert settings.forward_auth_allowed_from == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )


def test_forward_auth_audiences_get_verifiers_of_their_own_or_share_the_routes() -> None:
    settings = GatewaySettings.from_env(
        {"FORWARD_AUTH_AUDIENCES": "wiki, orders,wiki", "FORWARD_AUTH_ALLOWED_FROM": "10.0.0.0/8"}
    )

    assert settings.forward_auth_audiences == ("wiki", "orders")
    assert settings.audiences() == ("orders", "wiki")
    assert settings.forward_auth_allowed_from == (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"FORWARD_AUTH_AUDIENCES": "Wiki"}, "FORWARD_AUTH_AUDIENCES: 'Wiki' is not an audience name"),
        ({"FORWARD_AUTH_AUDIENCES": "wi/ki"}, "FORWARD_AUTH_AUDIENCES: 'wi/ki' is not an audience name"),
        ({"FORWARD_AUTH_ALLOWED_FROM": "nginx"}, "FORWARD_AUTH_ALLOWED_FROM: 'nginx' is not an IP"),
    ],
)
def test_malformed_forward_auth_settings_fail_fast_naming_the_variable(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        GatewaySettings.from_env(environ)
