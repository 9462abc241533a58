"""The gateway's pure rules: route matching, path safety and which headers cross the gateway."""

from __future__ import annotations

import pytest

from services.gateway import domain
from services.gateway.domain import ROUTE_TABLE, Route
from shared.core import BadRequest, NotFound

AUTH, REVOCATIONS, WELL_KNOWN, ORDERS = ROUTE_TABLE


def header_names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [name for name, _ in headers]


def values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key == name]


@pytest.mark.parametrize(
    ("path", "upstream", "upstream_path"),
    [
        ("/auth/login", "auth", "/login"),
        ("/auth", "auth", "/"),
        ("/auth/", "auth", "/"),
        ("/auth/.well-known/jwks.json", "auth", "/.well-known/jwks.json"),
        ("/.well-known/jwks.json", "auth", "/.well-known/jwks.json"),
        ("/.well-known", "auth", "/.well-known"),
        ("/api/orders", "orders", "/orders"),
        ("/api/orders/", "orders", "/orders/"),
        ("/api/orders/abc", "orders", "/orders/abc"),
        ("/api/orders/a%20b", "orders", "/orders/a%20b"),
    ],
)
def test_route_table_rewrites_the_prefix(path: str, upstream: str, upstream_path: str) -> None:
    target = domain.resolve(path)
    assert (target.route.upstream, target.path) == (upstream, upstream_path)


@pytest.mark.parametrize(
    "path",
    ["/api/ordersX", "/api/orders.json", "/authz", "/auth.json", "/api", "/", "/healthz", "/API/orders"],
)
def test_prefixes_match_only_on_segment_boundaries(path: str) -> None:
    with pytest.raises(NotFound):
        domain.resolve(path)


@pytest.mark.parametrize(
    "path",
    [
        "/auth/healthz",
        "/auth/readyz",
        "/auth/metrics",
        "/auth/metrics/",
        "/auth/metrics/raw",
        "/auth/readyz/",
        "/auth//readyz",
        "/auth/%72eadyz",
        "/auth/ReadyZ",
    ],
)
def test_an_upstreams_health_and_metrics_endpoints_are_not_routed(path: str) -> None:
    with pytest.raises(NotFound):
        domain.resolve(path)


@pytest.mark.parametrize("path", ["/auth/readyzz", "/auth/metricsx", "/auth/me/readyz", "/auth/x/metrics"])
def test_paths_that_merely_resemble_an_internal_endpoint_are_routed(path: str) -> None:
    assert domain.resolve(path).route.upstream == "auth"


def test_internal_paths_apply_to_whatever_upstream_path_a_route_produces() -> None:
    table = (Route("/status", "auth", "", None),)
    assert domain.resolve("/status/live", table).path == "/live"
    with pytest.raises(NotFound):
        domain.resolve("/status/readyz", table)


def test_is_internal_reads_its_rule_from_data() -> None:
    assert domain.is_internal("/admin/users", internal={"/admin"})
    assert not domain.is_internal("/readyz", internal={"/admin"})


@pytest.mark.parametrize(
    "path",
    [
        "/auth/../api/orders",
        "/auth/..",
        "/auth/./login",
        "/api/orders/%2e%2e/%2E%2E/auth/login",
        "/auth/%2e",
        "/auth/x%2F..%2F..%2Fadmin",
        "/api/orders%2fsecret",
        "/auth/..%5c..%5cadmin",
        "/auth/a\\b",
        "/auth/a%00b",
        "/auth/caf\u00e9",
        "/auth/a b",
        "auth/login",
    ],
)
def test_paths_that_could_escape_their_prefix_are_rejected(path: str) -> None:
    with pytest.raises(BadRequest) as caught:
        domain.resolve(path)
    assert caught.value.status == 400
    assert caught.value.code == "invalid_path"


def test_dots_inside_a_segment_are_ordinary_characters() -> None:
    assert domain.resolve("/api/orders/v1..2/a.b").path == "/orders/v1..2/a.b"


def test_the_first_matching_route_wins_so_a_table_can_carve_out_a_subpath() -> None:
    table = (
        Route("/api/orders/public", "orders", "/public", None),
        Route("/api/orders", "orders", "/orders", "orders"),
    )
    assert domain.resolve("/api/orders/public/x", table).route.audience is None
    assert domain.resolve("/api/orders/publicity", table).route.audience == "orders"


def test_audiences_lists_each_audience_once() -> None:
    table = (*ROUTE_TABLE, Route("/api/more-orders", "orders", "/orders", "orders"))
    assert domain.audiences(table) == ("orders",)
    assert domain.audiences(ROUTE_TABLE) == ("orders",)


def test_only_token_free_routes_carry_cookies() -> None:
    assert AUTH.forwards_cookies
    assert WELL_KNOWN.forwards_cookies
    assert ORDERS.audience == "orders"
    assert not ORDERS.forwards_cookies


def forward(headers: list[tuple[bytes, bytes]], route: Route = AUTH) -> list[tuple[bytes, bytes]]:
    return domain.upstream_request_headers(
        headers, route, upstream_host=b"127.0.0.1:8001", client_ip=b"198.51.100.7", scheme=b"https"
    )


def test_spoofed_identity_headers_are_dropped_and_forwarded_headers_replaced() -> None:
    sent = forward(
        [
            (b"host", b"gateway.example"),
            (b"x-user-id", b"admin"),
            (b"X-User-Role", b"admin"),
            (b"x-auth-request-user", b"admin"),
            (b"x-forwarded-for", b"10.0.0.1"),
            (b"x-forwarded-host", b"evil.example"),
            (b"x-forwarded-proto", b"http"),
            (b"forwarded", b"for=10.0.0.1"),
            (b"x-real-ip", b"10.0.0.1"),
            (b"x-client-ip", b"10.0.0.1"),
            (b"x-original-url", b"/admin"),
            (b"x-rewrite-url", b"/admin"),
            (b"accept", b"application/json"),
        ]
    )
    assert sent == [
        (b"accept", b"application/json"),
        (b"host", b"127.0.0.1:8001"),
        (b"x-forwarded-for", b"198.51.100.7"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"gateway.example"),
    ]


def test_authorization_and_request_id_pass_unchanged() -> None:
    sent = forward(
        [(b"authorization", b"Bearer a.b.c"), (b"x-request-id", b"abc-123"), (b"host", b"gw")], ORDERS
    )
    assert values(sent, b"authorization") == [b"Bearer a.b.c"]
    assert values(sent, b"x-request-id") == [b"abc-123"]


def test_hop_by_hop_and_framing_request_headers_and_those_connection_names_are_dropped() -> None:
    sent = forward(
        [
            (b"connection", b"keep-alive, X-Hop"),
            (b"Connection", b"Upgrade"),
            (b"x-hop", b"secret"),
            (b"keep-alive", b"timeout=5"),
            (b"proxy-authorization", b"Basic eA=="),
            (b"proxy-connection", b"keep-alive"),
            (b"te", b"trailers"),
            (b"trailer", b"x-checksum"),
            (b"transfer-encoding", b"chunked"),
            (b"upgrade", b"websocket"),
            (b"expect", b"100-continue"),
            (b"content-length", b"12"),
            (b"x-end-to-end", b"kept"),
        ]
    )
    assert header_names(sent) == [
        b"x-end-to-end",
        b"host",
        b"x-forwarded-for",
        b"x-forwarded-proto",
    ]


def test_spaces_and_tabs_around_header_values_are_trimmed() -> None:
    sent = forward(
        [
            (b"host", b" gw.example\t"),
            (b"x-foo", b"bar \t"),
            (b"authorization", b"\tBearer a.b.c "),
            (b"x-a", b"a b"),
        ]
    )
    assert values(sent, b"x-foo") == [b"bar"]
    assert values(sent, b"authorization") == [b"Bearer a.b.c"]
    assert values(sent, b"x-a") == [b"a b"]
    assert values(sent, b"x-forwarded-host") == [b"gw.example"]


def test_host_is_rewritten_to_the_upstream() -> None:
    sent = forward([(b"host", b"localhost:8000")])
    assert values(sent, b"host") == [b"127.0.0.1:8001"]
    assert values(sent, b"x-forwarded-host") == [b"localhost:8000"]


def test_cookies_reach_auth_but_not_a_bearer_api() -> None:
    cookie = [(b"cookie", b"__Host-session=s3cr3t")]
    assert values(forward(cookie, AUTH), b"cookie") == [b"__Host-session=s3cr3t"]
    assert values(forward(cookie, ORDERS), b"cookie") == []


def test_every_set_cookie_reaches_the_client_from_a_cookie_route() -> None:
    received = [
        (b"Set-Cookie", b"__Host-session=a; Secure; HttpOnly; Path=/"),
        (b"set-cookie", b"theme=dark; Path=/"),
        (b"content-type", b"application/json"),
    ]
    assert domain.client_response_headers(received, AUTH) == [
        (b"set-cookie", b"__Host-session=a; Secure; HttpOnly; Path=/"),
        (b"set-cookie", b"theme=dark; Path=/"),
        (b"content-type", b"application/json"),
    ]


def test_a_bearer_api_cannot_set_cookies_on_the_public_origin() -> None:
    received = [(b"set-cookie", b"__Host-session=forged; Secure; Path=/"), (b"content-type", b"text/plain")]
    assert domain.client_response_headers(received, ORDERS) == [(b"content-type", b"text/plain")]


def test_hop_by_hop_response_headers_and_duplicated_server_headers_are_dropped() -> None:
    received = [
        (b"connection", b"close, X-Upstream-Hop"),
        (b"x-upstream-hop", b"internal"),
        (b"keep-alive", b"timeout=5"),
        (b"proxy-authenticate", b"Basic"),
        (b"transfer-encoding", b"chunked"),
        (b"trailer", b"x-checksum"),
        (b"upgrade", b"h2c"),
        (b"date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
        (b"x-request-id", b"abc"),
        (b"content-length", b"3"),
        (b"cache-control", b"no-store"),
    ]
    assert domain.client_response_headers(received, AUTH) == [
        (b"content-length", b"3"),
        (b"cache-control", b"no-store"),
    ]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], False),
        ([(b"accept", b"*/*")], False),
        ([(b"content-length", b"0")], True),
        ([(b"Content-Length", b"10")], True),
        ([(b"transfer-encoding", b"chunked")], True),
    ],
)
def test_has_body_follows_the_request_framing(headers: list[tuple[bytes, bytes]], expected: bool) -> None:
    assert domain.has_body(headers) is expected


def test_the_query_string_is_kept_byte_for_byte() -> None:
    target = domain.resolve("/api/orders/abc")
    assert domain.request_target(target, b"all=true&next=%2Fx") == b"/orders/abc?all=true&next=%2Fx"
    assert domain.request_target(target, b"") == b"/orders/abc"


@pytest.mark.parametrize("query", [b"q=caf\xc3\xa9", b"q=a b", b"q=\x01", b"q=\x7f"])
def test_a_query_with_raw_non_ascii_or_control_bytes_is_rejected(query: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        domain.request_target(domain.resolve("/auth/login"), query)
    assert caught.value.code == "invalid_query"


def test_the_revocation_feed_is_routed_to_auth_with_room_for_its_long_poll() -> None:
    target = domain.resolve("/.well-known/revocations.json")
    assert (target.route.upstream, target.path) == ("auth", "/.well-known/revocations.json")
    assert target.route.holds == 30
    assert domain.resolve("/.well-known/jwks.json").route.holds == 0
