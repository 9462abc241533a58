"""``python -m bench.comparison``: fill docs/comparison.md's numbers from the committed bench run.

The document's prose is written by hand; every number sits in a region between
``<!-- generated:NAME -->`` and ``<!-- end generated:NAME -->`` that this module rewrites from
``bench/results/latest.json`` and the code's own defaults (token lifetime, leeway, key
rotation timings), so no figure in it is ever typed. ``--check`` fails instead of writing when
the file is not what the results produce. ``make bench`` runs it after every measurement.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report
from services.auth.settings import Settings, rotation_policy
from shared.web import VerifierSettings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "latest.json"
DOCUMENT = ROOT / "docs" / "comparison.md"

_REGION = re.compile(
    r"(?P<open><!-- generated:(?P<name>[a-z-]+) -->\n)"
    r"(?P<body>.*?)"
    r"(?P<close><!-- end generated:(?P=name) -->)",
    re.DOTALL,
)
# Only the settings' defaults are read; dev mode lets the required secret be a stand-in.
_DEFAULTS_ENV = {"APP_ENV": "dev", "SESSION_SECRET": "defaults-only"}


@dataclass(frozen=True)
class Defaults:
    """The code's own defaults that the comparison quotes."""

    token_ttl: int
    leeway: int
    jwks_max_age: int
    publish_lead: float
    retired_period: float
    max_stale: float
    idle_timeout: int
    absolute_timeout: int
    verified_cache_size: int
    feed_max_stale: float

    @property
    def revocation_window(self) -> int:
        """The longest a minted token lives with no cutoff covering it: its lifetime, then the leeway."""
        return self.token_ttl + self.leeway


def defaults() -> Defaults:
    auth = Settings.from_env(_DEFAULTS_ENV)
    verifier = VerifierSettings.from_env({})
    rotation = rotation_policy({})
    return Defaults(
        token_ttl=rotation.token_ttl,
        leeway=verifier.leeway,
        jwks_max_age=rotation.jwks_max_age,
        publish_lead=rotation.publish_lead,
        retired_period=rotation.retired_period,
        max_stale=verifier.jwks.max_stale,
        idle_timeout=auth.session_idle_timeout,
        absolute_timeout=auth.session_absolute_timeout,
        verified_cache_size=verifier.verified_cache_size,
        feed_max_stale=verifier.revocations.max_stale if verifier.revocations else 0.0,
    )


def count(value: float) -> str:
    return f"{value:,.0f}"


def ratio(value: float) -> str:
    return f"{value:.2f}"


@dataclass(frozen=True)
class Figures:
    """Every number the document shows, formatted, by what it is."""

    data: Mapping[str, Any]
    code: Defaults

    def rps(self, scenario: str) -> str:
        return count(self.data["scenarios"][scenario]["rps"])

    def ratio(self, name: str) -> str:
        found = {item.name: item.value for item in report.ratios(dict(self.data))}
        return ratio(found[name])

    @property
    def token(self) -> str:
        return count(self.data["sizes"]["access_token_bytes"])

    @property
    def cookie(self) -> str:
        return count(self.data["sizes"]["session_cookie_bytes"])

    @property
    def session_bytes(self) -> str:
        return count(self.data["redis_memory"]["bytes_per_session"])

    @property
    def many_sessions(self) -> str:
        return count(self.data["redis_memory"]["sessions"])


def _source(f: Figures) -> str:
    machine = f.data["machine"]
    return (
        f"Measured by `make bench` at {f.data['when']} on {machine['cpus']} CPUs, one worker per "
        "service and wrk on the same machine, and read from `bench/results/latest.json`; lifetimes "
        "and timeouts are the code's defaults (`services/auth/settings.py:rotation_policy`, "
        "`shared/web/verifier.py:VerifierSettings.from_env`).\n"
    )


def _table(f: Figures) -> str:
    c = f.code
    rows = [
        ("", "Sessions (cookie, a Redis lookup per request)", "JWT alone", "Hybrid (this project)"),
        (
            "State",
            f"on the server: {f.session_bytes} bytes of Redis per session "
            f"(measured over {f.many_sessions} sessions)",
            "none on the server: the token carries it",
            f"sessions in Redis for auth only ({f.session_bytes} bytes each); gateway and orders hold "
            f"public keys and at most {count(c.verified_cache_size)} verified tokens in memory",
        ),
        (
            "Storage (client)",
            f"a cookie of {f.cookie} bytes",
            f"a token of {f.token} bytes that the client must keep somewhere",
            f"the HttpOnly cookie ({f.cookie} bytes) for auth; the token ({f.token} bytes) "
            "in page memory only",
        ),
        (
            "Scalability",
            f"every request reads Redis: {f.rps('session_lookup')} req/s (`GET /auth/me`, one worker); "
            f"{f.ratio('session lookup, 100,000 sessions / few')} of that with "
            f"{f.many_sessions} more sessions",
            f"verified locally: {f.rps('verify_warm')} req/s for a reused token, "
            f"{f.rps('verify_cold')} req/s when every token is new",
            f"API calls verify locally, as JWT ({f.rps('verify_warm')} req/s); Redis sees logins and "
            f"one `/token` per client per {c.token_ttl} s ({f.rps('mint')} mints/s on one worker)",
        ),
        (
            "Revocation",
            "at once: the next request finds no session",
            f"none before `exp`: a token lives its {c.token_ttl} s plus {c.leeway} s leeway, "
            "and without a session a client needs longer tokens or a refresh token",
            "no new token at once; a minted one is refused once the signed revocation feed "
            "reaches the verifiers by long-poll (under a second, measured by `make bench`); "
            f"a verifier that cannot reach the feed for {count(c.feed_max_stale)} s fails closed; "
            f"a token no cutoff covers lives at most {c.revocation_window} s "
            f"({c.token_ttl} s + {c.leeway} s leeway)",
        ),
        (
            "Payload size",
            f"{f.cookie} bytes per request",
            f"{f.token} bytes per request",
            f"{f.token} bytes per API request, {f.cookie} per request to auth",
        ),
        (
            "Cross-domain",
            "the cookie belongs to one host (`__Host-`): every service shares the origin or calls back",
            "any service with the public keys verifies; `aud` confines a token to one",
            "tokens cross services, one audience each; the cookie never leaves the gateway's origin",
        ),
        (
            "Mobile",
            "needs a cookie jar",
            "an `Authorization` header",
            "the token in `Authorization`; only `/auth/*` calls carry the cookie",
        ),
        (
            "Server load",
            f"a Redis round trip per request: {f.ratio('session lookup / verify warm: (5)/(2)')} "
            "of a verified request's rate",
            f"one RSA verification per new token ({count(f.data['rsa']['verify_per_second'])}/s "
            "on one core), none for a token already seen",
            f"per API call {f.ratio('verify warm / unauthenticated: (2)/(1)')} of an unauthenticated "
            f"request's rate; per client every {c.token_ttl} s one mint, "
            f"{f.ratio('minting / raw RSA-2048 signing, one core: (4)')} of raw RSA signing "
            f"({count(f.data['rsa']['sign_per_second'])}/s)",
        ),
        (
            "Complexity",
            "one store, one cookie, one lookup",
            "key distribution, a verifier with many pitfalls, no logout",
            f"both, plus key rotation: a new key is published {count(c.publish_lead)} s before it "
            f"signs and an old one for {count(c.retired_period)} s after",
        ),
    ]
    lines = [
        "| " + " | ".join(rows[0]) + " |",
        "|---|---|---|---|",
        *("| **" + row[0] + "** | " + " | ".join(row[1:]) + " |" for row in rows[1:]),
    ]
    return "\n".join(lines) + "\n"


def _revocation(f: Figures) -> str:
    c = f.code
    return "\n".join(
        [
            "| event | sessions | JWT alone | hybrid |",
            "|---|---|---|---|",
            "| logout, logout everywhere, password change, admin revoke | at once | "
            "not before `exp` + leeway | new tokens at once; minted ones once the revocation feed "
            "reaches the verifiers (under a second) |",
            f"| session idle | after {count(c.idle_timeout)} s | no idea of idle | "
            f"after {count(c.idle_timeout)} s, then at most {c.revocation_window} s |",
            f"| session lifetime | at most {count(c.absolute_timeout)} s | the token's `exp` | "
            f"at most {count(c.absolute_timeout)} s, then at most {c.revocation_window} s |",
            "| signing key compromised (`keys revoke KID`) | not applicable | "
            "not before every verifier refetches | its tokens once the revocation feed reaches the "
            f"verifiers; the key leaves their JWKS within the max-age, {c.jwks_max_age} s |",
            "",
        ]
    )


def _measurements(f: Figures) -> str:
    scenarios = f.data["scenarios"]
    return "\n".join(
        [
            "| measurement | value |",
            "|---|---|",
            f"| unauthenticated route (framework ceiling) | {f.rps('health')} req/s |",
            f"| verified, reused token | {f.rps('verify_warm')} req/s "
            f"({f.ratio('verify warm / unauthenticated: (2)/(1)')} of the ceiling) |",
            f"| verified, every token new | {f.rps('verify_cold')} req/s "
            f"({f.ratio('verify cold / unauthenticated: (2)/(1)')}) |",
            f"| session lookup in Redis (`GET /auth/me`) | {f.rps('session_lookup')} req/s "
            f"({f.ratio('session lookup / verify warm: (5)/(2)')} of a reused token, "
            f"{f.ratio('session lookup / verify cold: (5)/(2)')} of a new one) |",
            f"| minting (`POST /auth/token`) | {f.rps('mint')} req/s |",
            f"| login (argon2id on purpose) | {f.rps('login')} req/s |",
            f"| `GET /api/orders` through the gateway / direct | {f.rps('orders_gateway')} / "
            f"{f.rps('orders_direct')} req/s |",
            f"| raw RSA-2048 on one core, sign / verify | {count(f.data['rsa']['sign_per_second'])} / "
            f"{count(f.data['rsa']['verify_per_second'])} per second |",
            f"| access token / session cookie value | {f.token} / {f.cookie} bytes |",
            f"| Redis memory per session | {f.session_bytes} bytes over {f.many_sessions} sessions |",
            f"| errors across every scenario | {sum(s['errors'] for s in scenarios.values())} |",
            "",
        ]
    )


REGIONS: dict[str, Callable[[Figures], str]] = {
    "source": _source,
    "table": _table,
    "revocation": _revocation,
    "measurements": _measurements,
}


def render(template: str, data: Mapping[str, Any], code: Defaults) -> str:
    """``template`` with every generated region rewritten; each region must appear exactly once."""
    figures = Figures(data, code)
    names = [match.group("name") for match in _REGION.finditer(template)]
    unknown = sorted(set(names) - set(REGIONS))
    missing = sorted(set(REGIONS) - set(names))
    if unknown or missing or len(names) != len(set(names)):
        raise ValueError(f"generated regions: unknown {unknown}, missing {missing}, found {names}")
    return _REGION.sub(
        lambda match: match.group("open") + REGIONS[match.group("name")](figures) + match.group("close"),
        template,
    )


def regions(text: str) -> dict[str, str]:
    """The body of every generated region of ``text``, by name."""
    return {match.group("name"): match.group("body") for match in _REGION.finditer(text)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.comparison", description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--document", type=Path, default=DOCUMENT)
    parser.add_argument("--check", action="store_true", help="fail if the document is out of date")
    args = parser.parse_args(argv)
    current = args.document.read_text()
    rendered = render(current, json.loads(args.results.read_text()), defaults())
    if args.check:
        if rendered != current:
            print(f"{args.document} is out of date: run python -m bench.comparison", file=sys.stderr)
            return 1
        return 0
    args.document.write_text(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
