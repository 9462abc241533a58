"""Claims attacks: tokens signed with auth's real key whose one wrong claim must still close the door.

Signing with the real key means the signature, header and every other claim are as auth
writes them; the controls prove such a token is accepted, so each rejection below is the
claim rule at work. Numbers that JSON cannot hold (NaN, Infinity, 1e309) are written raw.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from deploy.devcluster import Cluster

from .forge import (
    DROP,
    TARGETS,
    assert_accepted,
    assert_rejected,
    claims,
    header,
    leeway,
    present,
    signed_by_cluster,
)

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("target", TARGETS)]

RAW = "\x00raw\x00"


def signed(cluster: Cluster, payload: dict[str, Any], raw: str | None = None) -> str:
    """``payload`` signed with the real key; a claim set to :data:`RAW` is written as ``raw`` JSON text."""
    text = json.dumps(payload, separators=(",", ":"))
    if raw is not None:
        text = text.replace(json.dumps(RAW), raw)
    return signed_by_cluster(cluster, header(cluster), text)


def times(*, iat: int, lifetime: int = 300) -> dict[str, int]:
    return {"iat": iat, "nbf": iat, "exp": iat + lifetime}


def test_control_a_token_with_auth_claims_is_accepted(cluster: Cluster, target: str) -> None:
    assert_accepted(present(cluster, target, signed(cluster, claims(cluster))))


def test_control_a_token_past_its_exp_but_inside_the_leeway_is_accepted(
    cluster: Cluster, target: str
) -> None:
    # The boundary case below is rejected because of the exact second, not because it is old.
    exp = int(time.time()) - leeway(cluster, target) + 30
    token = signed(cluster, claims(cluster, **times(iat=exp - 300)))

    assert_accepted(present(cluster, target, token))


def test_control_a_token_not_before_now_plus_part_of_the_leeway_is_accepted(
    cluster: Cluster, target: str
) -> None:
    nbf = int(time.time()) + max(leeway(cluster, target) - 5, 0)

    assert_accepted(present(cluster, target, signed(cluster, claims(cluster, nbf=nbf))))


def test_expired(cluster: Cluster, target: str) -> None:
    exp = int(time.time()) - leeway(cluster, target) - 60
    token = signed(cluster, claims(cluster, **times(iat=exp - 300)))

    assert_rejected(present(cluster, target, token), token)


def test_at_the_exact_exp_second(cluster: Cluster, target: str) -> None:
    # RFC 7519 4.1.4: the token must not be accepted "on or after" exp (here, plus the leeway).
    exp = int(time.time()) - leeway(cluster, target)
    token = signed(cluster, claims(cluster, **times(iat=exp - 300)))

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize("name", ["nbf", "iat"])
def test_in_the_future_beyond_the_leeway(cluster: Cluster, target: str, name: str) -> None:
    future = int(time.time()) + leeway(cluster, target) + 60
    changes = {"nbf": future} if name == "nbf" else times(iat=future)
    token = signed(cluster, claims(cluster, **changes))

    assert_rejected(present(cluster, target, token), token)


NON_NUMERIC = [
    pytest.param("NaN", id="NaN"),
    pytest.param("Infinity", id="Infinity"),
    pytest.param("-Infinity", id="-Infinity"),
    pytest.param("1e309", id="1e309 (infinite as a double)"),
    pytest.param('"4102444800"', id="numeric string"),
    pytest.param('""', id="empty string"),
    pytest.param("true", id="true"),
    pytest.param("false", id="false"),
    pytest.param("null", id="null"),
    pytest.param('{"$numberLong":"4102444800"}', id="nested object"),
    pytest.param("[4102444800]", id="list"),
]


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("raw", NON_NUMERIC)
def test_non_numeric_time(cluster: Cluster, target: str, name: str, raw: str) -> None:
    token = signed(cluster, claims(cluster, **{name: RAW}), raw)

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"exp": 10**20}, id="exp in the year 3 trillion"),
        pytest.param({"exp": 2**63}, id="exp 2**63"),
        pytest.param({"exp": 1e20}, id="exp a huge float"),
        pytest.param({"iat": -(2**63)}, id="iat -2**63"),
        pytest.param({"iat": 0, "nbf": 0}, id="iat at the epoch"),
    ],
)
def test_out_of_range_time(cluster: Cluster, target: str, changes: dict[str, Any]) -> None:
    token = signed(cluster, claims(cluster, **changes))

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize("name", ["iss", "sub", "aud", "exp", "iat", "jti"])
def test_missing_required_claim(cluster: Cluster, target: str, name: str) -> None:
    token = signed(cluster, claims(cluster, **{name: DROP}))

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"sub": 123}, id="sub number"),
        pytest.param({"sub": ""}, id="sub empty"),
        pytest.param({"sub": True}, id="sub boolean"),
        pytest.param({"sub": ["security-suite-user"]}, id="sub list"),
        pytest.param({"sub": {"id": "security-suite-user"}}, id="sub object"),
        pytest.param({"sub": "\ud800"}, id="sub a lone surrogate"),
        pytest.param({"role": "\udfff"}, id="role a lone surrogate"),
        pytest.param({"jti": 1}, id="jti number"),
        pytest.param({"jti": ""}, id="jti empty"),
        pytest.param({"iss": ["http://localhost"]}, id="iss list"),
        pytest.param({"aud": {"orders": True}}, id="aud object"),
        pytest.param({"sid": 1}, id="sid number"),
        pytest.param({"client_id": ["gateway-web"]}, id="client_id list"),
        pytest.param({"role": ["admin"]}, id="role list"),
        pytest.param({"role": {"admin": True}}, id="role object"),
        pytest.param({"scope": 1}, id="scope number"),
    ],
)
def test_wrong_claim_type(cluster: Cluster, target: str, changes: dict[str, Any]) -> None:
    token = signed(cluster, claims(cluster, **changes))

    assert_rejected(present(cluster, target, token), token)


def _look_alikes(origin: str) -> dict[str, str]:
    scheme, _, authority = origin.partition("://")
    host, _, port = authority.partition(":")
    return {
        "trailing slash": origin + "/",
        "upper-case host": f"{scheme}://{host.upper()}:{port}",
        "upper-case everything": origin.upper(),
        "https": f"https://{authority}",
        "suffix domain": f"{origin}.evil.example",
        "userinfo trick": f"{origin}@evil.example",
        "no port": f"{scheme}://{host}",
        "127.0.0.1 for localhost": f"{scheme}://127.0.0.1:{port}",
        "a path": origin + "/auth",
        "leading space": " " + origin,
        "trailing null byte": origin + "\x00",
        "empty": "",
    }


@pytest.mark.parametrize(
    "kind",
    [
        "trailing slash",
        "upper-case host",
        "upper-case everything",
        "https",
        "suffix domain",
        "userinfo trick",
        "no port",
        "127.0.0.1 for localhost",
        "a path",
        "leading space",
        "trailing null byte",
        "empty",
    ],
)
def test_issuer_look_alike(cluster: Cluster, target: str, kind: str) -> None:
    token = signed(cluster, claims(cluster, iss=_look_alikes(cluster.public_origin)[kind]))

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize(
    "aud",
    [
        pytest.param("auth", id="auth"),
        pytest.param("gateway", id="gateway"),
        pytest.param("orders-admin", id="orders-admin"),
        pytest.param("ORDERS", id="upper case"),
        pytest.param("orders ", id="trailing space"),
        pytest.param("orders,auth", id="comma list in a string"),
        pytest.param("*", id="wildcard"),
        pytest.param("", id="empty"),
        pytest.param(["orders"], id="list of one"),
        pytest.param(["orders", "auth"], id="list with another service"),
        pytest.param(["auth", "orders"], id="list with orders second"),
        pytest.param([], id="empty list"),
    ],
)
def test_audience_not_exactly_ours(cluster: Cluster, target: str, aud: Any) -> None:
    token = signed(cluster, claims(cluster, aud=aud))

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize(
    "changes_of",
    [
        pytest.param(lambda now: times(iat=now, lifetime=301), id="one second over the cap"),
        pytest.param(lambda now: times(iat=now, lifetime=86_400), id="a day"),
        pytest.param(lambda now: times(iat=now, lifetime=10 * 365 * 86_400), id="ten years"),
        pytest.param(lambda now: times(iat=now - 3600, lifetime=3900), id="issued an hour ago, valid on"),
        pytest.param(lambda now: times(iat=now, lifetime=0), id="exp equal to iat"),
        pytest.param(lambda now: {"iat": now, "nbf": now, "exp": now - 1}, id="exp before iat"),
    ],
)
def test_over_long_or_impossible_lifetime(cluster: Cluster, target: str, changes_of: Any) -> None:
    token = signed(cluster, claims(cluster, **changes_of(int(time.time()))))

    assert_rejected(present(cluster, target, token), token)
