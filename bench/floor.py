"""``python -m bench.floor``: what a bare ASGI app on the services' own server stack reaches.

The bench's targets compare a service with itself. This says how much of a missed target the
stack leaves room for: bare apps, with no framework, middleware or JSON parsing, run on the
same uvicorn protocol as the services, against the same Redis and keys, measured round by round
beside the real services. Each bare app does one thing:

* ``health``: answers, nothing else;
* ``rsa``: RS256-verifies the bearer token's signature with the issuer's public key, nothing else
  (no parsing rules, no claims);
* ``verifier``: the project's whole :class:`~shared.web.verifier.TokenVerifier`;
* ``mint``: the session cookie, :meth:`SessionStore.use <services.auth.store.SessionStore.use>`
  and :meth:`KeyStore.sign <services.auth.key_store.KeyStore.sign>`, nothing else.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from itsdangerous import Signer

from bench import rsa
from bench.run import BENCH_ENV, Bench, Options
from deploy.devcluster import Cluster, ClusterConfig
from deploy.processes import free_port, with_parent_death_signal
from services.auth import domain
from services.auth.key_store import KeyStore
from services.auth.redis_client import connect
from services.auth.settings import Settings
from services.auth.store import SessionStore
from shared.runtime.protocol import HttpProtocol
from shared.web.verifier import TokenVerifier, VerifierSettings, open_verifier

logger = logging.getLogger("bench.floor")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[dict[bytes, bytes]], Awaitable[bytes]]
MODES = ("health", "rsa", "verifier", "mint")


async def _health(headers: dict[bytes, bytes]) -> bytes:
    return b'{"status":"ok"}'


def _token(headers: dict[bytes, bytes]) -> str:
    return headers[b"authorization"].decode().removeprefix("Bearer ")


def _rsa_handler(public_key: RSAPublicKey) -> Handler:
    async def handle(headers: dict[bytes, bytes]) -> bytes:
        signing_input, _, signature = _token(headers).rpartition(".")
        public_key.verify(
            base64.urlsafe_b64decode(signature + "=="),
            signing_input.encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        return b'{"verified":true}'

    return handle


def _verifier_handler(verifier: TokenVerifier) -> Handler:
    async def handle(headers: dict[bytes, bytes]) -> bytes:
        claims = await verifier.verify(_token(headers))
        return json.dumps({"sub": claims.sub}).encode()

    return handle


def _mint_handler(settings: Settings, sessions: SessionStore, keys: KeyStore) -> Handler:
    signer = Signer(settings.session_secret.value, salt="session-cookie")

    async def handle(headers: dict[bytes, bytes]) -> bytes:
        session_id = signer.unsign(headers[b"cookie"].decode().partition("=")[2]).decode()
        owner = domain.session_owner(session_id)
        assert owner is not None
        used = await sessions.use(
            owner,
            domain.session_handle(session_id),
            time.time(),
            csrf=headers[b"x-csrf-token"].decode(),
            token_budget=settings.token_rate,
        )
        assert isinstance(used, tuple), used
        session, user = used
        request = domain.TokenRequest(
            issuer=settings.issuer,
            audience="orders",
            user=user,
            session=session,
            ttl=settings.access_token_ttl,
        )
        token = keys.sign(domain.access_token_claims(request, time.time()))
        return json.dumps({"access_token": token, "token_type": "Bearer"}).encode()

    return handle


@contextlib.asynccontextmanager
async def _handler(mode: str) -> AsyncIterator[Handler]:
    if mode == "health":
        yield _health
    elif mode in ("rsa", "verifier"):
        async with open_verifier(VerifierSettings.from_env(os.environ), "orders") as verifier:
            # open_verifier has tried one load; auth is up, so that load had the keys.
            if not verifier.ready:
                raise SystemExit("the bare app could not load the JWKS")
            key = next(iter(verifier.keys.keys().values())).public_key
            assert isinstance(key, RSAPublicKey)
            yield _rsa_handler(key) if mode == "rsa" else _verifier_handler(verifier)
    else:
        settings = Settings.from_env(os.environ)
        client = connect(settings.redis_url.value, settings.redis_timeout)
        policy = domain.SessionPolicy(
            idle=settings.session_idle_timeout, absolute=settings.session_absolute_timeout
        )
        try:
            yield _mint_handler(
                settings, SessionStore(client, policy), KeyStore(settings.keys_dir, settings.rotation)
            )
        finally:
            await client.aclose()


def bare_app(mode: str) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The bare ASGI app for ``mode``; ``GET /ready`` answers once it can serve."""
    handlers: list[Handler] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            async with _handler(mode) as handler:
                handlers.append(handler)
                await send({"type": "lifespan.startup.complete"})
                await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        headers = dict(scope["headers"])
        body = b"{}" if scope["path"] == "/ready" else await handlers[0](headers)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


@contextlib.contextmanager
def _bare_apps(env: dict[str, dict[str, str]]) -> Iterator[dict[str, str]]:
    """Every bare app running, by mode: its URL."""
    started: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for mode in MODES:
            port = free_port()
            argv = [sys.executable, "-m", "bench.floor", "--serve", mode, "--port", str(port)]
            started[mode] = (
                subprocess.Popen(with_parent_death_signal(argv), env=env[mode]),  # noqa: S603 - our own module
                f"http://127.0.0.1:{port}",
            )
        for mode, (process, url) in started.items():
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the bare {mode} app did not start")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                        break
                time.sleep(0.1)
        yield {mode: url for mode, (_, url) in started.items()}
    finally:
        for process, _ in started.values():
            process.terminate()
            process.wait(timeout=10)


def measure(rounds: int, seconds: int) -> list[dict[str, float]]:
    """Per round: req/s of the services' routes and the bare apps, and the raw RSA rates."""
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        work_dir = Path(tmp)
        cluster = Cluster(ClusterConfig.on_free_ports(work_dir / "cluster", BENCH_ENV))
        with cluster:
            bench = Bench(cluster, Options(seconds, 2, 64, 20_000, 0, work_dir, rounds), work_dir)
            owner = bench.login()
            _, mint = bench.session_loads(64)
            orders, auth = cluster.service_url("orders"), cluster.service_url("auth")
            env = {
                mode: {**cluster.env_for("auth" if mode == "mint" else "orders"), "LOG_LEVEL": "warning"}
                for mode in MODES
            }
            results = []
            with _bare_apps(env) as bare:
                for number in range(rounds):
                    logger.info("round %d of %d", number + 1, rounds)
                    token = bench.mint(owner)
                    cold = {"BENCH_LINES_FILE": str(bench.cold_tokens(token, 20_000))}
                    rates = rsa.measure()
                    results.append(
                        {
                            "orders health": bench.measure(f"{orders}/healthz", "header").rps,
                            "orders cold": bench.measure(f"{orders}/whoami", "lines", cold).rps,
                            "bare health": bench.measure(f"{bare['health']}/", "header").rps,
                            "bare rsa cold": bench.measure(f"{bare['rsa']}/", "lines", cold).rps,
                            "bare verifier cold": bench.measure(f"{bare['verifier']}/", "lines", cold).rps,
                            "auth mint": bench.measure(f"{auth}/token", "lines", mint).rps,
                            "bare mint": bench.measure(f"{bare['mint']}/", "lines", mint).rps,
                            "raw sign": rates.sign_per_second,
                        }
                    )
    return results


RATIOS = (
    ("orders cold / orders health", "orders cold", "orders health"),
    ("bare rsa cold / bare health", "bare rsa cold", "bare health"),
    ("bare verifier cold / bare health", "bare verifier cold", "bare health"),
    ("auth mint / raw sign", "auth mint", "raw sign"),
    ("bare mint / raw sign", "bare mint", "raw sign"),
)


def report(results: list[dict[str, float]]) -> str:
    """Every round's req/s, then each ratio per round and its median."""
    lines = ["| | " + " | ".join(f"round {n + 1}" for n in range(len(results))) + " |"]
    lines.append("|---|" + "---:|" * len(results))
    for name in results[0]:
        lines.append(f"| {name} | " + " | ".join(f"{each[name]:,.0f}" for each in results) + " |")
    lines += ["", "| ratio | median | each round |", "|---|---:|---|"]
    for label, numerator, denominator in RATIOS:
        each = [result[numerator] / result[denominator] for result in results]
        values = ", ".join(f"{value:.2f}" for value in each)
        lines.append(f"| {label} | {statistics.median(each):.2f} | {values} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="measured seconds per scenario")
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        uvicorn.run(
            bare_app(args.serve),
            host="127.0.0.1",
            port=args.port,
            http=HttpProtocol,
            loop="asyncio",
            log_level="warning",
            access_log=False,
        )
        return 0
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    print(report(measure(args.rounds, args.seconds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
