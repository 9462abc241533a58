"""Faults injected into the running containers: Redis and auth stop, restart and are re-created."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx

from tests.support.http import assert_json_error, unverified_parts
from tests.support.polling import poll

from .conftest import ALICE, COMPOSE_TEST_TIMEOUT, ComposeStack, Gateway, LoggedIn

pytestmark = COMPOSE_TEST_TIMEOUT

# The bound for a dependency outage; auth's Redis timeout is 0.5 s.
FAIL_FAST_SECONDS = 1.0
RECOVERY_SECONDS = 15.0


@contextmanager
def stopped(stack: ComposeStack, service: str) -> Iterator[None]:
    """The service's container stopped (SIGTERM, as `docker stop`) for the block, then started and healthy."""
    stack.container(service).stop(timeout=10)
    try:
        yield
    finally:
        stack.container(service).start()
        stack.wait_healthy(service)


def recreate(stack: ComposeStack, service: str) -> None:
    """A new container for ``service`` from the same image and volumes, as after an upgrade."""
    before = stack.container(service).id
    stack.compose("up", "--detach", "--no-deps", "--force-recreate", "--wait", service)
    assert stack.container(service).id != before


def timed(send: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = send()
    return response, time.monotonic() - started


def eventually_ok(send: Callable[[], httpx.Response]) -> httpx.Response:
    """The first 200 within RECOVERY_SECONDS: a pooled connection may fail once after a restart."""
    return poll(
        send,
        until=lambda response: response.status_code == 200,
        within=RECOVERY_SECONDS,
        what="a 200",
        every=0.2,
    )


def kid_of(token: str) -> str:
    kid: str = unverified_parts(token)[0]["kid"]
    return kid


def test_while_redis_is_down_login_and_token_fail_fast_and_tokens_still_verify(
    stack: ComposeStack, gateway: Gateway
) -> None:
    session = gateway.login(ALICE)
    token = gateway.token(session)

    with stopped(stack, "redis"):
        login, login_seconds = timed(lambda: gateway.post_login(ALICE))
        minted, token_seconds = timed(lambda: gateway.request_token(session))
        listed = gateway.orders(token)
        created = gateway.create_order(token, "ordered while redis was down")

    assert_json_error(login, 503)
    assert login_seconds < FAIL_FAST_SECONDS
    assert not login.headers.get_list("set-cookie")
    assert_json_error(minted, 503)
    assert token_seconds < FAIL_FAST_SECONDS
    assert listed.status_code == 200, listed.text
    assert created.status_code == 201, created.text


def test_a_session_outlives_a_redis_restart_and_re_creation(stack: ComposeStack, gateway: Gateway) -> None:
    session = gateway.login(ALICE)

    with stopped(stack, "redis"):
        assert_json_error(gateway.request_token(session), 503)
    after_restart = eventually_ok(lambda: gateway.request_token(session))
    recreate(stack, "redis")
    after_re_creation = eventually_ok(lambda: gateway.request_token(session))

    assert after_restart.status_code == 200, after_restart.text
    # A new container has only the volume's append-only file to remember the session by.
    assert after_re_creation.status_code == 200, after_re_creation.text


def test_while_auth_is_down_gateway_and_orders_verify_tokens_with_the_keys_they_hold(
    stack: ComposeStack, gateway: Gateway
) -> None:
    token = gateway.token(gateway.login(ALICE))

    with stopped(stack, "auth"):
        listed = gateway.orders(token)
        created = gateway.create_order(token, "ordered while auth was down")
        forged = gateway.orders(token[:-6] + "AAAAAA")
        login, login_seconds = timed(lambda: gateway.post_login(ALICE))

    # Both verify: the gateway before proxying, orders on its own (a 201 needs both).
    assert listed.status_code == 200, listed.text
    assert created.status_code == 201, created.text
    assert_json_error(forged, 401)
    assert_json_error(login, 502)
    assert login_seconds < FAIL_FAST_SECONDS * 3


def test_tokens_and_sessions_minted_before_auth_is_re_created_still_work(
    stack: ComposeStack, gateway: Gateway
) -> None:
    session: LoggedIn = gateway.login(ALICE)
    token = gateway.token(session)

    recreate(stack, "auth")
    still_verifies = gateway.orders(token)
    new_token = eventually_ok(lambda: gateway.request_token(session))
    published = {key["kid"] for key in gateway.http.get("/.well-known/jwks.json").json()["keys"]}

    assert still_verifies.status_code == 200, still_verifies.text
    # The session secret survived (the old cookie is accepted) and so did the signing key.
    assert new_token.status_code == 200, new_token.text
    assert kid_of(new_token.json()["access_token"]) == kid_of(token)
    assert kid_of(token) in published


def test_orders_survive_re_creation_of_the_orders_container(stack: ComposeStack, gateway: Gateway) -> None:
    token = gateway.token(gateway.login(ALICE))
    created = gateway.create_order(token, "kept on the orders volume")
    assert created.status_code == 201, created.text

    recreate(stack, "orders")
    listed = eventually_ok(lambda: gateway.orders(token))

    assert listed.status_code == 200, listed.text
    assert created.json()["id"] in [order["id"] for order in listed.json()["orders"]]
