"""Who the client is behind proxies: ``X-Forwarded-For`` believed only as far as trusted hops vouch.

Auth needs the client's address for its login budgets; the gateway needs it to tell auth. Both
take the same ``TRUSTED_PROXIES`` list (addresses or CIDR networks) and the same walk.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from shared.core.settings import SettingsError, env_list

ProxyNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted_proxies(entries: tuple[str, ...]) -> tuple[ProxyNetwork, ...]:
    """Addresses or CIDR networks; ValueError names the first entry that is neither."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return tuple(networks)


def trusted_proxies_from_env(environ: Mapping[str, str]) -> tuple[ProxyNetwork, ...]:
    """``TRUSTED_PROXIES`` (default: none), failing fast with the variable's name."""
    try:
        return parse_trusted_proxies(env_list(environ, "TRUSTED_PROXIES", ()))
    except ValueError as exc:
        raise SettingsError(f"TRUSTED_PROXIES: {exc}") from None


def client_ip(peer: str, forwarded_for: list[str], trusted: tuple[ProxyNetwork, ...]) -> str:
    """The client's address: ``X-Forwarded-For`` is believed only as far as trusted proxies vouch.

    Walking from the peer leftwards, each hop that is a trusted proxy passes the question on to
    the address it reports; the first untrusted (or unparsable) address is the client. Anything
    to its left was written by the client itself and is ignored. ``forwarded_for`` holds every
    ``X-Forwarded-For`` header in order; a proxy chain may append to one or send several.
    """
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    current = peer
    while _is_trusted(current, trusted) and hops:
        current = hops.pop()
    return current


def _is_trusted(address: str, trusted: tuple[ProxyNetwork, ...]) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in trusted)
