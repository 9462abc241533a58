"""The gateway's CORS rules, pure: which origins the setting accepts, and what each request is answered."""

from __future__ import annotations

import pytest

from services.gateway.cors import (
    ALLOWED_REQUEST_HEADERS,
    CorsMiddleware,
    CorsPolicy,
    cors_request,
    parse_origin,
    without_cors_headers,
)
from services.gateway.routes import PROXIED_METHODS
from services.gateway.settings import GatewaySettings
from shared.core import SettingsError

APP = "https://app.example.com"
POLICY = CorsPolicy([APP], methods=PROXIED_METHODS, max_age=600)


@pytest.mark.parametrize(
    ("value", "origin"),
    [
        ("https://app.example.com", "https://app.example.com"),
        ("https://app.example.com/", "https://app.example.com"),
        ("HTTPS://App.Example.COM", "https://app.example.com"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("http://app.example.com:80", "http://app.example.com"),
        ("http://localhost:5173", "http://localhost:5173"),
        ("https://app.example.com:8443", "https://app.example.com:8443"),
        ("http://[::1]:9000", "http://[::1]:9000"),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
    ],
)
def test_an_origin_is_written_as_a_browser_sends_it(value: str, origin: str) -> None:
    assert parse_origin(value) == origin


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("*", "wildcard"),
        ("https://*.example.com", "wildcard"),
        ("null", "sandboxed"),
        ("app.example.com", "not an http\\(s\\) origin"),
        ("ftp://app.example.com", "not an http\\(s\\) origin"),
        ("https://", "not an http\\(s\\) origin"),
        ("https://app.example.com/app", "no path"),
        ("https://app.example.com?x=1", "no path"),
        ("https://app.example.com#top", "no path"),
        ("https://user:pw@app.example.com", "no path"),
        ("https://bücher.example", "xn--"),
        ("https://app example.com", "xn--"),
        ("https://app.example.com:99999", "invalid port"),
        ("https://app.example.com:0", "invalid port"),
        ("https://app.example.com:x", "invalid port"),
    ],
)
def test_anything_but_an_exact_origin_is_refused_with_the_reason(value: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_origin(value)


def test_cors_is_off_by_default_with_a_bounded_preflight_cache() -> None:
    settings = GatewaySettings.from_env({})

    assert settings.cors_allowed_origins == ()
    assert settings.cors_max_age == 600


def test_the_setting_reads_a_comma_list_of_origins_each_once() -> None:
    settings = GatewaySettings.from_env(
        {
            "CORS_ALLOWED_ORIGINS": "https://app.example.com, HTTPS://APP.example.com:443,http://localhost:5173",
            "CORS_MAX_AGE_SECONDS": "7200",
        }
    )

    assert settings.cors_allowed_origins == ("https://app.example.com", "http://localhost:5173")
    assert settings.cors_max_age == 7200


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"CORS_ALLOWED_ORIGINS": "*"}, "CORS_ALLOWED_ORIGINS: '\\*': a wildcard"),
        (
            {"CORS_ALLOWED_ORIGINS": "https://app.example.com,https://app.example.com/x"},
            "CORS_ALLOWED_ORIGINS",
        ),
        ({"CORS_ALLOWED_ORIGINS": " , "}, "CORS_ALLOWED_ORIGINS must list"),
        ({"CORS_MAX_AGE_SECONDS": "7201"}, "CORS_MAX_AGE_SECONDS"),
        ({"CORS_MAX_AGE_SECONDS": "-1"}, "CORS_MAX_AGE_SECONDS"),
        ({"CORS_MAX_AGE_SECONDS": "ten"}, "CORS_MAX_AGE_SECONDS"),
    ],
)
def test_a_bad_setting_stops_the_gateway_naming_the_variable(environ: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        GatewaySettings.from_env(environ)


def test_an_allowed_origin_gets_its_own_origin_back_and_only_the_token_and_json_headers() -> None:
    headers = dict(POLICY.preflight_headers(APP.encode()) or [])

    assert headers[b"access-control-allow-origin"] == APP.encode()
    assert headers[b"access-control-allow-methods"] == b"GET, HEAD, POST, PUT, PATCH, DELETE"
    assert (
        headers[b"access-control-allow-headers"] == ALLOWED_REQUEST_HEADERS == b"Authorization, Content-Type"
    )
    assert headers[b"access-control-max-age"] == b"600"
    assert headers[b"vary"].split(b", ")[0] == b"Origin"
    assert not any(b"credentials" in name for name in headers)


@pytest.mark.parametrize(
    "origin",
    [
        b"https://evil.example",
        b"https://app.example.com.evil.example",
        b"https://APP.example.com",
        b"null",
        b"*",
    ],
)
def test_any_other_origin_gets_no_approval(origin: bytes) -> None:
    assert POLICY.preflight_headers(origin) is None
    assert POLICY.response_headers(origin) == [(b"vary", b"Origin")]


def test_an_answer_to_an_allowed_origin_names_it_and_exposes_the_challenge() -> None:
    headers = dict(POLICY.response_headers(APP.encode()))

    assert headers[b"access-control-allow-origin"] == APP.encode()
    assert b"WWW-Authenticate" in headers[b"access-control-expose-headers"]
    assert headers[b"vary"] == b"Origin"
    assert not any(b"credentials" in name for name in headers)


def test_an_answer_without_an_origin_still_varies_on_it() -> None:
    assert POLICY.response_headers(None) == [(b"vary", b"Origin")]


def test_a_preflight_is_an_origin_with_a_requested_method() -> None:
    assert cors_request([(b"origin", APP.encode()), (b"access-control-request-method", b"GET")]) == (
        APP.encode(),
        True,
    )
    assert cors_request([(b"origin", APP.encode())]) == (APP.encode(), False)
    assert cors_request([(b"access-control-request-method", b"GET")]) == (None, True)


def test_an_upstreams_own_cors_headers_are_dropped() -> None:
    upstream = [
        (b"content-type", b"application/json"),
        (b"Access-Control-Allow-Origin", b"*"),
        (b"access-control-allow-credentials", b"true"),
    ]

    assert without_cors_headers(upstream) == [(b"content-type", b"application/json")]


@pytest.mark.parametrize(
    ("path", "api"),
    [
        (b"/api/orders", True),
        (b"/api/orders/", True),
        (b"/api/orders/7", True),
        (b"/api/invoices/7", True),
        (b"/api/ordersX", False),
        (b"/api", False),
        (b"/auth/token", False),
        (b"/auth/me", False),
        (b"/.well-known/jwks.json", False),
        (b"/", False),
        (b"/static/app.js", False),
        (b"/openapi.json", False),
        (b"/forward-auth/orders", False),
    ],
)
def test_only_paths_under_an_audience_prefix_are_api_paths(path: bytes, api: bool) -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not called")

    middleware = CorsMiddleware(app, policy=POLICY, prefixes=["/api/orders", "/api/invoices"])

    assert middleware.is_api_path(path) is api
