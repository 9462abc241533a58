"""The OpenAPI description of auth as served on its own port: paths as the service mounts them.

Bodies and responses are the types of :mod:`services.auth.api`, the ones the routes decode and
encode, so their schemas cannot drift from the validation. What is left to say by hand is a
table of operations: each names its guard (which credentials it needs, and so which security,
headers and errors apply) and its own answers. The gateway publishes the same operations under
``/auth`` (see :mod:`services.gateway.openapi`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from services.auth import api
from shared.core import schema_components, schema_ref
from shared.web import openapi_document, openapi_error

SESSION_COOKIE = "__Host-session"

SECURITY_SCHEMES: dict[str, Any] = {
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": "The server-side session set by `POST /login` (HttpOnly, Secure, SameSite=Strict).",
    },
    "csrf": {
        "type": "apiKey",
        "in": "header",
        "name": "X-CSRF-Token",
        "description": "The session's CSRF token, from `POST /login` or `GET /me`. Unsafe cookie "
        "requests also need `Origin` equal to the public origin (or `Sec-Fetch-Site: same-origin`).",
    },
}

_ORIGIN_PARAMETERS = (
    {
        "name": "Origin",
        "in": "header",
        "required": False,
        "description": "Must equal the public origin; without it, `Sec-Fetch-Site` must be `same-origin`.",
        "schema": {"type": "string"},
    },
    {"name": "Sec-Fetch-Site", "in": "header", "required": False, "schema": {"type": "string"}},
)
_NO_SESSION = "`no_session`: no live session cookie."


@dataclass(frozen=True)
class _Guard:
    """What an operation asks of the caller, and the refusals that follow from it."""

    security: list[dict[str, list[str]]] | None = None
    parameters: tuple[dict[str, Any], ...] = ()
    errors: Mapping[str, str] = field(default_factory=dict)


_PUBLIC = _Guard()
# Login: no session yet, but a browser's request must come from the public origin.
_SAME_ORIGIN = _Guard(parameters=_ORIGIN_PARAMETERS, errors={"403": "`cross_origin` or `origin_required`."})
# A safe request on the caller's session (routes._reading_session).
_READING = _Guard(security=[{"session": []}], errors={"401": _NO_SESSION})
# An unsafe request on the caller's session: same origin and the CSRF token (routes._changing_session).
_CHANGING = _Guard(
    security=[{"session": [], "csrf": []}],
    parameters=_ORIGIN_PARAMETERS,
    errors={"401": _NO_SESSION, "403": "`cross_origin`, `origin_required` or `csrf_failed`."},
)

# A native client's request (routes._check_native): no cookie, no query string; the refresh handle,
# when the route takes one, is in the body. OpenAPI has no security scheme for a body field, so
# the credential is described by the body's schema. No Origin or CSRF check: nothing ambient.
_NATIVE = _Guard(
    security=[],
    errors={
        "400": "`cookie_not_accepted` (a session cookie came), `query_not_accepted` (a query string came), "
        "or the body is not a JSON object or its framing is wrong."
    },
)
_NATIVE_HANDLE_REFUSED = (
    "`invalid_grant`: the handle is malformed, unknown or its session ended; `refresh_reused`: it "
    "was already rotated away, so it was copied, and its whole session is now revoked."
)

_ADMIN_ONLY = "`forbidden` for a caller who is not an admin, or a CSRF failure."
_SET_COOKIE = {
    "Set-Cookie": {"description": f"Sets or clears `{SESSION_COOKIE}`.", "schema": {"type": "string"}}
}
_BODY_ERRORS = {
    "400": "The body is not a JSON object, or its framing is wrong.",
    "413": "The body is too large.",
    "415": "The body is not `application/json`.",
    "422": "A field is missing, unknown, of the wrong type or length, or breaks a rule; `field` names it.",
}
_THROTTLED = {
    **openapi_error("`too_many_requests`: over the budget; retry after `Retry-After` seconds."),
    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
}


def _path_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


@dataclass(frozen=True)
class _Operation:
    """One row of the table: an operation, what it needs, and what it answers."""

    method: str
    path: str
    operation_id: str
    summary: str
    _: KW_ONLY
    tag: str
    guard: _Guard
    # The success: its description, and the type of its body (None: a 204 without one).
    done: str
    answer: type[Any] | None = None
    body: type[Any] | None = None
    # Refusals of this operation besides its guard's; a status here replaces the guard's words.
    errors: Mapping[str, str] = field(default_factory=dict)
    parameters: tuple[dict[str, Any], ...] = ()
    throttled: bool = False
    sets_cookie: bool = False
    # A success that is not JSON (the revocation feed): its content and headers, and other answers.
    content: Mapping[str, Any] | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    answers: Mapping[str, Any] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        operation: dict[str, Any] = {
            "operationId": self.operation_id,
            "summary": self.summary,
            "tags": [self.tag],
        }
        if parameters := [*self.guard.parameters, *self.parameters]:
            operation["parameters"] = parameters
        if self.guard.security is not None:
            operation["security"] = self.guard.security
        if self.body is not None:
            content = {"application/json": {"schema": schema_ref(self.body)}}
            operation["requestBody"] = {"required": True, "content": content}
        operation["responses"] = {**self._success(), **self.answers, **self._refusals()}
        return operation

    def _success(self) -> dict[str, Any]:
        if self.content is not None:
            return {
                "200": {
                    "description": self.done,
                    "content": dict(self.content),
                    "headers": dict(self.headers),
                }
            }
        if self.answer is None:
            return {"204": {"description": self.done}}
        success: dict[str, Any] = {
            "description": self.done,
            "content": {"application/json": {"schema": schema_ref(self.answer)}},
        }
        if self.sets_cookie:
            success["headers"] = _SET_COOKIE
        return {"200": success}

    def _refusals(self) -> dict[str, Any]:
        errors = {
            **(_BODY_ERRORS if self.body is not None else {}),
            **self.guard.errors,
            **self.errors,
            "431": "The request headers are too large.",
        }
        refusals = {status: openapi_error(description) for status, description in errors.items()}
        if self.throttled:
            refusals["429"] = _THROTTLED
        return refusals


def _admin_action(action: str, operation_id: str, summary: str) -> _Operation:
    """``POST /admin/users/{user_id}/<action>``: an admin changes one account."""
    return _Operation(
        "post", f"/admin/users/{{user_id}}/{action}", operation_id, summary,
        tag="admin", guard=_CHANGING, done="Done.",
        errors={"403": _ADMIN_ONLY, "404": "No such user."},
        parameters=(_path_parameter("user_id", "The user's stable id."),),
    )  # fmt: skip


_FEED_HEADERS = {
    "ETag": {"description": '`"<epoch>.<version>"` of the set.', "schema": {"type": "string"}},
    "Cache-Control": {"description": "`public, max-age=1`.", "schema": {"type": "string"}},
}
_FEED_PARAMETERS = (
    {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "description": "The ETag held: `304` while the set is unchanged.",
        "schema": {"type": "string"},
    },
    {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "description": "`wait=N` (RFC 7240) with a matching `If-None-Match`: held until the set changes "
        "or N seconds (at most 30) pass. Past auth's bound on held requests, answered at once "
        "without `Preference-Applied`.",
        "schema": {"type": "string"},
    },
)
_FEED = {
    "application/revocations+jwt": {
        "schema": {
            "type": "string",
            "description": "A compact JWS (RS256, header `alg`, `kid`, `typ: revocations+jwt`) whose "
            "payload is `{iss, iat, epoch, version, entries: [{kind, id, before, until}]}`; `kind` is "
            "`session` (compared with `sid`), `user` (`sub`) or `key` (the header's `kid`), and a token "
            "is revoked when its `iat` is below `before`. See docs/decisions/0008-revocation-feed.md.",
        }
    }
}
_FEED_UNCHANGED = {
    "304": {
        "description": "Unchanged since the ETag presented (after the wait, if one was held).",
        "headers": {
            **_FEED_HEADERS,
            "Preference-Applied": {
                "description": "`wait=N` when the request was held.",
                "schema": {"type": "string"},
            },
        },
    }
}


# One row per route of routes.routes, in the same order.
OPERATIONS = (
    _Operation(
        "post", "/login", "login", "Log in: sets the session cookie and returns the CSRF token.",
        tag="sessions", guard=_SAME_ORIGIN, body=api.LoginRequest,
        done="Logged in.", answer=api.LoginResponse, sets_cookie=True,
        errors={"401": "`invalid_credentials`: the email or the password is wrong."}, throttled=True,
    ),
    _Operation(
        "post", "/token", "token",
        "Mint a short-lived access token for one audience from the caller's session.",
        tag="tokens", guard=_CHANGING, body=api.MintRequest,
        done="A fresh access token.", answer=api.TokenResponse,
        errors={"400": "`invalid_audience`, or the body is not a JSON object or its framing is wrong."},
        throttled=True,
    ),
    _Operation(
        "post", "/logout", "logout", "Log out: the session is deleted and the cookie cleared.",
        tag="sessions", guard=_CHANGING, done="Logged out.", answer=api.LogoutResponse, sets_cookie=True,
    ),
    _Operation(
        "post", "/native/login", "native_login",
        "Log in from an app or a command line: no cookie, a refresh handle to keep secret.",
        tag="native", guard=_NATIVE, body=api.LoginRequest,
        done="Logged in; the session's first refresh handle.", answer=api.NativeLoginResponse,
        errors={"401": "`invalid_credentials`: the email or the password is wrong."}, throttled=True,
    ),
    _Operation(
        "post", "/native/token", "native_token",
        "Mint an access token with a refresh handle, which is rotated: present the new one next time.",
        tag="native", guard=_NATIVE, body=api.NativeMintRequest,
        done="A fresh access token and the next refresh handle. Presented again within "
        "`NATIVE_REFRESH_GRACE_SECONDS` of its rotation, before the next handle is used, a handle "
        "gets that same next handle back (a retry of a lost response).",
        answer=api.NativeTokenResponse,
        errors={
            "400": "`invalid_audience`, `cookie_not_accepted`, `query_not_accepted`, or the body is "
            "not a JSON object or its framing is wrong.",
            "401": _NATIVE_HANDLE_REFUSED,
        },
        throttled=True,
    ),
    _Operation(
        "post", "/native/logout", "native_logout",
        "Log out an app: its session ends, and the tokens it minted are revoked.",
        tag="native", guard=_NATIVE, body=api.NativeLogoutRequest,
        done="Logged out.", answer=api.LogoutResponse,
        errors={"401": _NATIVE_HANDLE_REFUSED}, throttled=True,
    ),
    _Operation(
        "get", "/me", "me", "The caller, their CSRF token and their session's times.",
        tag="sessions", guard=_READING, done="The caller's session.", answer=api.Me,
    ),
    _Operation(
        "get", "/sessions", "list_sessions", "The caller's live sessions, newest first.",
        tag="sessions", guard=_READING, done="The caller's sessions.", answer=api.SessionList,
    ),
    _Operation(
        "delete", "/sessions/{handle}", "revoke_session",
        "Revoke one of the caller's sessions (the current one clears the cookie).",
        tag="sessions", guard=_CHANGING, done="Done.",
        errors={"404": "`not_found`: not one of the caller's live sessions."},
        parameters=(_path_parameter("handle", "A handle from `GET /sessions`."),),
    ),
    _Operation(
        "post", "/logout-all", "logout_all", "Revoke every session of the caller; the cookie is cleared.",
        tag="sessions", guard=_CHANGING, done="Done.",
    ),
    _Operation(
        "post", "/password", "change_password",
        "Change the password: other sessions die, this one gets a new id and CSRF token.",
        tag="sessions", guard=_CHANGING, body=api.PasswordChange,
        done="Changed; the new CSRF token.", answer=api.CsrfToken, sets_cookie=True,
        # A wrong current password spends the login budgets, as a failed login does.
        errors={"403": "`wrong_password`, or a same-origin or CSRF failure."}, throttled=True,
    ),
    _Operation(
        "get", "/admin/users", "admin_list_users", "Every user, for admins.",
        tag="admin", guard=_READING, done="The users.", answer=api.AdminUserList,
        errors={"403": _ADMIN_ONLY},
    ),
    _admin_action("revoke-sessions", "admin_revoke_sessions", "Revoke every session of a user."),
    _admin_action("disable", "admin_disable_user", "Disable a user: sessions die, login is refused."),
    _admin_action("enable", "admin_enable_user", "Enable a disabled user again."),
    _Operation(
        "get", "/.well-known/jwks.json", "jwks", "The public signing keys (RFC 7517).",
        tag="keys", guard=_PUBLIC, done="The key set.", answer=api.JWKS,
    ),
    _Operation(
        "get", "/.well-known/openid-configuration", "openid_configuration",
        "Issuer metadata: where the keys are.",
        tag="keys", guard=_PUBLIC, done="The metadata.", answer=api.OpenIDConfiguration,
    ),
    _Operation(
        "get", "/.well-known/revocations.json", "revocations",
        "Revoked sessions, users and keys as cutoffs, signed; long-poll with `Prefer: wait`.",
        tag="keys", guard=_PUBLIC, done="The live revocation set, signed by the active key.",
        content=_FEED, headers=_FEED_HEADERS, answers=_FEED_UNCHANGED, parameters=_FEED_PARAMETERS,
        errors={"503": "The revocation set cannot be read (Redis is away and this worker holds none)."},
    ),
)  # fmt: skip


def paths() -> dict[str, Any]:
    """Every auth operation, keyed by the path auth mounts it at."""
    described: dict[str, Any] = {}
    for operation in OPERATIONS:
        described.setdefault(operation.path, {})[operation.method] = operation.document()
    return described


def _schemas() -> dict[str, Any]:
    """The schemas of every body and answer in :data:`OPERATIONS`, and of the types they use."""
    types = [
        kind for operation in OPERATIONS for kind in (operation.body, operation.answer) if kind is not None
    ]
    return schema_components(*dict.fromkeys(types))


def __getattr__(name: str) -> Any:
    # SCHEMAS is derived on first use, not at import, like every other document piece.
    if name == "SCHEMAS":
        return _schemas()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_openapi() -> dict[str, Any]:
    """The whole description, as served at ``GET /openapi.json``."""
    return openapi_document(
        title="auth",
        description="Identity: server-side sessions, access tokens and the public signing keys.",
        paths=paths(),
        schemas=_schemas(),
        security_schemes=SECURITY_SCHEMES,
    )
