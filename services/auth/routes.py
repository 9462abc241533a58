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
from services.auth.domain import Session, User
from services.auth.keys import KeyStore
from services.auth.passwords import Passwords
from services.auth.settings import Settings
from services.auth.store import SessionStore, UserStore
from shared import Forbidden, Unauthorized, read_json_object

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
    clock: Callable[[], float] = time.time


def _context(request: Request) -> AuthContext:
    context: AuthContext = request.state.auth
    return context


def _session_id_from_cookie(context: AuthContext, request: Request) -> str | None:
    cookie = request.cookies.get(context.settings.cookie_name)
    if not cookie:
        return None
    try:
        return context.cookie_signer.unsign(cookie).decode()
    except (BadSignature, UnicodeDecodeError):
        return None


async def _current_session(context: AuthContext, request: Request) -> tuple[Session, User]:
    """The caller's live session and user, not yet touched; 401 otherwise."""
    session_id = _session_id_from_cookie(context, request)
    if session_id is None:
        raise Unauthorized("no valid session", code="no_session")
    now = context.clock()
    session = await context.sessions.get(domain.session_handle(session_id), now)
    if session is None:
        raise Unauthorized("no valid session", code="no_session")
    user = await context.users.by_id(session.user_id)
    if user is None:
        await context.sessions.delete(session.handle, session.user_id)
        raise Unauthorized("no valid session", code="no_session")
    return session, user


async def _used_session(context: AuthContext, request: Request) -> tuple[Session, User]:
    """The caller's live session, touched: the idle timer slides only on a request that is allowed."""
    session, user = await _current_session(context, request)
    return await context.sessions.touch(session, context.clock()), user


def _check_cross_site(context: AuthContext, request: Request) -> None:
    domain.check_same_origin(
        request.headers.get("origin"), request.headers.get("sec-fetch-site"), context.settings.public_origin
    )


async def _csrf_protected_session(context: AuthContext, request: Request) -> tuple[Session, User]:
    """A cookie-authenticated unsafe request: same origin, live session and the session's CSRF token."""
    _check_cross_site(context, request)
    session, user = await _current_session(context, request)
    if not domain.csrf_matches(session, request.headers.get("x-csrf-token")):
        raise Forbidden("missing or wrong X-CSRF-Token", code="csrf_failed")
    return await context.sessions.touch(session, context.clock()), user


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
    user = await context.users.by_email(email)
    # Always one argon2 verification, so an unknown email costs what a wrong password costs.
    valid = await context.passwords.verify(user.password_hash if user else None, password)
    if user is None or not valid:
        raise Unauthorized("email or password is wrong", code="invalid_credentials")
    now = context.clock()
    previous_id = _session_id_from_cookie(context, request)
    if previous_id is not None:
        # Fixation: a session id presented before login is never reused, and it stops working.
        previous = await context.sessions.get(domain.session_handle(previous_id), now)
        if previous is not None:
            await context.sessions.delete(previous.handle, previous.user_id)
    session_id = domain.new_session_id()
    session = domain.new_session(
        session_id,
        user,
        now,
        user_agent=request.headers.get("user-agent", ""),
        ip=request.client.host if request.client else "",
    )
    await context.sessions.create(session, now)
    response = JSONResponse({"user": user.public(), "csrf_token": session.csrf_token}, headers=NO_STORE)
    _set_session_cookie(context, response, session_id)
    return response


async def token(request: Request) -> Response:
    context = _context(request)
    session, user = await _csrf_protected_session(context, request)
    audience = domain.requested_audience(await read_json_object(request), context.settings.audiences)
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
    await context.sessions.delete(session.handle, session.user_id)
    response = JSONResponse({"status": "logged_out"}, headers=NO_STORE)
    settings = context.settings
    response.delete_cookie(
        settings.cookie_name, path="/", secure=settings.cookie_secure, httponly=True, samesite="strict"
    )
    return response


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
    Route("/.well-known/jwks.json", jwks, methods=["GET"]),
    Route("/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
]
