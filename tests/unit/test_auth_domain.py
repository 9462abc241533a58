"""The auth domain rules, each on its own: session lifetimes, ids, CSRF, origins, input and claims."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest

from services.auth import domain
from services.auth.domain import SessionCookie, SessionRef, TokenRequest, User
from shared.core import ApiError, BadRequest, Forbidden, ValidationFailed

T0 = 1_700_000_000.0
PUBLIC_ORIGIN = "http://localhost:8000"
ALICE = User(id="u-alice", email="alice@example.com", role="user", password_hash="$argon2id$v=19$secret-hash")
URL_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def code_of(error: pytest.ExceptionInfo[ApiError]) -> str:
    return error.value.code


class TestSessionIds:
    def test_a_session_id_carries_at_least_256_bits_after_its_owner(self) -> None:
        owner, dot, secret = domain.new_session_id("u-alice").partition(".")
        assert (owner, dot) == ("u-alice", ".")
        assert URL_SAFE.match(secret)
        raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
        assert len(raw) * 8 >= 256

    def test_session_ids_are_url_safe_and_unique_over_many_draws(self) -> None:
        secrets = [domain.new_session_id("u").removeprefix("u.") for _ in range(5000)]
        assert len(set(secrets)) == len(secrets)
        assert all(URL_SAFE.match(secret) for secret in secrets)

    def test_session_ids_are_not_biased_towards_a_few_characters(self) -> None:
        # A weak generator (or a constant prefix) would show up as a small alphabet.
        joined = "".join(domain.new_session_id("u").removeprefix("u.") for _ in range(200))
        assert len(set(joined)) == 64

    def test_the_owner_is_read_back_from_the_id(self) -> None:
        assert domain.session_owner(domain.new_session_id("0123abcd")) == "0123abcd"

    @pytest.mark.parametrize(
        "session_id",
        [
            "no-owner-at-all" + "x" * 43,
            "." + "x" * 43,
            "u-alice.short",
            "{u}." + "x" * 43,
            "a}{b." + "x" * 43,
            "u" * 65 + "." + "x" * 43,
            "u\n." + "x" * 43,
        ],
    )
    def test_ids_without_a_plain_owner_are_refused(self, session_id: str) -> None:
        # A brace would move the Redis Cluster hash tag the store builds around the owner.
        assert domain.session_owner(session_id) is None

    def test_the_handle_is_the_sha256_of_the_id_in_unpadded_base64url(self) -> None:
        session_id = domain.new_session_id("u-alice")
        handle = domain.session_handle(session_id)
        assert base64.urlsafe_b64decode(handle + "=") == hashlib.sha256(session_id.encode()).digest()
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", handle)
        assert handle != session_id
        assert session_id not in handle

    def test_different_ids_have_different_handles(self) -> None:
        assert domain.session_handle("a") != domain.session_handle("b")


class TestNewSession:
    def test_a_new_session_is_stored_under_the_handle_not_the_id(self) -> None:
        session_id = domain.new_session_id("u-alice")
        session = domain.new_session(session_id, ALICE, T0, user_agent="curl/8", ip="127.0.0.1")
        assert session.handle == domain.session_handle(session_id)
        assert session_id not in repr(session)
        assert (session.user_id, session.created_at, session.last_seen) == (ALICE.id, T0, T0)
        assert (session.user_agent, session.ip) == ("curl/8", "127.0.0.1")

    def test_a_new_session_has_its_own_unguessable_csrf_token(self) -> None:
        first = domain.new_session("id-1", ALICE, T0, user_agent="", ip="")
        second = domain.new_session("id-1", ALICE, T0, user_agent="", ip="")
        assert first.csrf_token != second.csrf_token
        assert len(first.csrf_token) >= 43
        assert first.csrf_token != "id-1"

    def test_long_user_agent_and_ip_are_truncated(self) -> None:
        session = domain.new_session("id", ALICE, T0, user_agent="A" * 10_000, ip="1" * 1000)
        assert session.user_agent == "A" * 64
        assert session.ip == "1" * 64


CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)


class TestUserAgentLabel:
    @pytest.mark.parametrize(
        ("user_agent", "label"),
        [
            (CHROME_LINUX, "Chrome 131 on Linux"),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.86",
                "Edge 131 on Windows",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.7; rv:133.0) Gecko/20100101 Firefox/133.0",
                "Firefox 133 on macOS",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
                "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
                "Safari 18 on iOS",
            ),
            (
                "Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/131.0.6778.81 Mobile Safari/537.36",
                "Chrome 131 on Android",
            ),
        ],
    )
    def test_a_browser_is_named_by_its_product_version_and_system(self, user_agent: str, label: str) -> None:
        assert domain.user_agent_label(user_agent) == label

    def test_a_short_user_agent_is_kept_as_sent(self) -> None:
        assert domain.user_agent_label("curl/8.5.0") == "curl/8.5.0"

    def test_an_unknown_long_one_is_cut_and_control_characters_are_dropped(self) -> None:
        label = domain.user_agent_label("bot\x00\x1b[31m" + "x" * 100)
        assert label == ("bot[31m" + "x" * 100)[:64]

    def test_every_label_fits_a_compact_redis_field(self) -> None:
        assert len(domain.user_agent_label(CHROME_LINUX + " " * 500 + "y" * 500)) <= 64


def unsign(value: str) -> str | None:
    """A stand-in signer: a value is validly signed when it ends with ``.signed``."""
    return value.removesuffix(".signed") if value.endswith(".signed") else None


ALICE_ID = domain.new_session_id(ALICE.id)
BOB_ID = domain.new_session_id("u-bob")
ALICE_REF = SessionRef(ALICE.id, domain.session_handle(ALICE_ID))
BOB_REF = SessionRef("u-bob", domain.session_handle(BOB_ID))


class TestSessionCookie:
    def read(self, *headers: str) -> SessionCookie:
        return domain.read_session_cookie(list(headers), "__Host-session", unsign)

    def test_one_validly_signed_cookie_is_the_current_session(self) -> None:
        cookie = self.read(f"theme=dark; __Host-session={ALICE_ID}.signed")
        assert cookie == SessionCookie(current=ALICE_REF, presented=(ALICE_REF,))

    def test_a_second_session_cookie_makes_neither_current_but_both_presented(self) -> None:
        # Cookie tossing: a planted cookie beside the real one; a login still ends both.
        cookie = self.read(f"__Host-session={ALICE_ID}.signed", f"__Host-session={BOB_ID}.signed")
        assert cookie == SessionCookie(current=None, presented=(ALICE_REF, BOB_REF))

    def test_a_planted_unsigned_cookie_beside_a_valid_one_still_voids_the_current_session(self) -> None:
        cookie = self.read(f"__Host-session={ALICE_ID}.signed; __Host-session=forged")
        assert cookie == SessionCookie(current=None, presented=(ALICE_REF,))

    @pytest.mark.parametrize(
        "header", ["__Host-session=forged", "__Host-session=not-a-session-id.signed", "session=x.signed", ""]
    )
    def test_a_bad_signature_a_bad_shape_or_another_name_is_no_session(self, header: str) -> None:
        assert self.read(header) == SessionCookie(current=None, presented=())


class TestSameOrigin:
    def test_the_exact_public_origin_passes(self) -> None:
        domain.check_same_origin(PUBLIC_ORIGIN, None, PUBLIC_ORIGIN)
        domain.check_same_origin(PUBLIC_ORIGIN, "same-origin", PUBLIC_ORIGIN)

    @pytest.mark.parametrize(
        "origin",
        [
            "http://localhost:9000",  # same site, other port: SameSite=Strict lets it through
            "http://localhost",
            "https://localhost:8000",
            "http://localhost:8000/",
            "http://127.0.0.1:8000",
            "http://evil.localhost:8000",
            "http://localhost:8000.evil.example",
            "null",
            "",
        ],
    )
    def test_any_other_origin_is_refused_as_cross_origin(self, origin: str) -> None:
        with pytest.raises(Forbidden) as caught:
            domain.check_same_origin(origin, None, PUBLIC_ORIGIN)
        assert code_of(caught) == "cross_origin"

    def test_the_refusal_tells_the_user_to_open_the_page_at_the_public_origin(self) -> None:
        with pytest.raises(Forbidden) as caught:
            domain.check_same_origin("http://127.0.0.1:8000", None, PUBLIC_ORIGIN)
        assert caught.value.detail == (
            "open the demo at http://localhost:8000; requests from other origins are refused"
        )

    def test_a_wrong_origin_is_refused_even_if_fetch_site_claims_same_origin(self) -> None:
        with pytest.raises(Forbidden) as caught:
            domain.check_same_origin("http://localhost:9000", "same-origin", PUBLIC_ORIGIN)
        assert code_of(caught) == "cross_origin"

    def test_without_origin_sec_fetch_site_same_origin_passes(self) -> None:
        domain.check_same_origin(None, "same-origin", PUBLIC_ORIGIN)

    @pytest.mark.parametrize("fetch_site", ["same-site", "cross-site", "none", None, "", "Same-Origin"])
    def test_without_origin_anything_but_same_origin_is_refused(self, fetch_site: str | None) -> None:
        with pytest.raises(Forbidden) as caught:
            domain.check_same_origin(None, fetch_site, PUBLIC_ORIGIN)
        assert code_of(caught) == "origin_required"
        assert caught.value.status == 403


class TestNewAccounts:
    def test_a_valid_account_gives_the_normalized_email(self) -> None:
        assert domain.validate_new_account(" Bob@Example.com", "admin", "x" * 12) == "bob@example.com"

    @pytest.mark.parametrize(
        "email", ["", "bob", "bob@", "@example.com", "bob@example", "bo b@example.com", "a" * 250 + "@x.io"]
    )
    def test_a_bad_email_is_refused(self, email: str) -> None:
        with pytest.raises(ValidationFailed, match="email"):
            domain.validate_new_account(email, "user", "x" * 12)

    @pytest.mark.parametrize("role", ["root", "Admin", "", "user "])
    def test_an_unknown_role_is_refused(self, role: str) -> None:
        with pytest.raises(ValidationFailed, match="role"):
            domain.validate_new_account("bob@example.com", role, "x" * 12)

    def test_a_short_password_is_refused(self) -> None:
        with pytest.raises(ValidationFailed, match="password"):
            domain.validate_new_account("bob@example.com", "user", "x" * 11)

    @pytest.mark.parametrize("password", ["", "x" * 11, "x" * 1025])
    def test_new_password_length_is_bounded(self, password: str) -> None:
        with pytest.raises(ValidationFailed, match="12 to 1024"):
            domain.validate_new_password(password)

    @pytest.mark.parametrize("password", ["x" * 12, "x" * 1024])
    def test_new_password_bounds_are_inclusive(self, password: str) -> None:
        domain.validate_new_password(password)


class TestAudience:
    ALLOWED = ("orders", "billing")

    def test_an_allowed_audience_is_returned(self) -> None:
        assert domain.allowed_audience("billing", self.ALLOWED) == "billing"

    @pytest.mark.parametrize("audience", ["gateway", "", "Orders", "orders ", "orders,billing"])
    def test_an_unknown_audience_is_a_400_invalid_audience(self, audience: str) -> None:
        with pytest.raises(BadRequest) as caught:
            domain.allowed_audience(audience, self.ALLOWED)
        assert code_of(caught) == "invalid_audience"
        assert caught.value.status == 400


class TestAccessTokenClaims:
    SESSION_ID = "the-secret-cookie-session-id-value-0123456789"

    def request(self, ttl: int = 300) -> TokenRequest:
        session = domain.new_session(self.SESSION_ID, ALICE, T0, user_agent="ua", ip="127.0.0.1")
        return TokenRequest(
            issuer="http://localhost:8000", audience="orders", user=ALICE, session=session, ttl=ttl
        )

    def test_the_claim_set_is_exactly_the_rfc_9068_profile(self) -> None:
        claims = domain.access_token_claims(self.request(), T0 + 12.7)
        assert set(claims) == {"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "client_id", "sid", "role"}
        iat = int(T0) + 12
        assert claims["iss"] == "http://localhost:8000"
        assert claims["sub"] == ALICE.id
        assert claims["aud"] == "orders"
        assert (claims["iat"], claims["nbf"], claims["exp"]) == (iat, iat, iat + 300)
        assert all(isinstance(claims[name], int) for name in ("iat", "nbf", "exp"))
        assert claims["client_id"] == domain.CLIENT_ID
        assert claims["role"] == "user"

    def test_the_lifetime_follows_the_requested_ttl(self) -> None:
        claims = domain.access_token_claims(self.request(ttl=60), T0)
        assert claims["exp"] - claims["iat"] == 60

    def test_every_token_has_a_unique_jti(self) -> None:
        request = self.request()
        jtis = {domain.access_token_claims(request, T0)["jti"] for _ in range(1000)}
        assert len(jtis) == 1000

    def test_sid_is_derived_from_the_handle_never_the_session_id(self) -> None:
        request = self.request()
        sid = domain.access_token_claims(request, T0)["sid"]
        assert isinstance(sid, str)
        assert len(sid) >= 22
        assert sid in request.session.handle
        assert sid not in self.SESSION_ID
        assert self.SESSION_ID not in sid
        assert domain.access_token_claims(request, T0 + 60)["sid"] == sid

    def test_nothing_secret_appears_in_the_claims(self) -> None:
        request = self.request()
        payload = json.dumps(domain.access_token_claims(request, T0))
        for secret in (self.SESSION_ID, request.session.csrf_token, ALICE.password_hash, "argon2"):
            assert secret not in payload
