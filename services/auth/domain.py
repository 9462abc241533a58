"""Pure rules of identity: credentials, session ids and cookies, cross-site checks and token claims.

Nothing here performs I/O or reads a clock; callers pass ``now`` in (seconds since the epoch).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import ipaddress
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.core import BadRequest, Forbidden, ValidationFailed

ROLES = ("user", "admin")
MAX_EMAIL_LENGTH = 254
MAX_PASSWORD_LENGTH = 1024
MIN_PASSWORD_LENGTH = 12
SESSION_ID_BYTES = 32
PUBLIC_HANDLE_LENGTH = 32
# A session list needs "Chrome 131 on Linux", not the whole header; and with every field of a
# session at most 64 bytes Redis keeps it as a compact listpack, a third of a hashtable's size.
MAX_USER_AGENT_LENGTH = 64
CLIENT_ID = "gateway-web"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# What a user id may look like inside a session id: no dot, and no brace that could move the
# Redis Cluster hash tag ("{...}") the store builds around it.
_USER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class User:
    """A stored account; ``id`` is stable across email and password changes."""

    id: str
    email: str
    role: str
    password_hash: str
    disabled: bool = False


@dataclass(frozen=True)
class Session:
    """A server-side session, stored under its owner's id and :func:`session_handle` of its secret id."""

    handle: str
    user_id: str
    created_at: float
    last_seen: float
    csrf_token: str
    user_agent: str = ""
    ip: str = ""
    # When the store will end the session unless it is used again, as the store computed it on
    # the use that returned this record; None on a record that did not come from a use.
    expires_at: float | None = None
    # Held by a native client through a refresh handle rather than by a browser through a cookie.
    native: bool = False

    @property
    def public_handle(self) -> str:
        """How the session is named to its owner and in tokens (``sid``): a prefix of the stored key."""
        return public_handle(self.handle)


def public_handle(handle: str) -> str:
    """The ``sid`` of the session stored under ``handle``."""
    return handle[:PUBLIC_HANDLE_LENGTH]


@dataclass(frozen=True)
class SessionPolicy:
    """How long a session lives: ``idle`` seconds without use, ``absolute`` seconds at most; and
    how many one user may hold at once (``per_user``): a new one past it ends the least recently
    used, so no account can grow Redis or the scripts that walk its sessions without bound.

    Only the parameters: the rule itself (the earlier of last use + ``idle`` and creation +
    ``absolute``) is enforced in Redis by the store's scripts, in one step with each use, and
    written nowhere else (``store._LIFETIME``).
    """

    idle: int
    absolute: int
    per_user: int = 100


def new_session_id(user_id: str) -> str:
    """A fresh session id: the owner's user id, a dot, then 256 bits from the OS CSPRNG.

    The owner travels in the (signed) cookie so that auth can name every key of the session in
    advance: it reads the session and its user in one Redis round trip, and on Redis Cluster all
    of a user's keys share one hash slot. The secret part alone is what makes the id unguessable.
    """
    return f"{user_id}.{secrets.token_urlsafe(SESSION_ID_BYTES)}"


def session_owner(session_id: str) -> str | None:
    """The user id a session id names, or None when the id does not have the shape of one."""
    user_id, dot, secret = session_id.rpartition(".")
    if not dot or not _USER_ID.fullmatch(user_id) or len(secret) < SESSION_ID_BYTES:
        return None
    return user_id


def session_handle(session_id: str) -> str:
    """The hash under which a session is stored and named; a Redis dump never yields a cookie.

    SHA-256 in unpadded base64url: 43 characters where hex needs 64, in the session's key and
    again in the user's index, for every session.
    """
    return _b64(hashlib.sha256(session_id.encode()).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# Checked in order: Chromium-based browsers also say "Chrome/" and "Safari/", Chrome says "Safari/".
_BROWSERS = (
    ("Edge", re.compile(r"\bEdgi?A?/(\d+)")),
    ("Opera", re.compile(r"\bOPR/(\d+)")),
    ("Firefox", re.compile(r"\b(?:Firefox|FxiOS)/(\d+)")),
    ("Chrome", re.compile(r"\b(?:Chrome|CriOS)/(\d+)")),
    ("Safari", re.compile(r"\bVersion/(\d+).*\bSafari/")),
)
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def user_agent_label(user_agent: str) -> str:
    """What a session list shows for a ``User-Agent``: a short one as sent, a browser's as
    ``Chrome 131 on Linux``, anything else cut to :data:`MAX_USER_AGENT_LENGTH` characters.

    Storing the label rather than the header is also data minimisation: the full string is a
    fingerprint, and nothing here needs it.
    """
    text = "".join(char for char in user_agent if char.isprintable()).strip()
    if len(text) <= MAX_USER_AGENT_LENGTH:
        return text
    browser = next(
        (f"{name} {match.group(1)}" for name, pattern in _BROWSERS if (match := pattern.search(text))), None
    )
    system = next((label for marker, label in _SYSTEMS if marker in text), None)
    if browser is None:
        return text[:MAX_USER_AGENT_LENGTH]
    return f"{browser} on {system}" if system else browser


def new_session(session_id: str, user: User, now: float, *, user_agent: str, ip: str) -> Session:
    return Session(
        handle=session_handle(session_id),
        user_id=user.id,
        created_at=now,
        last_seen=now,
        csrf_token=secrets.token_urlsafe(32),
        user_agent=user_agent_label(user_agent),
        ip=ip[:64],
    )


def new_native_session(session_id: str, user: User, now: float, *, user_agent: str, ip: str) -> Session:
    """A session for a native client: no CSRF token, since no browser will ever send it a cookie."""
    return dataclasses.replace(
        new_session(session_id, user, now, user_agent=user_agent, ip=ip), csrf_token="", native=True
    )


def renewed_session(session: Session, session_id: str, now: float) -> Session:
    """The same login under a new id and CSRF token (after a privilege change such as a new password).

    ``created_at`` is kept, so renewing never extends the absolute lifetime.
    """
    return dataclasses.replace(
        session,
        handle=session_handle(session_id),
        last_seen=now,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=None,
    )


def newest_first(sessions: list[Session]) -> list[Session]:
    return sorted(sessions, key=lambda session: (session.created_at, session.handle), reverse=True)


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` events per fixed window of ``window`` seconds."""

    limit: int
    window: int


def throttled_address(ip: str) -> str:
    """The unit an address budget counts: the address, or its /64 for IPv6.

    One IPv6 subscriber routinely holds a whole /64, so counting single addresses would give
    an attacker 2**64 fresh budgets.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@dataclass(frozen=True)
class LoginThrottlePolicy:
    """Budgets of failed logins, each a count that expires with its window (never a lock).

    * ``per_ip``: failures from one client address, whatever the account (password spraying).
    * ``per_account_ip``: failures for one account from one address (guessing one password).
    * ``per_account``: failures for one account from everywhere. Past it the account is "under
      attack", and then only addresses that have already failed on it in their window are
      refused. An attacker spread over many addresses gets one guess per new address, while the
      owner, who has not failed from their own address, still logs in: nobody elsewhere can
      spend the owner's budget.

    A success spends nothing. An unknown email is counted exactly like a known one.
    """

    per_ip: RateLimit
    per_account_ip: RateLimit
    per_account: RateLimit

    def keys(self, email: str, ip: str) -> tuple[str, str, str]:
        """The Redis keys of the three budgets, in the order of :attr:`limits`."""
        ip = throttled_address(ip)
        # Hashed, so Redis holds no email address in a key name.
        account = hashlib.sha256(normalize_email(email).encode()).hexdigest()
        pair = hashlib.sha256(f"{account}\n{ip}".encode()).hexdigest()
        # One hash tag for all three: the script that spends them needs them in one Redis Cluster slot.
        return (
            f"throttle:{{login}}:ip:{ip}",
            f"throttle:{{login}}:pair:{pair}",
            f"throttle:{{login}}:account:{account}",
        )

    @property
    def limits(self) -> tuple[RateLimit, RateLimit, RateLimit]:
        return self.per_ip, self.per_account_ip, self.per_account


def refresh_throttle_key(ip: str) -> str:
    """The Redis key of one client address's budget of failed refreshes (guessing handles)."""
    return f"throttle:{{refresh}}:ip:{throttled_address(ip)}"


@dataclass(frozen=True)
class SessionRef:
    """Where a session is stored: its owner and its handle, both derived from the cookie's id."""

    user_id: str
    handle: str


def session_ref(session_id: str) -> SessionRef | None:
    """The session a session id names, or None when the id does not have the shape of one."""
    owner = session_owner(session_id)
    return None if owner is None else SessionRef(owner, session_handle(session_id))


REFRESH_SECRET_BYTES = 32
_REFRESH_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
_SUCCESSOR_PAD = b"hybrid-auth refresh successor"


@dataclass(frozen=True)
class RefreshHandle:
    """A native client's credential, read: the session it names and the secret that proves it.

    On the wire it is ``<session id>.<secret>``. The session id (owner and 256 random bits) is
    fixed for the session's life and never stored, like a cookie's; the secret changes on every
    use. Presenting the right session id with a secret that is not the current one therefore
    proves the caller once held a handle of this session: that is how a rotated-away handle is
    recognised at any age without storing every one of them.
    """

    session_id: str
    session: SessionRef
    secret: str

    @property
    def digest(self) -> str:
        """What the store keeps of the secret: a Redis dump never yields a handle."""
        return refresh_digest(self.secret)


def new_refresh_secret() -> str:
    return secrets.token_urlsafe(REFRESH_SECRET_BYTES)


def refresh_handle(session_id: str, secret: str) -> str:
    """The handle a native client holds: the session's id and its current secret."""
    return f"{session_id}.{secret}"


def read_refresh_handle(text: str) -> RefreshHandle | None:
    """The session and secret a handle names, or None when it does not have the shape of one."""
    session_id, dot, secret = text.rpartition(".")
    if not dot or not _REFRESH_SECRET.fullmatch(secret):
        return None
    ref = session_ref(session_id)
    return None if ref is None else RefreshHandle(session_id, ref, secret)


def refresh_digest(secret: str) -> str:
    return _b64(hashlib.sha256(secret.encode()).digest())


def _successor_pad(previous: str) -> bytes:
    # A one-time pad only the holder of ``previous`` can compute: HMAC is a PRF keyed by the
    # secret, and each secret seals exactly one successor. The store keeps only SHA-256 of
    # ``previous``, from which the pad cannot be computed.
    return hmac.new(previous.encode(), _SUCCESSOR_PAD, hashlib.sha256).digest()


def seal_successor(previous: str, successor: str) -> str:
    """``successor`` sealed so that only a holder of ``previous`` can read it back (the grace retry)."""
    raw = base64.urlsafe_b64decode(successor + "=")
    return _b64(bytes(a ^ b for a, b in zip(raw, _successor_pad(previous), strict=True)))


def unseal_successor(previous: str, sealed: str) -> str:
    """The successor secret :func:`seal_successor` sealed under ``previous``."""
    return seal_successor(previous, sealed)


@dataclass(frozen=True)
class SessionCookie:
    """What a request's session cookies say, read once (:func:`read_session_cookie`).

    ``current`` is the session the request acts as: there only when exactly one session cookie
    came and it is validly signed. A ``__Host-`` cookie can exist only once per browser and
    host, so a second value means someone planted one (cookie tossing) and none is trusted.
    ``presented`` is every validly signed session among them, which a login ends (fixation).
    """

    current: SessionRef | None
    presented: tuple[SessionRef, ...]


def read_session_cookie(
    cookie_headers: list[str], name: str, unsign: Callable[[str], str | None]
) -> SessionCookie:
    """Read the session cookie ``name`` across all ``Cookie`` headers; ``unsign`` checks a value's
    signature and returns the session id, or None when the signature is wrong."""
    values = cookie_values(cookie_headers, name)
    presented = tuple(
        ref
        for value in values
        if (session_id := unsign(value)) is not None and (ref := session_ref(session_id)) is not None
    )
    current = presented[0] if len(values) == 1 and presented else None
    return SessionCookie(current=current, presented=presented)


def cookie_values(cookie_headers: list[str], name: str) -> list[str]:
    """Every value of the cookie ``name`` across all ``Cookie`` headers, signed or not."""
    return [
        value.strip()
        for header in cookie_headers
        for key, separator, value in (pair.partition("=") for pair in header.split(";"))
        if separator and key.strip() == name
    ]


def check_same_origin(origin: str | None, fetch_site: str | None, public_origin: str) -> None:
    """Refuse an unsafe request that a browser says came from another origin.

    SameSite=Strict alone does not stop a page on another port of the same host (same site,
    different origin), so the Origin must match exactly; without Origin, only
    ``Sec-Fetch-Site: same-origin`` will do, and a request with neither is refused.
    """
    if origin is not None:
        if origin != public_origin:
            raise Forbidden(
                f"open the demo at {public_origin}; requests from other origins are refused",
                code="cross_origin",
            )
        return
    if fetch_site != "same-origin":
        raise Forbidden("the request must carry an Origin header", code="origin_required")


def normalize_email(email: str) -> str:
    return email.strip().lower()


def validate_new_account(email: str, role: str, password: str) -> str:
    """The normalized email of an account about to be created, or ValidationFailed."""
    email = normalize_email(email)
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email):
        raise ValidationFailed("email is not a valid address")
    if role not in ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(ROLES)}")
    validate_new_password(password)
    return email


def validate_new_password(password: str) -> None:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise ValidationFailed(f"password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")


def allowed_audience(audience: str, allowed: tuple[str, ...]) -> str:
    """The audience of a token request, which must be one configured service."""
    if audience not in allowed:
        raise BadRequest("unknown audience", code="invalid_audience")
    return audience


@dataclass(frozen=True)
class TokenRequest:
    """What a token is minted for: who, through which session, for which service."""

    issuer: str
    audience: str
    user: User
    session: Session
    ttl: int


def access_token_claims(request: TokenRequest, now: float) -> dict[str, Any]:
    """The RFC 9068 claim set of one access token."""
    iat = int(now)
    return {
        "iss": request.issuer,
        "sub": request.user.id,
        "aud": request.audience,
        "iat": iat,
        "nbf": iat,
        "exp": iat + request.ttl,
        "jti": uuid.uuid4().hex,
        "client_id": CLIENT_ID,
        # An opaque handle derived from the stored key, never the cookie value itself.
        "sid": request.session.public_handle,
        "role": request.user.role,
    }
