"""Traces across the three processes, exported over OTLP/HTTP to a receiver the test runs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from deploy.devcluster import Cluster
from tests.support.cluster import ALICE, Browser, ClusterFactory, Secrets, wait_for_log_line
from tests.support.http import bearer
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.polling import poll

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as started:
        yield started


@pytest.fixture(scope="module")
def traced_cluster(cluster_factory: ClusterFactory, receiver: OtlpReceiver) -> Iterator[Cluster]:
    # A short batch delay so spans arrive within the test's polling, not five seconds later.
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50", "LOG_FORMAT": "json"}
    with cluster_factory("traced", env) as cluster:
        yield cluster


@pytest.fixture
def traced_browser(traced_cluster: Cluster) -> Iterator[Browser]:
    with httpx.Client(base_url=traced_cluster.url, timeout=10.0) as client:
        yield Browser(traced_cluster, client, Secrets())


def one(spans: list[ReceivedSpan], **match: str) -> ReceivedSpan:
    found = [span for span in spans if all(getattr(span, key) == value for key, value in match.items())]
    assert len(found) == 1, (match, [(span.service, span.name, span.kind) for span in spans])
    return found[0]


def trace_of(
    cluster: Cluster, receiver: OtlpReceiver, response: httpx.Response, *, spans: int
) -> list[ReceivedSpan]:
    """The spans of the trace that served ``response``, once ``spans`` of them arrived.

    The trace is found as an operator would find it: by the request id, in the gateway's log line.
    """
    request_id = response.headers["x-request-id"]
    line = wait_for_log_line(cluster, "gateway", lambda entry: entry.get("request_id") == request_id)
    trace_id = line["trace_id"]

    def arrived() -> list[ReceivedSpan] | None:
        trace = [span for span in receiver.snapshot() if span.trace_id == trace_id]
        return trace if len(trace) >= spans else None

    return poll(arrived, within=10, what=f"{spans} spans of trace {trace_id}")


def test_an_order_request_is_one_trace_across_gateway_and_orders(
    receiver: OtlpReceiver, traced_cluster: Cluster, traced_browser: Browser
) -> None:
    token = traced_browser.token(traced_browser.login(ALICE))

    response = traced_browser.client.get("/api/orders", headers=bearer(token))

    assert response.status_code == 200, response.text
    # gateway: server, verification, client; orders: server, verification, one SELECT.
    spans = trace_of(traced_cluster, receiver, response, spans=6)
    server = one(spans, service="gateway", kind="server")
    assert server.attributes["http.route"] == "/api/orders"
    assert server.attributes["http.response.status_code"] == 200
    gateway_check = one(spans, service="gateway", name="verify token")
    client = one(spans, service="gateway", kind="client")
    assert (gateway_check.parent_id, client.parent_id) == (server.span_id, server.span_id)
    assert client.name == "GET orders"
    assert client.attributes["http.response.status_code"] == 200
    upstream = one(spans, service="orders", kind="server")
    assert upstream.parent_id == client.span_id
    assert upstream.name == "GET /orders"
    orders_check = one(spans, service="orders", name="verify token")
    select = one(spans, service="orders", name="sqlite SELECT")
    assert (orders_check.parent_id, select.parent_id) == (upstream.span_id, upstream.span_id)
    assert select.kind == "client"
    assert select.attributes["db.system.name"] == "sqlite"
    assert "?" in select.attributes["db.query.text"]
    assert len(spans) == 6, [(span.service, span.name) for span in spans]
    # Orders logs the same trace id for this request as the gateway.
    request_id = response.headers["x-request-id"]
    line = wait_for_log_line(traced_cluster, "orders", lambda entry: entry.get("request_id") == request_id)
    assert line["trace_id"] == server.trace_id


def test_a_token_request_traces_the_redis_commands_in_auth(
    receiver: OtlpReceiver, traced_browser: Browser
) -> None:
    session = traced_browser.login(ALICE)

    response = traced_browser.request_token(session)

    assert response.status_code == 200
    spans = trace_of(traced_browser.cluster, receiver, response, spans=4)
    gateway = one(spans, service="gateway", kind="server")
    assert (gateway.name, gateway.parent_id) == ("POST /auth", "")
    client = one(spans, service="gateway", kind="client")
    token_span = one(spans, service="auth", kind="server")
    assert token_span.parent_id == client.span_id
    commands = [span for span in spans if span.service == "auth" and span.name.startswith("redis ")]
    assert commands
    assert all(span.parent_id == token_span.span_id for span in commands)
    assert all(span.attributes["db.system.name"] == "redis" for span in commands)
    # The command, and NoScriptError for a script's first EVALSHA on a fresh server: no keys, no values.
    assert all(
        set(span.attributes) - {"error.type"} == {"db.system.name", "db.operation.name"} for span in commands
    )


def test_a_refused_token_is_an_error_span_with_its_reason(
    receiver: OtlpReceiver, traced_browser: Browser
) -> None:
    token = traced_browser.token(traced_browser.login(ALICE))

    response = traced_browser.client.get("/api/orders/whatever", headers=bearer(token[:-4] + "AAAA"))

    assert response.status_code == 401
    spans = trace_of(traced_browser.cluster, receiver, response, spans=2)
    check = one(spans, name="verify token")
    assert check.attributes["error.type"] == "signature"
    assert check.status_code == 2  # STATUS_CODE_ERROR
    assert one(spans, kind="server").attributes["http.response.status_code"] == 401
    # Refused at the gateway: nothing went upstream.
    assert {span.service for span in spans} == {"gateway"}


def test_a_client_cannot_choose_the_trace_at_the_gateway(
    receiver: OtlpReceiver, traced_browser: Browser
) -> None:
    chosen = "4bf92f3577b34da6a3ce929d0e0e4736"

    response = traced_browser.client.get(
        "/.well-known/jwks.json", headers={"traceparent": f"00-{chosen}-00f067aa0ba902b7-01"}
    )

    assert response.status_code == 200
    spans = trace_of(traced_browser.cluster, receiver, response, spans=3)
    assert all(span.trace_id != chosen for span in spans)
    # ...while auth continues the gateway's trace, which the gateway's client span passed on.
    client = one(spans, service="gateway", kind="client")
    assert one(spans, service="auth", kind="server").parent_id == client.span_id


def test_no_span_holds_a_token_cookie_csrf_token_or_password(
    receiver: OtlpReceiver, traced_browser: Browser
) -> None:
    session = traced_browser.login(ALICE)
    token = traced_browser.token(session)
    traced_browser.create_order(token, item="traced")
    traced_browser.client.get("/api/orders", headers=bearer(token))
    traced_browser.client.get("/api/orders", headers=bearer(token + "x"))
    logout = traced_browser.logout(session)
    assert logout.status_code == 200, logout.text
    trace_of(traced_browser.cluster, receiver, logout, spans=4)
    # The cookie's parts too (its session id and signature); its first part is the user id, no secret.
    parts = set(session.cookie.split(".")) - {session.user["id"]}
    secrets = traced_browser.secrets.values | parts

    exported = json.dumps(
        [[span.name, span.attributes, span.resource] for span in receiver.snapshot()], default=str
    )

    assert len(secrets) >= 4
    leaked = [secret for secret in secrets if secret in exported]
    assert leaked == []
