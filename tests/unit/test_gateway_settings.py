"""Gateway settings: the upstreams are the route table's, each with its origins in ``<NAME>_URL``."""

from __future__ import annotations

import dataclasses

import pytest

from services.gateway.domain import ROUTE_TABLE, Route
from services.gateway.settings import OPENAPI_CACHE_SECONDS, OPENAPI_MAX_BYTES, GatewaySettings, url_variable
from shared.core import SettingsError

BILLING = Route(prefix="/api/billing", upstream="billing", upstream_prefix="/billing", audience="billing")
WITH_BILLING = (*ROUTE_TABLE, BILLING)


def test_the_upstreams_are_the_ones_the_route_table_names_in_table_order() -> None:
    settings = GatewaySettings.from_env({})

    assert [name for name, _ in settings.upstreams] == ["auth", "orders"]
    assert url_variable("auth") == "AUTH_URL"


def test_a_new_upstream_is_a_row_in_the_table_and_its_url_variable() -> None:
    settings = GatewaySettings.from_env(
        {"BILLING_URL": "http://127.0.0.1:8003", "UPSTREAM_BILLING_MAX_CONNECTIONS": "5"}, WITH_BILLING
    )

    assert settings.upstream_urls()["billing"] == ("http://127.0.0.1:8003",)
    assert settings.max_connections_for("billing") == 5
    assert settings.upstream_urls()["auth"] == ("http://127.0.0.1:8001",)


def test_a_new_upstream_without_its_url_fails_fast_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="BILLING_URL is required"):
        GatewaySettings.from_env({}, WITH_BILLING)


def test_a_new_upstreams_url_is_checked_like_the_others() -> None:
    with pytest.raises(SettingsError, match="BILLING_URL must be an origin"):
        GatewaySettings.from_env({"BILLING_URL": "http://127.0.0.1:8003/billing"}, WITH_BILLING)


def test_the_settings_stay_frozen() -> None:
    settings = GatewaySettings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.upstreams = ()  # type: ignore[misc]


def test_the_description_cache_and_cap_have_defaults_and_are_read_by_name() -> None:
    default = GatewaySettings.from_env({})
    tuned = GatewaySettings.from_env({"OPENAPI_CACHE_SECONDS": "5", "OPENAPI_MAX_BYTES": "4096"})

    assert (default.openapi_cache_seconds, default.openapi_max_bytes) == (
        OPENAPI_CACHE_SECONDS,
        OPENAPI_MAX_BYTES,
    )
    assert (tuned.openapi_cache_seconds, tuned.openapi_max_bytes) == (5.0, 4096)


@pytest.mark.parametrize(
    ("variable", "value"), [("OPENAPI_CACHE_SECONDS", "-1"), ("OPENAPI_MAX_BYTES", "10")]
)
def test_a_bad_description_limit_is_refused_by_name(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        GatewaySettings.from_env({variable: value})
