"""Native sessions with no grace and short lifetimes, through the gateway: what changes when time matters.

With ``NATIVE_REFRESH_GRACE_SECONDS=0`` a rotated-away handle is never a retry, so racing
refreshes of one handle leave one winner and a revoked session. A native session has the
timeouts of a browser session: unused past the idle timeout it ends, and used it still ends at
the absolute timeout. Both timeouts are a few seconds here, so waiting them out is cheap, and the
waits poll for the outcome rather than sleep.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from deploy.devcluster import Cluster
from tests.security.session_helpers import PASSWORD, SessionApi, login, new_user
from tests.support.cluster import Browser, ClusterFactory
from tests.support.http import unverified_parts
from tests.support.native import (
    GATEWAY_PREFIX,
    Handles,
    NativeClient,
    assert_refused,
    concurrent_refreshes,
    minted,
)
from tests.support.polling import poll
from tests.support.revocation import wait_until_refused

pytestmark = pytest.mark.e2e

IDLE, ABSOLUTE = 3, 6
ENV = {
    "NATIVE_REFRESH_GRACE_SECONDS": "0",
    "SESSION_IDLE_TIMEOUT_SECONDS": str(IDLE),
    "SESSION_ABSOLUTE_TIMEOUT_SECONDS": str(ABSOLUTE),
    "TOKEN_RATE_LIMIT": "1000000",
    "REFRESH_FAILURE_LIMIT": "1000000",
}
CONCURRENT = 8


@pytest.fixture(scope="module")
def cluster(cluster_factory: ClusterFactory) -> Iterator[Cluster]:
    with cluster_factory("native-timeouts", ENV) as started:
        yield started


@pytest.fixture
def native(client: httpx.Client) -> NativeClient:
    return NativeClient(client, Handles())


def sid(token: str) -> str:
    return str(unverified_parts(token)[1]["sid"])


def test_without_a_grace_concurrent_refreshes_leave_one_winner_and_revoke_the_session(
    cluster: Cluster, native: NativeClient, browser: Browser
) -> None:
    email = new_user(cluster)
    handle = native.login(email, PASSWORD)
    responses = concurrent_refreshes(cluster.url, f"{GATEWAY_PREFIX}/token", handle, CONCURRENT)
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [401] * (CONCURRENT - 1), [(r.status_code, r.text[:200]) for r in responses]
    (won,) = [minted(response, handle) for response in responses if response.status_code == 200]
    codes = [
        assert_refused(response, 401, None, handle, won.handle)["error"]
        for response in responses
        if response.status_code == 401
    ]
    # Each loser judged before the session was revoked is theft; one judged after finds no session
    # at all, as any handle of a revoked session does. At least the first is theft.
    print(f"\nthe losers of {CONCURRENT} racing refreshes were answered: {sorted(codes)}")
    assert "refresh_reused" in codes, codes
    assert set(codes) <= {"refresh_reused", "invalid_grant"}, codes

    # The losers proved a copy of the handle exists: the winner's handle and token die with the session.
    assert_refused(native.refresh(won.handle), 401, "invalid_grant", won.handle)
    wait_until_refused(cluster, [won.access_token])
    viewer = login(browser, email)
    assert [s for s in SessionApi(browser).sessions(viewer) if s.get("kind") == "native"] == []


def test_without_a_grace_a_handle_presented_again_at_once_is_theft(
    cluster: Cluster, native: NativeClient
) -> None:
    first = native.login(new_user(cluster), PASSWORD)
    second = native.mint(first)
    assert_refused(native.refresh(first), 401, "refresh_reused", first, second.handle)
    wait_until_refused(cluster, [second.access_token])
    assert_refused(native.refresh(second.handle), 401, "invalid_grant", second.handle)


def test_an_unused_native_session_ends_at_the_idle_timeout_and_a_used_one_at_the_absolute(
    cluster: Cluster, native: NativeClient, browser: Browser
) -> None:
    email = new_user(cluster)
    busy = native.login(email, PASSWORD)
    started = time.monotonic()
    idle = native.mint(native.login(email, PASSWORD))
    api = SessionApi(browser)
    viewer = login(browser, email)

    def idle_session_gone() -> bool:
        # Each round uses the busy session and the viewer's, never the idle one.
        nonlocal busy
        busy = native.mint(busy).handle
        return sid(idle.access_token) not in {entry["handle"] for entry in api.sessions(viewer)}

    poll(idle_session_gone, within=IDLE + 5, what="the idle native session to end", every=0.25)
    # Alive past the idle timeout only because it was used.
    assert time.monotonic() - started >= IDLE
    assert_refused(native.refresh(idle.handle), 401, "invalid_grant", idle.handle)

    def busy_session_ended() -> bool:
        nonlocal busy
        response = native.refresh(busy)
        if response.status_code == 200:
            busy = minted(response, busy).handle
            return False
        assert_refused(response, 401, "invalid_grant", busy)
        return True

    poll(busy_session_ended, within=ABSOLUTE + 5, what="the busy native session to end", every=0.25)
    lived = time.monotonic() - started
    # Used every quarter second, it ended at its absolute timeout and not before.
    assert lived >= ABSOLUTE - 0.5, lived
