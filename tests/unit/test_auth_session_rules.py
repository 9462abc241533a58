"""Pure rules behind session management and abuse resistance: client IPs, cookies, budgets, settings."""

from __future__ import annotations

import ipaddress

import msgspec
import pytest

from services.auth import api, domain
from services.auth.domain import LoginThrottlePolicy, RateLimit, User
from services.auth.settings import Settings
from shared.core import SettingsError, client_ip, parse_trusted_proxies

GATEWAY = parse_trusted_proxies(("127.0.0.1", "10.0.0.0/8"))
USER = User(id="u1", email="alice@example.com", role="user", password_hash="x")
DEV = {"APP_ENV": "dev", "SESSION_SECRET": "s3cr3t-" + "k" * 40}


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        # A client talking to auth directly cannot name another address.
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),
        ("203.0.113.9", [], "203.0.113.9"),
        # Through the gateway, the address the gateway appended is the client.
        ("127.0.0.1", ["203.0.113.9"], "203.0.113.9"),
        # What the client wrote left of it is ignored: the right-most untrusted hop wins.
        ("127.0.0.1", ["198.51.100.1, 203.0.113.9"], "203.0.113.9"),
        ("127.0.0.1", ["198.51.100.1", "203.0.113.9"], "203.0.113.9"),
        # A chain of trusted proxies is walked through.
        ("127.0.0.1", ["198.51.100.1, 203.0.113.9, 10.1.2.3"], "203.0.113.9"),
        # Every hop trusted: the left-most is as far as anyone can see.
        ("127.0.0.1", ["10.1.2.3"], "10.1.2.3"),
        ("127.0.0.1", [], "127.0.0.1"),
        # Garbage is untrusted, so it is the client's own (useless) claim, not a walk past it.
        ("127.0.0.1", ["198.51.100.1, not-an-ip"], "not-an-ip"),
    ],
)
def test_client_ip_believes_forwarded_for_only_from_trusted_proxies(
    peer: str, forwarded_for: list[str], expected: str
) -> None:
    assert client_ip(peer, forwarded_for, GATEWAY) == expected


def test_with_no_trusted_proxy_forwarded_for_is_ignored() -> None:
    assert client_ip("127.0.0.1", ["203.0.113.9"], ()) == "127.0.0.1"


def test_trusted_proxies_parse_addresses_and_networks() -> None:
    parsed = parse_trusted_proxies(("127.0.0.1", "::1", "10.0.0.0/8"))
    assert parsed == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("10.0.0.0/8"),
    )


@pytest.mark.parametrize("value", ["gateway", "10.0.0.0/33", "1.2.3"])
def test_bad_trusted_proxies_fail_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="TRUSTED_PROXIES"):
        Settings.from_env({**DEV, "TRUSTED_PROXIES": value})


def test_throttle_settings_have_documented_defaults() -> None:
    settings = Settings.from_env(DEV)
    assert settings.trusted_proxies == ()
    assert settings.login_throttle == LoginThrottlePolicy(
        per_ip=RateLimit(100, 900), per_account_ip=RateLimit(10, 900), per_account=RateLimit(100, 900)
    )
    assert settings.token_rate == RateLimit(60, 60)


def test_throttle_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            **DEV,
            "LOGIN_IP_LIMIT": "7",
            "LOGIN_ACCOUNT_IP_LIMIT": "3",
            "LOGIN_ACCOUNT_LIMIT": "5",
            "LOGIN_THROTTLE_WINDOW_SECONDS": "30",
            "TOKEN_RATE_LIMIT": "4",
            "TOKEN_RATE_WINDOW_SECONDS": "10",
        }
    )
    assert settings.login_throttle.limits == (RateLimit(7, 30), RateLimit(3, 30), RateLimit(5, 30))
    assert settings.token_rate == RateLimit(4, 10)


@pytest.mark.parametrize(
    "name", ["LOGIN_IP_LIMIT", "LOGIN_ACCOUNT_IP_LIMIT", "LOGIN_ACCOUNT_LIMIT", "TOKEN_RATE_LIMIT"]
)
def test_a_zero_limit_is_refused_by_name(name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**DEV, name: "0"})


def test_a_throttle_window_has_an_upper_bound_so_no_budget_is_a_permanent_lock() -> None:
    with pytest.raises(SettingsError, match="LOGIN_THROTTLE_WINDOW_SECONDS"):
        Settings.from_env({**DEV, "LOGIN_THROTTLE_WINDOW_SECONDS": str(86400 + 1)})


def test_login_budget_keys_follow_the_normalized_email_and_never_name_it() -> None:
    policy = Settings.from_env(DEV).login_throttle
    keys = policy.keys(" Alice@Example.COM ", "203.0.113.9")
    assert keys == policy.keys("alice@example.com", "203.0.113.9")
    assert not any("alice" in key for key in keys)
    assert keys[0] == "throttle:{login}:ip:203.0.113.9"
    # The per-IP budget is shared across accounts; the other two are not.
    other = policy.keys("bob@example.com", "203.0.113.9")
    assert other[0] == keys[0]
    assert other[1] != keys[1]
    assert other[2] != keys[2]
    # The account budget is the same from any address; the pair budget is not.
    elsewhere = policy.keys("alice@example.com", "198.51.100.1")
    assert elsewhere[2] == keys[2]
    assert elsewhere[1] != keys[1]


@pytest.mark.parametrize(
    ("ip", "unit"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("not-an-ip", "not-an-ip"),
    ],
)
def test_an_ipv6_client_is_throttled_by_its_64_prefix(ip: str, unit: str) -> None:
    assert domain.throttled_address(ip) == unit
    policy = Settings.from_env(DEV).login_throttle
    assert policy.keys("a@example.com", ip)[0] == f"throttle:{{login}}:ip:{unit}"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (["__Host-session=a"], ["a"]),
        (["x=1; __Host-session=a; y=2"], ["a"]),
        (["__Host-session=a; __Host-session=b"], ["a", "b"]),
        (["__Host-session=a", "__Host-session=b"], ["a", "b"]),
        # Look-alike names are other cookies.
        (["session=a; __host-session=b; __Host-session2=c"], []),
        ([], []),
    ],
)
def test_the_cookie_reader_sees_every_copy_of_a_cookie(headers: list[str], expected: list[str]) -> None:
    # Each value stands for a validly signed session id of its own user.
    ids = {name: domain.new_session_id(f"user-{name}") for name in "abc"}
    signed = [header.replace("=a", f"={ids['a']}").replace("=b", f"={ids['b']}") for header in headers]
    cookie = domain.read_session_cookie(signed, "__Host-session", lambda value: value)
    assert [ref.user_id for ref in cookie.presented] == [f"user-{name}" for name in expected]
    assert (cookie.current is not None) == (len(expected) == 1)


def test_the_public_handle_is_the_tokens_sid_and_not_the_cookie() -> None:
    session_id = domain.new_session_id(USER.id)
    session = domain.new_session(session_id, USER, 1000.0, user_agent="ua", ip="203.0.113.9")
    claims = domain.access_token_claims(
        domain.TokenRequest(issuer="i", audience="orders", user=USER, session=session, ttl=300), 1000.0
    )
    assert claims["sid"] == session.public_handle
    assert session.public_handle not in session_id
    listing = msgspec.to_builtins(api.SessionInfo.of(session, session.handle))
    assert listing == {
        "handle": session.public_handle,
        "created_at": 1000,
        "last_seen": 1000,
        "user_agent": "ua",
        "ip": "203.0.113.9",
        "current": True,
        "kind": "browser",
    }
    assert api.SessionInfo.of(session, "another").current is False


def test_the_user_agent_is_capped() -> None:
    session = domain.new_session(domain.new_session_id(USER.id), USER, 0.0, user_agent="x" * 5000, ip="")
    assert len(session.user_agent) == domain.MAX_USER_AGENT_LENGTH


def test_a_renewed_session_has_a_new_id_and_csrf_token_but_keeps_its_age() -> None:
    session = domain.new_session(domain.new_session_id(USER.id), USER, 1000.0, user_agent="ua", ip="ip")
    renewed = domain.renewed_session(session, domain.new_session_id(USER.id), 2000.0)
    assert renewed.handle != session.handle
    assert renewed.csrf_token != session.csrf_token
    assert renewed.created_at == 1000.0
    assert renewed.last_seen == 2000.0
    assert (renewed.user_id, renewed.user_agent, renewed.ip) == (USER.id, "ua", "ip")


def test_sessions_are_listed_newest_first() -> None:
    old, new = (
        domain.new_session(domain.new_session_id(USER.id), USER, at, user_agent="", ip="")
        for at in (1.0, 2.0)
    )
    assert domain.newest_first([old, new]) == [new, old]


def test_the_admin_view_says_whether_the_user_is_disabled() -> None:
    view = msgspec.to_builtins(api.AdminUser.of(USER))
    assert view == {"id": "u1", "email": "alice@example.com", "role": "user", "disabled": False}
