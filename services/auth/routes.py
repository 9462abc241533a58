"""HTTP mapping for auth: parse, call the domain and stores, shape the response."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from itsdangerous import BadSignature, Signer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.auth import domain
from services.auth.domain import RateLimit, Session, User
from services.auth.keys import KeyStore
from services.auth.openapi import build_openapi
from services.auth.passwords import Passwords
from services.auth.settings import Settings
from services.auth.store import Refusal, SessionStore, ThrottleStore, UserStore
from shared import (
    ApiError,
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthorized,
    client_ip,
    openapi_route,
    read_json_object,
)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(frozen=True)
class AuthContext:
    """What the handlers need, opened by the lifespan and found on ``request.state.auth``."""

    settings: Settings
    users: UserStore
    sessions: SessionStore
    passwords: Passwords
    keys: KeyStore
    cookie_signer: Signer
    throttles: ThrottleStore
    clock: Callable[[], float] = time.time


def _context(request: Request) -> AuthContext:
    context: AuthContext = request.state.auth
    return context


def _session_ids_from_cookies(context: AuthContext, request: Request) -> list[str]:
    """The validly signed session ids among every session cookie the request carries."""
    ids = []
    for cookie in domain.cookie_values(request.headers.getlist("cookie"), context.settings.cookie_name):
        try:
            ids.append(context.cookie_signer.unsign(cookie).decode())
        except (BadSignature, UnicodeDecodeError):
            continue
    return ids


def _session_id_from_cookie(context: AuthContext, request: Request) -> str | None:
    """The one session id of the request; none when a second session cookie was planted beside it."""
    cookies = domain.cookie_values(request.headers.getlist("cookie"), context.settings.cookie_name)
    if len(cookies) != 1:
        return None
    ids = _session_ids_from_cookies(context, request)
    return ids[0] if ids else None


async def _session_in_use(
    context: AuthContext, request: Request, *, csrf: bool, token_budget: RateLimit | None = None
) -> tuple[Session, User]:
    """The caller's session after this use and its user: 401 without a live one, 403 on a CSRF miss.

    With ``csrf``, the request's X-CSRF-Token must be the session's. The idle timer slides only
    on a request that is allowed; ``token_budget`` spends one token request (429 when over).
    """
    session_id = _session_id_from_cookie(context, request)
    owner = None if session_id is None else domain.session_owner(session_id)
    if session_id is None or owner is None:
        raise Unauthorized("no valid session", code="no_session")
    used = await context.sessions.use(
        owner,
        domain.session_handle(session_id),
        context.clock(),
        csrf=request.headers.get("x-csrf-token", "") if csrf else None,
        token_budget=token_budget,
    )
    if used is Refusal.CSRF:
        raise Forbidden("missing or wrong X-CSRF-Token", code="csrf_failed")
    if used is Refusal.NO_SESSION:
        raise Unauthorized("no valid session", code="no_session")
    return used


async def _used_session(context: AuthContext, request: Request) -> tuple[Session, User]:
    """The caller's live session, touched, for a safe (read-only) request."""
    return await _session_in_use(context, request, csrf=False)


def _check_cross_site(context: AuthContext, request: Request) -> None:
    domain.check_same_origin(
        request.headers.get("origin"), request.headers.get("sec-fetch-site"), context.settings.public_origin
    )


async def _csrf_protected_session(context: AuthContext, request: Request) -> tuple[Session, User]:
    """A cookie-authenticated unsafe request: same origin, live session and the session's CSRF token."""
    _check_cross_site(context, request)
    return await _session_in_use(context, request, csrf=True)


def _client_ip(context: AuthContext, request: Request) -> str:
    peer = request.client.host if request.client else ""
    forwarded_for = request.headers.getlist("x-forwarded-for")
    return client_ip(peer, forwarded_for, context.settings.trusted_proxies)


async def _reserve_login_attempt(context: AuthContext, email: str, ip: str) -> tuple[str, str, str]:
    """Spend one failure from the login budgets in advance, or 429 before any argon2 work."""
    policy = context.settings.login_throttle
    keys = policy.keys(email, ip)
    retry_after = await context.throttles.reserve_login(keys, policy.limits)
    if retry_after:
        raise TooManyRequests("too many failed logins; try again later", retry_after=retry_after)
    return keys


def _set_session_cookie(context: AuthContext, response: Response, session_id: str) -> None:
    settings = context.settings
    response.set_cookie(
        settings.cookie_name,
        context.cookie_signer.sign(session_id).decode(),
        max_age=settings.session_absolute_timeout,
        path="/",
        secure=settings.cookie_secure,
        httponly=True,
        samesite="strict",
    )


async def login(request: Request) -> Response:
    context = _context(request)
    _check_cross_site(context, request)
    email, password = domain.validate_credentials(await read_json_object(request))
    ip = _client_ip(context, request)
    # Counted by the email as typed (normalized), whether or not an account has it.
    throttle_keys = await _reserve_login_attempt(context, email, ip)
    try:
        user = await context.users.by_email(email)
        # Always one argon2 verification, so an unknown email costs what a wrong password costs.
        valid = await context.passwords.verify(user.password_hash if user else None, password)
    except ApiError:
        # A 503 (Redis away, argon2 queue full) is no failed guess.
        await context.throttles.refund(throttle_keys)
        raise
    # A disabled account fails exactly like a wrong password, budget included.
    if user is None or not valid or user.disabled:
        raise Unauthorized("email or password is wrong", code="invalid_credentials")
    await context.throttles.refund(throttle_keys)
    now = context.clock()
    for previous_id in _session_ids_from_cookies(context, request):
        # Fixation: a session id presented before login is never reused, and it stops working.
        owner = domain.session_owner(previous_id)
        if owner is not None:
            await context.sessions.delete(owner, domain.session_handle(previous_id))
    session_id = domain.new_session_id(user.id)
    session = domain.new_session(
        session_id,
        user,
        now,
        user_agent=request.headers.get("user-agent", ""),
        ip=ip,
    )
    await context.sessions.create(session, now)
    response = JSONResponse({"user": user.public(), "csrf_token": session.csrf_token}, headers=NO_STORE)
    _set_session_cookie(context, response, session_id)
    return response


async def token(request: Request) -> Response:
    context = _context(request)
    _check_cross_site(context, request)
    # The body is read first, so that nothing awaits between the session's last check and signing.
    audience = domain.requested_audience(await read_json_object(request), context.settings.audiences)
    session, user = await _session_in_use(
        context, request, csrf=True, token_budget=context.settings.token_rate
    )
    claims = domain.access_token_claims(
        domain.TokenRequest(
            issuer=context.settings.issuer,
            audience=audience,
            user=user,
            session=session,
            ttl=context.settings.access_token_ttl,
        ),
        context.clock(),
    )
    body = {
        "access_token": context.keys.sign(claims),
        "token_type": "Bearer",
        "expires_in": context.settings.access_token_ttl,
    }
    return JSONResponse(body, headers=NO_STORE)


async def logout(request: Request) -> Response:
    context = _context(request)
    session, _ = await _csrf_protected_session(context, request)
    await context.sessions.delete(session.user_id, session.handle)
    response = JSONResponse({"status": "logged_out"}, headers=NO_STORE)
    _clear_session_cookie(context, response)
    return response


def _clear_session_cookie(context: AuthContext, response: Response) -> None:
    settings = context.settings
    response.delete_cookie(
        settings.cookie_name, path="/", secure=settings.cookie_secure, httponly=True, samesite="strict"
    )


def _no_content() -> Response:
    return Response(status_code=204, headers=NO_STORE)


async def sessions(request: Request) -> Response:
    context = _context(request)
    current, user = await _used_session(context, request)
    live = await context.sessions.live_for_user(user.id, context.clock())
    listing = [session.listing(current.handle) for session in domain.newest_first(live)]
    return JSONResponse({"sessions": listing}, headers=NO_STORE)


async def revoke_session(request: Request) -> Response:
    context = _context(request)
    current, user = await _csrf_protected_session(context, request)
    handle = request.path_params["handle"]
    live = await context.sessions.live_for_user(user.id, context.clock())
    target = next((session for session in live if session.public_handle == handle), None)
    if target is None:
        raise NotFound("no such session")
    await context.sessions.delete(user.id, target.handle)
    response = _no_content()
    if target.handle == current.handle:
        _clear_session_cookie(context, response)
    return response


async def logout_all(request: Request) -> Response:
    context = _context(request)
    _, user = await _csrf_protected_session(context, request)
    await context.sessions.delete_all_for_user(user.id)
    response = _no_content()
    _clear_session_cookie(context, response)
    return response


async def change_password(request: Request) -> Response:
    context = _context(request)
    current, user = await _csrf_protected_session(context, request)
    old_password, new_password = domain.validate_password_change(await read_json_object(request))
    # Guessing the current password through a stolen session spends the login budgets.
    throttle_keys = await _reserve_login_attempt(context, user.email, _client_ip(context, request))
    if not await context.passwords.verify(user.password_hash, old_password):
        raise Forbidden("the current password is wrong", code="wrong_password")
    await context.throttles.refund(throttle_keys)
    await context.users.set_password_hash(user.id, await context.passwords.hash(new_password))
    now = context.clock()
    session_id = domain.new_session_id(user.id)
    renewed = domain.renewed_session(current, session_id, now)
    # One script revokes every session of the user, the current one's old id included.
    await context.sessions.create(renewed, now, revoke_others=True)
    response = JSONResponse({"csrf_token": renewed.csrf_token}, headers=NO_STORE)
    _set_session_cookie(context, response, session_id)
    return response


def _require_admin(user: User) -> None:
    if user.role != "admin":
        raise Forbidden("administrators only", code="forbidden")


async def _target_user(context: AuthContext, request: Request) -> User:
    target = await context.users.by_id(request.path_params["user_id"])
    if target is None:
        raise NotFound("no such user")
    return target


async def admin_users(request: Request) -> Response:
    context = _context(request)
    _, admin = await _used_session(context, request)
    _require_admin(admin)
    users = [user.admin_view() for user in await context.users.all()]
    return JSONResponse({"users": users}, headers=NO_STORE)


async def admin_revoke_sessions(request: Request) -> Response:
    context = _context(request)
    _, admin = await _csrf_protected_session(context, request)
    _require_admin(admin)
    target = await _target_user(context, request)
    await context.sessions.delete_all_for_user(target.id)
    return _no_content()


async def admin_disable(request: Request) -> Response:
    context = _context(request)
    _, admin = await _csrf_protected_session(context, request)
    _require_admin(admin)
    target = await _target_user(context, request)
    # Disabled first: a login racing this finds the flag, and a session it made dies below.
    await context.users.set_disabled(target.id, True)
    await context.sessions.delete_all_for_user(target.id)
    return _no_content()


async def admin_enable(request: Request) -> Response:
    context = _context(request)
    _, admin = await _csrf_protected_session(context, request)
    _require_admin(admin)
    target = await _target_user(context, request)
    await context.users.set_disabled(target.id, False)
    return _no_content()


async def me(request: Request) -> Response:
    context = _context(request)
    session, user = await _used_session(context, request)
    policy = context.sessions.policy
    body = {
        "user": user.public(),
        # A reloaded single-page app gets its CSRF token back here; only same-origin code can
        # read this response, since the gateway approves no CORS request.
        "csrf_token": session.csrf_token,
        "session": {
            "created_at": int(session.created_at),
            "last_seen": int(session.last_seen),
            "expires_at": int(policy.expires_at(session)),
        },
    }
    return JSONResponse(body, headers=NO_STORE)


async def jwks(request: Request) -> Response:
    context = _context(request)
    cache = f"public, max-age={context.settings.jwks_max_age}"
    return JSONResponse(context.keys.jwks(), headers={"Cache-Control": cache})


async def openid_configuration(request: Request) -> Response:
    issuer = _context(request).settings.issuer
    metadata = {"issuer": issuer, "jwks_uri": f"{issuer}/.well-known/jwks.json"}
    return JSONResponse(metadata, headers={"Cache-Control": "public, max-age=3600"})


routes = [
    Route("/login", login, methods=["POST"]),
    Route("/token", token, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/me", me, methods=["GET"]),
    Route("/sessions", sessions, methods=["GET"]),
    Route("/sessions/{handle}", revoke_session, methods=["DELETE"]),
    Route("/logout-all", logout_all, methods=["POST"]),
    Route("/password", change_password, methods=["POST"]),
    Route("/admin/users", admin_users, methods=["GET"]),
    Route("/admin/users/{user_id}/revoke-sessions", admin_revoke_sessions, methods=["POST"]),
    Route("/admin/users/{user_id}/disable", admin_disable, methods=["POST"]),
    Route("/admin/users/{user_id}/enable", admin_enable, methods=["POST"]),
    Route("/.well-known/jwks.json", jwks, methods=["GET"]),
    Route("/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
    openapi_route(build_openapi),
]
