"""HTTP mapping for auth: read the request, call a use case in ``service``, shape the response."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgspec
from itsdangerous import BadSignature, Signer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.auth import api, domain, revocations
from services.auth.domain import Session, SessionCookie, User
from services.auth.feed import Published, RevocationFeed
from services.auth.openapi import build_openapi
from services.auth.service import AdminAction, AuthService, NewSession
from services.auth.settings import Settings
from shared.core import BadRequest, client_ip, validate_as
from shared.web import draining_future, openapi_route, read_json_object

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


# Signed cookie values whose check is remembered, per process. A browser sends the same value on
# every request, so its HMAC need not be recomputed each time; a value is only ever found here
# after it passed (or failed) the full check once, so the cache changes no answer. Bounded, so a
# stream of made-up cookies costs what it cost before and evicts nothing that matters for long.
COOKIE_CACHE_SIZE = 4096


@dataclass(frozen=True)
class AuthContext:
    """What the handlers need, opened by the lifespan and found on ``request.state.auth``."""

    settings: Settings
    service: AuthService
    cookie_signer: Signer
    feed: RevocationFeed

    @functools.cached_property
    def session_id_of(self) -> Callable[[str], str | None]:
        """The session id a signed cookie value carries, or None when its signature is wrong."""
        signer = self.cookie_signer

        @functools.lru_cache(maxsize=COOKIE_CACHE_SIZE)
        def unsign(value: str) -> str | None:
            try:
                return signer.unsign(value).decode()
            except (BadSignature, UnicodeDecodeError):
                return None

        return unsign


def _context(request: Request) -> AuthContext:
    context: AuthContext = request.state.auth
    return context


def _session_cookie(context: AuthContext, request: Request) -> SessionCookie:
    """The request's session cookies, read once by the domain's one reader."""
    cookies = request.headers.getlist("cookie")
    return domain.read_session_cookie(cookies, context.settings.cookie_name, context.session_id_of)


def _check_same_origin(context: AuthContext, request: Request) -> None:
    domain.check_same_origin(
        request.headers.get("origin"), request.headers.get("sec-fetch-site"), context.settings.public_origin
    )


async def _reading_session(context: AuthContext, request: Request) -> tuple[Session, User]:
    """Guard of a safe (read-only) request: the caller's live session, touched, and its user."""
    return await context.service.use_session(_session_cookie(context, request).current, csrf=None)


async def _changing_session(context: AuthContext, request: Request) -> tuple[Session, User]:
    """Guard of a cookie-authenticated unsafe request: same origin, a live session, its CSRF token."""
    _check_same_origin(context, request)
    return await context.service.use_session(
        _session_cookie(context, request).current, csrf=request.headers.get("x-csrf-token", "")
    )


def _client_ip(context: AuthContext, request: Request) -> str:
    peer = request.client.host if request.client else ""
    forwarded_for = request.headers.getlist("x-forwarded-for")
    return client_ip(peer, forwarded_for, context.settings.trusted_proxies)


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


def _clear_session_cookie(context: AuthContext, response: Response) -> None:
    settings = context.settings
    response.delete_cookie(
        settings.cookie_name, path="/", secure=settings.cookie_secure, httponly=True, samesite="strict"
    )


def _json(content: msgspec.Struct, headers: Mapping[str, str] = NO_STORE) -> Response:
    # Encoded from its declared type in ``api``, the one the OpenAPI document publishes.
    return Response(msgspec.json.encode(content), media_type="application/json", headers=headers)


def _session_opened(context: AuthContext, content: msgspec.Struct, opened: NewSession) -> Response:
    response = _json(content)
    _set_session_cookie(context, response, opened.session_id)
    return response


def _no_content() -> Response:
    return Response(status_code=204, headers=NO_STORE)


def _check_native(context: AuthContext, request: Request) -> None:
    """Guard of the native routes: the handle in the body is the only credential they take.

    A session cookie is refused rather than ignored: these routes must never act for a browser's
    ambient credential, and a client sending one is confused about which flow it is in. A query
    string is refused so that a handle put in a URL (and so in access logs and histories) fails
    loudly instead of working.
    """
    if domain.cookie_values(request.headers.getlist("cookie"), context.settings.cookie_name):
        raise BadRequest(
            "native routes take no session cookie; send the refresh handle", code="cookie_not_accepted"
        )
    if request.url.query:
        raise BadRequest(
            "native routes take no query string; send the refresh handle in the JSON body",
            code="query_not_accepted",
        )


async def native_login(request: Request) -> Response:
    context = _context(request)
    _check_native(context, request)
    credentials = validate_as(await read_json_object(request), api.LoginRequest)
    opened = await context.service.native_login(
        credentials.email,
        credentials.password,
        ip=_client_ip(context, request),
        user_agent=request.headers.get("user-agent", ""),
    )
    return _json(
        api.NativeLoginResponse(user=api.PublicUser.of(opened.user), refresh_handle=opened.refresh_handle)
    )


async def native_token(request: Request) -> Response:
    context = _context(request)
    _check_native(context, request)
    wanted = validate_as(await read_json_object(request), api.NativeMintRequest)
    audience = domain.allowed_audience(wanted.audience, context.settings.audiences)
    minted = await context.service.mint_native(
        wanted.refresh_handle, audience=audience, ip=_client_ip(context, request)
    )
    body = api.NativeTokenResponse(
        access_token=minted.access_token,
        token_type="Bearer",  # noqa: S106
        expires_in=context.settings.access_token_ttl,
        refresh_handle=minted.refresh_handle,
    )
    return _json(body)


async def native_logout(request: Request) -> Response:
    context = _context(request)
    _check_native(context, request)
    presented = validate_as(await read_json_object(request), api.NativeLogoutRequest)
    await context.service.native_logout(presented.refresh_handle, ip=_client_ip(context, request))
    return _json(api.LogoutResponse(status="logged_out"))


async def login(request: Request) -> Response:
    context = _context(request)
    _check_same_origin(context, request)
    credentials = validate_as(await read_json_object(request), api.LoginRequest)
    opened, user = await context.service.login(
        credentials.email,
        credentials.password,
        presented=_session_cookie(context, request).presented,
        ip=_client_ip(context, request),
        user_agent=request.headers.get("user-agent", ""),
    )
    body = api.LoginResponse(user=api.PublicUser.of(user), csrf_token=opened.session.csrf_token)
    return _session_opened(context, body, opened)


async def token(request: Request) -> Response:
    context = _context(request)
    # The checks of _changing_session, with the body read in between: once the session has been
    # judged (inside mint), nothing may await before signing.
    _check_same_origin(context, request)
    wanted = validate_as(await read_json_object(request), api.MintRequest)
    audience = domain.allowed_audience(wanted.audience, context.settings.audiences)
    access_token = await context.service.mint(
        _session_cookie(context, request).current,
        csrf=request.headers.get("x-csrf-token", ""),
        audience=audience,
    )
    ttl = context.settings.access_token_ttl
    return _json(api.TokenResponse(access_token=access_token, token_type="Bearer", expires_in=ttl))  # noqa: S106


async def logout(request: Request) -> Response:
    context = _context(request)
    session, _ = await _changing_session(context, request)
    await context.service.logout(session)
    response = _json(api.LogoutResponse(status="logged_out"))
    _clear_session_cookie(context, response)
    return response


async def sessions(request: Request) -> Response:
    context = _context(request)
    current, user = await _reading_session(context, request)
    listing = [
        api.SessionInfo.of(session, current.handle) for session in await context.service.sessions_of(user)
    ]
    return _json(api.SessionList(sessions=listing))


async def revoke_session(request: Request) -> Response:
    context = _context(request)
    current, user = await _changing_session(context, request)
    target = await context.service.revoke_own_session(user, request.path_params["handle"])
    response = _no_content()
    if target.handle == current.handle:
        _clear_session_cookie(context, response)
    return response


async def logout_all(request: Request) -> Response:
    context = _context(request)
    _, user = await _changing_session(context, request)
    await context.service.accounts.revoke_sessions(user)
    response = _no_content()
    _clear_session_cookie(context, response)
    return response


async def change_password(request: Request) -> Response:
    context = _context(request)
    current, user = await _changing_session(context, request)
    change = validate_as(await read_json_object(request), api.PasswordChange)
    renewed = await context.service.change_own_password(
        current, user, change.current_password, change.new_password, _client_ip(context, request)
    )
    return _session_opened(context, api.CsrfToken(csrf_token=renewed.session.csrf_token), renewed)


async def admin_users(request: Request) -> Response:
    context = _context(request)
    _, admin = await _reading_session(context, request)
    users = [api.AdminUser.of(user) for user in await context.service.all_users(admin)]
    return _json(api.AdminUserList(users=users))


async def _administer(request: Request, action: AdminAction) -> Response:
    context = _context(request)
    _, admin = await _changing_session(context, request)
    await context.service.administer(admin, request.path_params["user_id"], action)
    return _no_content()


async def admin_revoke_sessions(request: Request) -> Response:
    return await _administer(request, AdminAction.REVOKE_SESSIONS)


async def admin_disable(request: Request) -> Response:
    return await _administer(request, AdminAction.DISABLE)


async def admin_enable(request: Request) -> Response:
    return await _administer(request, AdminAction.ENABLE)


async def me(request: Request) -> Response:
    context = _context(request)
    session, user = await _reading_session(context, request)
    return _json(api.Me.of(session, user))


async def jwks(request: Request) -> Response:
    context = _context(request)
    cache = f"public, max-age={context.settings.jwks_max_age}"
    return JSONResponse(context.service.keys.jwks(), headers={"Cache-Control": cache})


async def openid_configuration(request: Request) -> Response:
    issuer = _context(request).settings.issuer
    metadata = api.OpenIDConfiguration(
        issuer=issuer,
        jwks_uri=f"{issuer}/.well-known/jwks.json",
        revocations_uri=f"{issuer}{REVOCATIONS_PATH}",
    )
    return _json(metadata, headers={"Cache-Control": "public, max-age=3600"})


REVOCATIONS_PATH = "/.well-known/revocations.json"
# Never longer than a second: it is the propagation budget a shared cache may add.
_FEED_HEADERS = {"Cache-Control": "public, max-age=1", "X-Content-Type-Options": "nosniff"}


def _feed_response(published: Published, status: int, extra: Mapping[str, str]) -> Response:
    headers = {**_FEED_HEADERS, "ETag": published.etag, **extra}
    if status == 304:
        return Response(status_code=304, headers=headers)
    return Response(published.body, media_type=revocations.MEDIA_TYPE, headers=headers)


async def revocation_feed(request: Request) -> Response:
    """The revocation set as a signed JWS; 304 on a matching ``If-None-Match``, held with ``Prefer: wait``."""
    feed = _context(request).feed
    published = await feed.current()
    if_none_match = request.headers.getlist("if-none-match")
    if not revocations.not_modified(if_none_match, published.etag):
        return _feed_response(published, 200, {})
    wait = revocations.wanted_wait(request.headers.getlist("prefer"))
    if not wait:
        return _feed_response(published, 304, {})
    async with feed.holding() as held:
        if not held:
            # Past the bound, a plain conditional GET: no Preference-Applied, so the client knows
            # it was not held and asks again after max-age.
            return _feed_response(published, 304, {})
        published = await feed.changed_from(published.etag, wait, draining_future(request.scope))
    status = 304 if revocations.not_modified(if_none_match, published.etag) else 200
    return _feed_response(published, status, {"Preference-Applied": f"wait={wait}"})


routes = [
    Route("/login", login, methods=["POST"]),
    Route("/token", token, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/native/login", native_login, methods=["POST"]),
    Route("/native/token", native_token, methods=["POST"]),
    Route("/native/logout", native_logout, methods=["POST"]),
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
    Route(REVOCATIONS_PATH, revocation_feed, methods=["GET"]),
    openapi_route(build_openapi),
]
