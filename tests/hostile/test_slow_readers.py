"""A hundred clients that ask for orders listings and never read them, while another user works.

Seen before the gateway had a pool per upstream: such clients held every gateway-to-upstream
connection, and logins and the JWKS answered 504 after 10 s. The attackers here ask for the
largest listing an ordinary user can (the longest items in the most bytes of UTF-8, the
biggest page), pipeline several requests on each socket, keep their receive buffers as small
as the kernel allows and read nothing; the gateway streams every answer
(``UPSTREAM_RESPONSE_BUFFER_BYTES=0``), the path on which an upstream connection stays taken
while the client is written to. Meanwhile another user logs in, mints, lists and fetches the
JWKS, each within a bound, and once the attackers are gone every connection comes back.

On loopback the kernel's socket buffers absorb a page or a few; answers too large for them
(the 7 MB listing of the report) stall, and the send deadline that cuts those off is shown
with an 8 MiB answer in ``tests/unit/test_gateway_proxy.py``.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import httpx

from deploy.devcluster import Cluster
from tests.support.cluster import ALICE, BOB, Browser, ClusterFactory, Secrets
from tests.support.http import bearer

ATTACKERS = 100
PIPELINED = 2
# Orders the attacker owns, with the longest items in the most bytes: all of them are about twice
# the gateway's default response buffer; a page of them, after pagination, still streams here.
# Bounded so that orders, which serialises every listing, stays the lesser cost of the attack.
ORDERS = 150
# Four bytes of UTF-8 each (JSON keeps them raw): the most bytes an item of 200 characters can be.
ITEM = "\U0001f422" * 200
SEND_TIMEOUT = 3.0
# What another user may wait for any one call while the attack runs.
BOUND = 3.0
ENV = {
    "LOG_LEVEL": "warning",
    "UPSTREAM_RESPONSE_BUFFER_BYTES": "0",
    "CLIENT_SEND_TIMEOUT_SECONDS": str(SEND_TIMEOUT),
    "UPSTREAM_POOL_TIMEOUT_SECONDS": "0.5",
}


def metric(client: httpx.Client, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {line_start}")


def in_use(client: httpx.Client, upstream: str) -> float:
    return metric(client, f'gateway_upstream_connections{{state="in_use",upstream="{upstream}"}}')


def poll(check: Callable[[], bool], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(0.05)


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


@contextlib.contextmanager
def never_reading(port: int, token: str, count: int) -> Iterator[list[socket.socket]]:
    """``count`` sockets that each send ``PIPELINED`` listing requests and read nothing; closed on exit."""
    request = (
        b"GET /api/orders?limit=100 HTTP/1.1\r\nHost: localhost\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n\r\n"
    ) * PIPELINED
    with contextlib.ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.settimeout(10)
            sock.connect(("127.0.0.1", port))
            sock.sendall(request)
            sockets.append(sock)
        yield sockets


def create_orders(cluster: Cluster, token: str) -> int:
    """Up to ``ORDERS`` orders straight at the orders service; stops at the first refusal (a quota)."""
    created = 0
    with httpx.Client(base_url=cluster.service_url("orders"), timeout=10) as orders:
        for _ in range(ORDERS):
            response = orders.post("/orders", json={"item": ITEM, "quantity": 1}, headers=bearer(token))
            if response.status_code != 201:
                break
            created += 1
    return created


def test_never_reading_clients_leave_other_users_unharmed_and_give_every_connection_back(
    cluster_factory: ClusterFactory,
) -> None:
    with (
        cluster_factory("slow-readers", ENV) as cluster,
        httpx.Client(base_url=cluster.url, timeout=10) as client,
    ):
        browser = Browser(cluster, client, Secrets())
        attacker_token = browser.token(browser.login(ALICE))
        assert create_orders(cluster, attacker_token) > 0
        pool_size = metric(client, 'gateway_upstream_connections_limit{upstream="orders"}')

        with never_reading(cluster.config.port("gateway"), attacker_token, ATTACKERS):
            # The attack is in place once orders connections are held by answers nobody reads.
            poll(
                lambda: in_use(client, "orders") > 0, within=10, what="the attackers hold orders connections"
            )
            held = in_use(client, "orders")
            assert held <= pool_size

            login, login_took = timed(lambda: browser.post_login(BOB, browser.password_for(BOB)))
            assert login.status_code == 200, login.text
            session = browser.login(BOB)
            minted, mint_took = timed(lambda: browser.request_token(session))
            assert minted.status_code == 200, minted.text
            token = minted.json()["access_token"]
            jwks, jwks_took = timed(lambda: client.get("/.well-known/jwks.json"))
            assert jwks.status_code == 200
            listing, list_took = timed(lambda: client.get("/api/orders", headers=bearer(token)))
            # Orders is the attacked upstream: its pool may be full, and then the answer says so at once.
            if listing.status_code != 200:
                assert (listing.status_code, listing.json()["error"]) == (503, "upstream_busy"), listing.text
                assert "retry-after" in listing.headers
            for what, took in (
                ("login", login_took),
                ("mint", mint_took),
                ("jwks", jwks_took),
                ("list", list_took),
            ):
                assert took < BOUND, f"{what} took {took:.1f} s while {held:.0f} orders connections were held"

        # Gone: every connection the attack held is back (released, or closed and counted out).
        poll(lambda: in_use(client, "orders") == 0, within=SEND_TIMEOUT + 10, what="orders connections back")
        assert in_use(client, "auth") == 0
        after = client.get("/api/orders", headers=bearer(token))
        assert after.status_code == 200, after.text
