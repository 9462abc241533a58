"""Forward-auth: the gateway's verdict on a request another proxy holds (nginx ``auth_request``,
Traefik ``forwardAuth``, Envoy's HTTP ``ext_authz``).

The proxy asks ``/forward-auth/<audience>`` (Envoy appends the original path after it) with the
client's ``Authorization`` header. A token the audience's verifier accepts is answered 200 with
the identity in the ``X-Auth-*`` headers below, which the proxy copies onto the request it
forwards; anything else is 401 with an RFC 6750 challenge. Every verdict has an empty body:
Traefik hands a non-2xx answer to the client as it is, and nothing of ours belongs there.

The verdict is the same one the gateway's own routes reach: the same verifier per audience, so
the same JWKS cache, verified-token memory and revocation. The original method and URI
(``X-Original-URI``, ``X-Forwarded-Method``...) are not consulted: the decision is the token's
alone, so a client that forges them changes nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping

from starlette.requests import Request
from starlette.responses import Response

from shared.core import AccessClaims, InvalidToken, ProxyNetwork, ServiceUnavailable, Unauthorized
from shared.web import TokenVerifier

PREFIX = "/forward-auth"
SUBJECT = "X-Auth-Subject"
ROLE = "X-Auth-Role"
SESSION = "X-Auth-Session"
AUDIENCE = "X-Auth-Audience"
#: Every identity header a verdict may carry, for proxies to strip from what clients send.
IDENTITY_HEADERS = (SUBJECT, ROLE, SESSION, AUDIENCE)


def is_allowed_peer(peer: str, allowed: Collection[ProxyNetwork]) -> bool:
    """True when the TCP peer ``peer`` (never a forwarded-for address) lies in ``allowed``."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in allowed)


def _header_value(value: str) -> str:
    # A header carries visible ASCII and spaces only: a claim that needs more cannot be stated
    # without an encoding every upstream would have to know, so it is refused, never mangled.
    if not all(" " <= char <= "~" for char in value):
        raise InvalidToken("claim_header")
    return value


def identity_headers(claims: AccessClaims) -> dict[str, str]:
    """The ``X-Auth-*`` headers stating ``claims``; a claim the token lacks has no header."""
    stated = {SUBJECT: claims.sub, ROLE: claims.role, SESSION: claims.sid, AUDIENCE: claims.aud}
    return {name: _header_value(value) for name, value in stated.items() if value is not None}


def _verdict(status: int, headers: Mapping[str, str]) -> Response:
    # Cache-Control: a verdict is about one token at one moment; no cache may answer for it later.
    return Response(status_code=status, headers={**headers, "Cache-Control": "no-store"})


async def verdict(request: Request, verifier: TokenVerifier | None) -> Response:
    """The answer for one forward-auth request; ``verifier`` is None for an audience not served."""
    if verifier is None:
        return _verdict(404, {})
    try:
        claims = await verifier.verify_request(request)
        headers = identity_headers(claims)
    except InvalidToken as exc:
        if exc.reason == "claim_header":
            verifier.rejected[exc.reason] += 1
        return _verdict(401, exc.headers)
    except Unauthorized as exc:
        return _verdict(401, exc.headers)
    except ServiceUnavailable as exc:
        # nginx turns any status but 2xx, 401 and 403 into its own 500; Traefik passes it on.
        return _verdict(503, {"Retry-After": "1", **exc.headers})
    return _verdict(200, headers)
