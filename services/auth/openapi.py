"""The OpenAPI description of auth as served on its own port: paths as the service mounts them.

The request schemas restate the validation in :mod:`services.auth.domain` with its own
constants, so a limit changed there changes here too. The gateway publishes the same
operations under ``/auth`` (see :mod:`services.gateway.openapi`).
"""

from __future__ import annotations

from typing import Any

from services.auth.domain import (
    MAX_EMAIL_LENGTH,
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    ROLES,
)
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

_SESSION: list[dict[str, list[str]]] = [{"session": []}]
_SESSION_AND_CSRF: list[dict[str, list[str]]] = [{"session": [], "csrf": []}]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _string(**limits: Any) -> dict[str, Any]:
    return {"type": "string", **limits}


def _object(properties: dict[str, Any], *, closed: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "required": sorted(properties), "properties": properties}
    if closed:
        schema["additionalProperties"] = False
    return schema


SCHEMAS: dict[str, Any] = {
    "User": _object({"id": _string(), "email": _string(), "role": {"enum": list(ROLES)}}),
    "LoginRequest": _object(
        {
            "email": _string(minLength=1, maxLength=MAX_EMAIL_LENGTH),
            "password": _string(minLength=1, maxLength=MAX_PASSWORD_LENGTH, format="password"),
        },
        closed=True,
    ),
    "LoginResponse": _object({"user": _ref("User"), "csrf_token": _string()}),
    "TokenRequest": _object(
        {"audience": _string(description="One of the services auth mints tokens for.", examples=["orders"])},
        closed=True,
    ),
    "TokenResponse": _object(
        {
            "access_token": _string(description="An RS256 `at+jwt` (RFC 9068)."),
            "token_type": {"const": "Bearer"},
            "expires_in": {"type": "integer", "minimum": 1},
        }
    ),
    "LogoutResponse": _object({"status": {"const": "logged_out"}}),
    "Me": _object(
        {
            "user": _ref("User"),
            "csrf_token": _string(),
            "session": _object(
                {
                    "created_at": {"type": "integer"},
                    "last_seen": {"type": "integer"},
                    "expires_at": {"type": "integer"},
                }
            ),
        }
    ),
    "SessionInfo": _object(
        {
            "handle": _string(description="Opaque; the `sid` claim of tokens minted through it."),
            "created_at": {"type": "integer"},
            "last_seen": {"type": "integer"},
            "user_agent": _string(),
            "ip": _string(),
            "current": {"type": "boolean"},
        }
    ),
    "SessionList": _object({"sessions": {"type": "array", "items": _ref("SessionInfo")}}),
    "PasswordChange": _object(
        {
            "current_password": _string(minLength=1, maxLength=MAX_PASSWORD_LENGTH, format="password"),
            "new_password": _string(
                minLength=MIN_PASSWORD_LENGTH, maxLength=MAX_PASSWORD_LENGTH, format="password"
            ),
        },
        closed=True,
    ),
    "CsrfToken": _object({"csrf_token": _string()}),
    "AdminUser": _object(
        {"id": _string(), "email": _string(), "role": {"enum": list(ROLES)}, "disabled": {"type": "boolean"}}
    ),
    "AdminUserList": _object({"users": {"type": "array", "items": _ref("AdminUser")}}),
    "JWKS": _object(
        {
            "keys": {
                "type": "array",
                "items": _object(
                    {
                        "kty": {"const": "RSA"},
                        "n": _string(),
                        "e": _string(),
                        "kid": _string(),
                        "alg": {"const": "RS256"},
                        "use": {"const": "sig"},
                    }
                ),
            }
        }
    ),
    "OpenIDConfiguration": _object({"issuer": _string(format="uri"), "jwks_uri": _string(format="uri")}),
}

_ORIGIN_PARAMETERS = [
    {
        "name": "Origin",
        "in": "header",
        "required": False,
        "description": "Must equal the public origin; without it, `Sec-Fetch-Site` must be `same-origin`.",
        "schema": _string(),
    },
    {"name": "Sec-Fetch-Site", "in": "header", "required": False, "schema": _string()},
]

_HEADERS_TOO_LARGE = {"431": openapi_error("The request headers are too large.")}
_BODY_ERRORS = {
    "400": openapi_error("The body is not a JSON object, or its framing is wrong."),
    "413": openapi_error("The body is too large."),
    "415": openapi_error("The body is not `application/json`."),
    "422": openapi_error("A member is missing, unknown or of the wrong type or length."),
}
_COOKIE_ERRORS = {
    "401": openapi_error("`no_session`: no live session cookie."),
    "403": openapi_error("`cross_origin`, `origin_required` or `csrf_failed`."),
}
_THROTTLED = {
    "429": {
        **openapi_error("`too_many_requests`: over the budget; retry after `Retry-After` seconds."),
        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
    }
}
_SET_COOKIE = {"Set-Cookie": {"description": f"Sets or clears `{SESSION_COOKIE}`.", "schema": _string()}}


def _operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    tag: str,
    security: list[dict[str, list[str]]] | None = None,
    body: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "responses": {**responses, **_HEADERS_TOO_LARGE},
    }
    if parameters:
        operation["parameters"] = parameters
    if security is not None:
        operation["security"] = security
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
        operation["responses"].update(_BODY_ERRORS)
    return operation


def _cookie_operation(
    operation_id: str, summary: str, responses: dict[str, Any], *, tag: str = "sessions", **kwargs: Any
) -> dict[str, Any]:
    """An unsafe request on the caller's session: cookie, CSRF token and same-origin checks."""
    return _operation(
        operation_id,
        summary,
        {**responses, **_COOKIE_ERRORS},
        tag=tag,
        security=_SESSION_AND_CSRF,
        parameters=[*_ORIGIN_PARAMETERS, *kwargs.pop("parameters", [])],
        **kwargs,
    )


def _path_parameter(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": _string()}


_NO_CONTENT = {"204": {"description": "Done."}}
_ADMIN_ERRORS = {"403": openapi_error("`forbidden` for a caller who is not an admin, or a CSRF failure.")}
_UNKNOWN_USER = {"404": openapi_error("No such user.")}
_USER_ID = _path_parameter("user_id", "The user's stable id.")


def _admin_action(operation_id: str, summary: str) -> dict[str, Any]:
    responses = {**_NO_CONTENT, **_UNKNOWN_USER}
    operation = _cookie_operation(operation_id, summary, responses, tag="admin", parameters=[_USER_ID])
    operation["responses"].update(_ADMIN_ERRORS)
    return operation


def paths() -> dict[str, Any]:
    """Every auth operation, keyed by the path auth mounts it at."""
    return {
        "/login": {
            "post": _operation(
                "login",
                "Log in: sets the session cookie and returns the CSRF token.",
                {
                    "200": {**_json(_ref("LoginResponse"), "Logged in."), "headers": _SET_COOKIE},
                    "401": openapi_error("`invalid_credentials`: the email or the password is wrong."),
                    "403": openapi_error("`cross_origin` or `origin_required`."),
                    **_THROTTLED,
                },
                tag="sessions",
                body="LoginRequest",
                parameters=_ORIGIN_PARAMETERS,
            )
        },
        "/token": {
            "post": _cookie_operation(
                "token",
                "Mint a short-lived access token for one audience from the caller's session.",
                {**_json_status("200", "TokenResponse", "A fresh access token."), **_THROTTLED},
                tag="tokens",
                body="TokenRequest",
            )
        },
        "/logout": {
            "post": _cookie_operation(
                "logout",
                "Log out: the session is deleted and the cookie cleared.",
                {"200": {**_json(_ref("LogoutResponse"), "Logged out."), "headers": _SET_COOKIE}},
            )
        },
        "/me": {
            "get": _operation(
                "me",
                "The caller, their CSRF token and their session's times.",
                {
                    **_json_status("200", "Me", "The caller's session."),
                    "401": openapi_error("`no_session`: no live session cookie."),
                },
                tag="sessions",
                security=_SESSION,
            )
        },
        "/sessions": {
            "get": _operation(
                "list_sessions",
                "The caller's live sessions, newest first.",
                {
                    **_json_status("200", "SessionList", "The caller's sessions."),
                    "401": openapi_error("`no_session`: no live session cookie."),
                },
                tag="sessions",
                security=_SESSION,
            )
        },
        "/sessions/{handle}": {
            "delete": _cookie_operation(
                "revoke_session",
                "Revoke one of the caller's sessions (the current one clears the cookie).",
                {**_NO_CONTENT, "404": openapi_error("`not_found`: not one of the caller's live sessions.")},
                parameters=[_path_parameter("handle", "A handle from `GET /sessions`.")],
            )
        },
        "/logout-all": {
            "post": _cookie_operation(
                "logout_all", "Revoke every session of the caller; the cookie is cleared.", _NO_CONTENT
            )
        },
        "/password": {
            "post": _cookie_operation(
                "change_password",
                "Change the password: other sessions die, this one gets a new id and CSRF token.",
                {
                    **_json_status("200", "CsrfToken", "Changed; the new CSRF token."),
                    "403": openapi_error("`wrong_password`, or a same-origin or CSRF failure."),
                    # A wrong current password spends the login budgets, as a failed login does.
                    **_THROTTLED,
                },
                body="PasswordChange",
            )
        },
        "/admin/users": {
            "get": _operation(
                "admin_list_users",
                "Every user, for admins.",
                {
                    **_json_status("200", "AdminUserList", "The users."),
                    "401": openapi_error("`no_session`: no live session cookie."),
                    **_ADMIN_ERRORS,
                },
                tag="admin",
                security=_SESSION,
            )
        },
        "/admin/users/{user_id}/revoke-sessions": {
            "post": _admin_action("admin_revoke_sessions", "Revoke every session of a user.")
        },
        "/admin/users/{user_id}/disable": {
            "post": _admin_action("admin_disable_user", "Disable a user: sessions die, login is refused.")
        },
        "/admin/users/{user_id}/enable": {
            "post": _admin_action("admin_enable_user", "Enable a disabled user again.")
        },
        "/.well-known/jwks.json": {
            "get": _operation(
                "jwks",
                "The public signing keys (RFC 7517).",
                _json_status("200", "JWKS", "The key set."),
                tag="keys",
            )
        },
        "/.well-known/openid-configuration": {
            "get": _operation(
                "openid_configuration",
                "Issuer metadata: where the keys are.",
                _json_status("200", "OpenIDConfiguration", "The metadata."),
                tag="keys",
            )
        },
    }


def _json_status(status: str, schema: str, description: str) -> dict[str, Any]:
    return {status: _json(_ref(schema), description)}


def build_openapi() -> dict[str, Any]:
    """The whole description, as served at ``GET /openapi.json``."""
    return openapi_document(
        title="auth",
        description="Identity: server-side sessions, access tokens and the public signing keys.",
        paths=paths(),
        schemas=SCHEMAS,
        security_schemes=SECURITY_SCHEMES,
    )
