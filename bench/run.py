"""`make bench`: start the cluster, drive every scenario with wrk in one run, write the results.

Every number that matters is a ratio of two measurements taken minutes apart on the same
machine, because absolute figures on a shared 2-core box say little.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis

from bench import cpu, nginx, report, revocation, rsa, wrk
from bench.wrk import Load, WrkResult
from deploy.devcluster import Cluster, ClusterConfig
from services.auth import domain
from services.auth.key_store import load_keys
from services.auth.redis_client import connect
from services.auth.settings import Settings
from services.auth.store import SessionStore, UserStore
from shared.core.tokens import b64url_decode, loads_strict

logger = logging.getLogger("bench")

ALICE = "alice@example.com"
# What a desktop browser sends today: the memory figure should carry a realistic one.
BENCH_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
RESULTS_DIR = Path(__file__).parent / "results"

# Raised far above what the bench drives, so the limits under test elsewhere never turn a
# measurement into a count of 429s.
BENCH_ENV = {
    "LOG_LEVEL": "warning",
    "LOGIN_IP_LIMIT": "1000000",
    "LOGIN_ACCOUNT_IP_LIMIT": "1000000",
    "LOGIN_ACCOUNT_LIMIT": "1000000",
    "TOKEN_RATE_LIMIT": "1000000",
    "ORDERS_CREATE_RATE": "1000000",
    "ORDERS_CREATE_BURST": "1000000",
}


@dataclasses.dataclass(frozen=True)
class Options:
    seconds: int
    warmup: int
    sessions: int
    cold_tokens: int
    memory_sessions: int
    out: Path
    rounds: int = 5


@dataclasses.dataclass
class Browser:
    """One logged-in session as wrk replays it: the cookie and its CSRF token."""

    cookie: str
    csrf_token: str


class Bench:
    """The scenarios, run against one cluster."""

    def __init__(self, cluster: Cluster, options: Options, work_dir: Path):
        self.cluster = cluster
        self.options = options
        self.work_dir = work_dir
        self.http = httpx.Client(timeout=30.0)
        self.origin = {"Origin": cluster.public_origin}

    def login(self) -> Browser:
        response = self.http.post(
            f"{self.cluster.service_url('auth')}/login",
            json={"email": ALICE, "password": self.cluster.demo_password},
            headers=self.origin,
        )
        response.raise_for_status()
        cookie = response.headers["set-cookie"].split(";", 1)[0]
        return Browser(cookie=cookie, csrf_token=response.json()["csrf_token"])

    def mint(self, browser: Browser, audience: str = "orders") -> str:
        response = self.http.post(
            f"{self.cluster.service_url('auth')}/token",
            json={"audience": audience},
            headers={**self.origin, "Cookie": browser.cookie, "X-CSRF-Token": browser.csrf_token},
        )
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token

    def cold_tokens(self, template: str, count: int) -> Path:
        """``count`` distinct valid tokens (unique jti), signed with the cluster's own key."""
        claims = loads_strict(b64url_decode(template.split(".")[1]))
        keys = load_keys(self.cluster.keys_dir)
        path = self.work_dir / "cold-tokens.txt"
        now = int(time.time())
        with path.open("w") as handle:
            for _ in range(count):
                fresh = {**claims, "iat": now, "nbf": now, "exp": now + 300, "jti": str(uuid.uuid4())}
                handle.write(f"Authorization: Bearer {keys.sign(fresh, now)}\n")
        return path

    def session_loads(self, count: int) -> tuple[dict[str, str], dict[str, str]]:
        """``count`` fresh logins as wrk replays them: the load for ``GET /me`` and for minting."""
        origin = self.cluster.public_origin
        browsers = [self.login() for _ in range(count)]
        sessions = self.lines_file(
            "sessions.txt",
            [f"Cookie: {b.cookie}\tX-CSRF-Token: {b.csrf_token}\tOrigin: {origin}" for b in browsers],
        )
        lookup = {"BENCH_LINES_FILE": str(sessions)}
        return lookup, {**lookup, "BENCH_METHOD": "POST", "BENCH_BODY": '{"audience": "orders"}'}

    def lines_file(self, name: str, lines: list[str]) -> Path:
        path = self.work_dir / name
        path.write_text("\n".join(lines) + "\n")
        return path

    def measure(
        self, url: str, script: str, env: dict[str, str] | None = None, load: Load | None = None
    ) -> WrkResult:
        load = load or Load(seconds=self.options.seconds)
        wrk.run(url, dataclasses.replace(load, seconds=self.options.warmup), script, env)
        before = cpu.snapshot(self.process_groups())
        result = wrk.run(url, load, script, env)
        spent = cpu.per_request_us(before, cpu.snapshot(self.process_groups()), result.requests)
        result = dataclasses.replace(
            result, cpu_us={name: round(us, 1) for name, us in sorted(spent.items())}
        )
        logger.info(
            "%-60s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  errors %d  CPU %s",
            url,
            result.rps,
            result.p50_ms,
            result.p99_ms,
            result.errors,
            report.cpu_text(result.cpu_us),
        )
        return result

    def process_groups(self) -> dict[str, int | None]:
        """Each service's process group: the cluster starts every one as a group leader."""
        names = ("redis", *self.cluster.config.processes)
        return {name: self.cluster.pid(name) for name in names}


def _bearer(token: str) -> dict[str, str]:
    return {"BENCH_HEADER_NAME": "Authorization", "BENCH_HEADER_VALUE": f"Bearer {token}"}


def redis_used_memory(cluster: Cluster) -> int:
    client = redis.Redis.from_url(cluster.service_url("redis"))
    try:
        client.memory_purge()
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


# Rounds of the direct / gateway / nginx listing trio.
PROXY_ROUNDS = 3

SESSIONS_PER_USER = 5
# A real argon2id hash shape; nobody logs in as these users, so one shared value is enough.
_PLACEHOLDER_HASH = "$argon2id$v=19$m=65536,t=3,p=4$" + "A" * 22 + "$" + "A" * 43


async def _sessions_memory(cluster: Cluster, count: int) -> dict[str, float]:
    """Redis bytes per session for ``count`` sessions, spread as real ones are: a few per user.

    Users are created first and measured apart, so the figure is the session record plus its
    entry in the owner's index, through the same store code auth runs.
    """
    settings = Settings.from_env(cluster.env_for("auth"))
    client = connect(settings.redis_url.value, 5.0)
    users_store = UserStore(client)
    store = SessionStore(
        client,
        domain.SessionPolicy(idle=settings.session_idle_timeout, absolute=settings.session_absolute_timeout),
    )
    batch_size = 50  # under the client's connection pool limit
    try:
        users = []
        for start in range(0, count // SESSIONS_PER_USER, batch_size):
            emails = [
                f"bench-{n}@example.com"
                for n in range(start, min(start + batch_size, count // SESSIONS_PER_USER))
            ]
            users += await asyncio.gather(
                *(users_store.create(email, "user", _PLACEHOLDER_HASH) for email in emails)
            )
        before = redis_used_memory(cluster)
        now = time.time()
        sessions = [
            domain.new_session(
                domain.new_session_id(users[n % len(users)].id),
                users[n % len(users)],
                now,
                user_agent=BENCH_USER_AGENT,
                ip="127.0.0.1",
            )
            for n in range(count)
        ]
        for start in range(0, count, batch_size):
            await asyncio.gather(
                *(store.create(session, now) for session in sessions[start : start + batch_size])
            )
        after = redis_used_memory(cluster)
    finally:
        await client.aclose()
    return {"sessions": count, "users": len(users), "bytes_per_session": (after - before) / count}


def run_all(cluster: Cluster, options: Options, work_dir: Path) -> dict[str, Any]:
    bench = Bench(cluster, options, work_dir)
    orders = cluster.service_url("orders")
    auth = cluster.service_url("auth")
    gateway = cluster.url

    logger.info("setting up: %d sessions, %d cold tokens", options.sessions, options.cold_tokens)
    owner = bench.login()
    token = bench.mint(owner)
    for item in range(20):
        bench.http.post(
            f"{orders}/orders",
            json={"item": f"item-{item}", "quantity": 1},
            headers={"Authorization": f"Bearer {token}"},
        ).raise_for_status()
    lines, mint_load = bench.session_loads(options.sessions)

    # The targets are ratios, so their two sides are measured side by side, round after round.
    paired: dict[str, list[WrkResult]] = {name: [] for name in report.PAIRED}
    rounds = []
    for number in range(options.rounds):
        logger.info("round %d of %d", number + 1, options.rounds)
        # Fresh tokens each round: the rounds together outlast one token's five minutes.
        token = bench.mint(owner)
        cold = bench.cold_tokens(token, options.cold_tokens)
        paired["health"].append(bench.measure(f"{orders}/healthz", "header"))
        paired["verify_warm"].append(bench.measure(f"{orders}/whoami", "header", _bearer(token)))
        paired["verify_cold"].append(
            bench.measure(f"{orders}/whoami", "lines", {"BENCH_LINES_FILE": str(cold)})
        )
        paired["mint"].append(bench.measure(f"{auth}/token", "lines", mint_load))
        rates = rsa.measure()
        rounds.append(
            {
                **{name: runs[-1].rps for name, runs in paired.items()},
                "sign_per_second": rates.sign_per_second,
                "verify_per_second": rates.verify_per_second,
            }
        )
    results: dict[str, WrkResult] = {name: _median_run(runs) for name, runs in paired.items()}
    # The same listing direct, through the gateway and through nginx, in interleaved rounds:
    # the gateway's hop is judged against both in the same minutes.
    proxy_rounds: list[dict[str, WrkResult]] = []
    with nginx.reverse_proxy(orders, work_dir) as nginx_url:
        targets = {
            "orders_direct": f"{orders}/orders",
            "orders_gateway": f"{gateway}/api/orders",
            "orders_nginx": f"{nginx_url}/api/orders",
        }
        for number in range(PROXY_ROUNDS):
            logger.info("proxied listing, round %d of %d", number + 1, PROXY_ROUNDS)
            token = bench.mint(owner)
            proxy_rounds.append(
                {name: bench.measure(url, "header", _bearer(token)) for name, url in targets.items()}
            )
    for name in report.PROXIED:
        results[name] = _median_run([each[name] for each in proxy_rounds])
    token = bench.mint(owner)
    results["session_lookup"] = bench.measure(f"{auth}/me", "lines", lines)
    login_line = bench.lines_file("login.txt", [f"Origin: {cluster.public_origin}"])
    results["login"] = bench.measure(
        f"{auth}/login",
        "lines",
        {
            "BENCH_LINES_FILE": str(login_line),
            "BENCH_METHOD": "POST",
            "BENCH_BODY": json.dumps({"email": ALICE, "password": cluster.demo_password}),
        },
        Load(connections=4, seconds=options.seconds),
    )

    sizes = {
        "access_token_bytes": len(token),
        "session_cookie_bytes": len(owner.cookie.split("=", 1)[1]),
    }

    memory = asyncio.run(_sessions_memory(cluster, options.memory_sessions))
    token = bench.mint(owner)
    results["verify_warm_many_sessions"] = bench.measure(f"{orders}/whoami", "header", _bearer(token))
    results["session_lookup_many_sessions"] = bench.measure(f"{auth}/me", "lines", lines)

    with _workers(cluster, "orders", 2):
        results["health_2_workers"] = bench.measure(f"{orders}/healthz", "header")
        results["verify_warm_2_workers"] = bench.measure(f"{orders}/whoami", "header", _bearer(token))
    with _workers(cluster, "auth", 2):
        results["mint_2_workers"] = bench.measure(f"{auth}/token", "lines", mint_load)
    # Last: it leaves 100,000 live revocation entries behind for minutes.
    revocations = revocation.run_all(cluster, work_dir)

    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": _cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "options": {
            "seconds": options.seconds,
            "sessions": options.sessions,
            "cold_tokens": options.cold_tokens,
            "rounds": options.rounds,
        },
        "scenarios": {name: {**dataclasses.asdict(r), "rps": r.rps} for name, r in results.items()},
        "rsa": {
            rate: statistics.median(each[rate] for each in rounds)
            for rate in ("sign_per_second", "verify_per_second")
        },
        "rounds": rounds,
        "proxy_rounds": [{name: run.rps for name, run in each.items()} for each in proxy_rounds],
        "sizes": sizes,
        "redis_memory": memory,
        "revocation": revocations,
    }


def _median_run(runs: list[WrkResult]) -> WrkResult:
    """The run with the median throughput, carrying the errors of every run."""
    middle = sorted(runs, key=lambda run: run.rps)[len(runs) // 2]
    return dataclasses.replace(middle, errors=sum(run.errors for run in runs))


def _cpu_count() -> int:
    return os.cpu_count() or 1


@contextmanager
def _workers(cluster: Cluster, service: str, workers: int) -> Iterator[None]:
    """Run ``service`` with more uvicorn workers for the duration, then as before."""
    original = cluster.config
    variable = f"{service.upper()}_WORKERS"
    cluster.stop_service(service)
    cluster.config = dataclasses.replace(original, env={**original.env, variable: str(workers)})
    cluster.start_service(service)
    try:
        yield
    finally:
        cluster.stop_service(service)
        cluster.config = original
        cluster.start_service(service)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured seconds before each")
    parser.add_argument("--sessions", type=int, default=64, help="distinct sessions for minting and /me")
    parser.add_argument("--cold-tokens", type=int, default=20_000, help="distinct tokens for the cold run")
    parser.add_argument("--memory-sessions", type=int, default=100_000, help="sessions for the memory figure")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the scenarios the targets pair")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where latest.{json,md,png} go")
    args = parser.parse_args(argv)
    options = Options(
        args.seconds,
        args.warmup,
        args.sessions,
        args.cold_tokens,
        args.memory_sessions,
        args.out,
        args.rounds,
    )
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    wrk.wrk_path()
    nginx.nginx_path()

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work_dir = Path(tmp)
        cluster = Cluster(ClusterConfig.on_free_ports(work_dir / "cluster", BENCH_ENV))
        with cluster:
            data = run_all(cluster, options, work_dir)
    options.out.mkdir(parents=True, exist_ok=True)
    report.write(data, options.out)
    print(report.markdown(data))
    return 0
