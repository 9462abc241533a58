"""Auth's HTTP API declared once: each request body and response body as a msgspec type.

Routes decode a body into its type with :func:`shared.core.validate_as` (after
``read_json_object`` has refused duplicate keys, NaN and non-objects) and encode each answer from
its type; :mod:`services.auth.openapi` publishes the JSON Schemas of the same types. A limit is
written once, here, with the domain's constants, so the 422 and the document cannot disagree.

Docstrings and ``Meta`` descriptions of these types are published in the OpenAPI document, so
they are Markdown for API readers.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

import msgspec

from services.auth import domain
from shared.core import InvalidField

Email = Annotated[str, msgspec.Meta(min_length=1, max_length=domain.MAX_EMAIL_LENGTH)]
# "password" tells generated clients and documentation tools to mask the value.
Password = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=domain.MAX_PASSWORD_LENGTH, extra_json_schema={"format": "password"}
    ),
]
NewPassword = Annotated[
    str,
    msgspec.Meta(
        min_length=domain.MIN_PASSWORD_LENGTH,
        max_length=domain.MAX_PASSWORD_LENGTH,
        extra_json_schema={"format": "password"},
    ),
]
Uri = Annotated[str, msgspec.Meta(extra_json_schema={"format": "uri"})]
# Stored as a plain string; the document still names the roles there are.
Role = Annotated[str, msgspec.Meta(extra_json_schema={"enum": list(domain.ROLES)})]


def _require_text(**fields: str) -> None:
    """Refuse a lone surrogate (``"\\ud800"``): JSON can spell one, no encoder downstream accepts it."""
    for name, value in fields.items():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidField(name, f"{name} must be valid Unicode text") from None


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The credentials of `POST /login`: the email normalized once decoded, the password as sent."""

    email: Email
    password: Password

    def __post_init__(self) -> None:
        _require_text(email=self.email, password=self.password)
        self.email = domain.normalize_email(self.email)


Audience = Annotated[
    str, msgspec.Meta(description="One of the services auth mints tokens for.", examples=["orders"])
]


class MintRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `POST /token`: the one service the access token is for."""

    audience: Audience


# Room for a handle (about 120 characters) and no more: a longer string is refused unread.
RefreshHandle = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=256,
        description="Opaque and secret: keep it like a password, never put it in a URL or a log.",
        extra_json_schema={"format": "password"},
    ),
]


class NativeMintRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `POST /native/token`: the current refresh handle and the one service the token is for."""

    refresh_handle: RefreshHandle
    audience: Audience


class NativeLogoutRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `POST /native/logout`: the current refresh handle."""

    refresh_handle: RefreshHandle


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `POST /password`: the current password, and a new one that differs from it."""

    current_password: Password
    new_password: NewPassword

    def __post_init__(self) -> None:
        _require_text(current_password=self.current_password, new_password=self.new_password)
        if hmac.compare_digest(self.current_password.encode(), self.new_password.encode()):
            raise InvalidField("new_password", "the new password must differ from the current one")


class PublicUser(msgspec.Struct, frozen=True):
    """The caller's own account."""

    id: str
    email: str
    role: Role

    @classmethod
    def of(cls, user: domain.User) -> PublicUser:
        return cls(id=user.id, email=user.email, role=user.role)


class AdminUser(msgspec.Struct, frozen=True):
    """A user as an admin sees them."""

    id: str
    email: str
    role: Role
    disabled: bool

    @classmethod
    def of(cls, user: domain.User) -> AdminUser:
        return cls(id=user.id, email=user.email, role=user.role, disabled=user.disabled)


class AdminUserList(msgspec.Struct, frozen=True):
    users: list[AdminUser]


class LoginResponse(msgspec.Struct, frozen=True):
    """Who logged in, and the CSRF token the session's unsafe requests must carry."""

    user: PublicUser
    csrf_token: str


class NativeLoginResponse(msgspec.Struct, frozen=True):
    """Who logged in, and the first refresh handle of their native session (no cookie is set)."""

    user: PublicUser
    refresh_handle: RefreshHandle


class CsrfToken(msgspec.Struct, frozen=True):
    """The session's new CSRF token."""

    csrf_token: str


class TokenResponse(msgspec.Struct, frozen=True):
    """A fresh access token (RFC 6749 section 5.1)."""

    access_token: Annotated[str, msgspec.Meta(description="An RS256 `at+jwt` (RFC 9068).")]
    token_type: Literal["Bearer"]
    expires_in: Annotated[int, msgspec.Meta(ge=1)]


class NativeTokenResponse(msgspec.Struct, frozen=True):
    """A fresh access token and the refresh handle to present next time; the one presented is spent."""

    access_token: Annotated[str, msgspec.Meta(description="An RS256 `at+jwt` (RFC 9068).")]
    token_type: Literal["Bearer"]
    expires_in: Annotated[int, msgspec.Meta(ge=1)]
    refresh_handle: RefreshHandle


class LogoutResponse(msgspec.Struct, frozen=True):
    status: Literal["logged_out"]


class SessionTimes(msgspec.Struct, frozen=True):
    """When the session began and was last used, in seconds since the epoch, and when it ends unless used."""

    created_at: int
    last_seen: int
    expires_at: int | None


class Me(msgspec.Struct, frozen=True):
    """The caller, their CSRF token and their session's times."""

    user: PublicUser
    # A reloaded single-page app gets its CSRF token back here; only same-origin code can read
    # this response, since the gateway approves no CORS request.
    csrf_token: str
    session: SessionTimes

    @classmethod
    def of(cls, session: domain.Session, user: domain.User) -> Me:
        expires_at = None if session.expires_at is None else int(session.expires_at)
        times = SessionTimes(int(session.created_at), int(session.last_seen), expires_at)
        return cls(user=PublicUser.of(user), csrf_token=session.csrf_token, session=times)


class SessionInfo(msgspec.Struct, frozen=True):
    """One of the caller's sessions, as `GET /sessions` lists it."""

    handle: Annotated[str, msgspec.Meta(description="Opaque; the `sid` claim of tokens minted through it.")]
    created_at: int
    last_seen: int
    user_agent: str
    ip: str
    current: bool
    kind: Annotated[
        Literal["browser", "native"],
        msgspec.Meta(description="`native`: held by an app through a refresh handle, not a cookie."),
    ]

    @classmethod
    def of(cls, session: domain.Session, current_handle: str) -> SessionInfo:
        return cls(
            handle=session.public_handle,
            created_at=int(session.created_at),
            last_seen=int(session.last_seen),
            user_agent=session.user_agent,
            ip=session.ip,
            current=session.handle == current_handle,
            kind="native" if session.native else "browser",
        )


class SessionList(msgspec.Struct, frozen=True):
    sessions: list[SessionInfo]


class Jwk(msgspec.Struct, frozen=True):
    """A public signing key (RFC 7517): only the public members."""

    kty: Literal["RSA"]
    n: str
    e: str
    kid: str
    alg: Literal["RS256"]
    use: Literal["sig"]


class JWKS(msgspec.Struct, frozen=True):
    """The public signing keys: the active one, the next one and any still-published retired ones."""

    keys: list[Jwk]


class OpenIDConfiguration(msgspec.Struct, frozen=True):
    """Issuer metadata: enough for a stock verifier to find the keys."""

    issuer: Uri
    jwks_uri: Uri
    # Not a registered OpenID member: where this issuer's revocation feed is (see the decision record).
    revocations_uri: Uri
