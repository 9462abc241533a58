"""Revocation's reach and cost: logout to the first 401 under load, verification beside live entries,
and the feed at 100,000 entries.

``python -m bench.revocation`` runs it on a cluster of its own; ``make bench`` calls :func:`run_all`
on its cluster once every other scenario is done (the entries it records stay live for minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import math
import os
import re
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench import wrk
from bench.wrk import Load, WrkResult
from deploy.devcluster import Cluster, ClusterConfig
from services.auth.key_store import load_keys
from services.auth.redis_client import connect
from services.auth.revocations import Kind, revoke
from services.auth.store import RevocationStore
from shared.core.tokens import b64url_decode, loads_strict

logger = logging.getLogger("bench.revocation")

ALICE = "alice@example.com"
FEED_PATH = "/.well-known/revocations.json"
# The target for the propagation p99.
TARGET_P99_SECONDS = 1.0
# Limits raised far above what this drives, as bench.run does for its own scenarios.
ENV = {
    "LOG_LEVEL": "warning",
    "LOGIN_IP_LIMIT": "1000000",
    "LOGIN_ACCOUNT_IP_LIMIT": "1000000",
    "LOGIN_ACCOUNT_LIMIT": "1000000",
    "TOKEN_RATE_LIMIT": "1000000",
}
# How often a prober asks whether its token is refused yet: the resolution of each delay.
PROBE_EVERY = 0.005
# A revocation not seen within this long counts as lost (and is reported as such).
PROBE_GIVE_UP = 10.0
# Entries recorded in one Redis call when filling the set.
RECORD_BATCH = 5_000
# One refresh at 100,000 entries not seen everywhere within this long counts as failed.
REFRESH_GIVE_UP = 60.0
# Tries of one login before the run gives up.
LOGIN_ATTEMPTS = 3
# A token's lifetime: the entries the bench records live as long as auth's own would.
TOKEN_TTL = 300


@dataclasses.dataclass(frozen=True)
class Options:
    revocations: int = 200
    concurrency: int = 4
    seconds: int = 5
    warmup: int = 1
    rounds: int = 3
    cold_tokens: int = 5_000
    cost_entries: int = 1_000
    scale_entries: int = 100_000
    refreshes: int = 5


# --- propagation ------------------------------------------------------------------------------


@dataclasses.dataclass
class Background:
    """wrk on one URL, run after run until stopped: the load the propagation is measured under."""

    url: str
    token: str
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    runs: list[WrkResult] = dataclasses.field(default_factory=list)

    def run(self) -> None:
        env = {"BENCH_HEADER_NAME": "Authorization", "BENCH_HEADER_VALUE": f"Bearer {self.token}"}
        while not self.stop.is_set():
            self.runs.append(wrk.run(self.url, Load(connections=8, seconds=2), "header", env))


@contextmanager
def under_load(url: str, token: str) -> Iterator[Background]:
    load = Background(url, token)
    thread = threading.Thread(target=load.run, name="revocation-load", daemon=True)
    thread.start()
    try:
        yield load
    finally:
        load.stop.set()
        thread.join(timeout=30)


async def _first_401(client: httpx.AsyncClient, url: str, token: str, since: float) -> float:
    """Seconds from ``since`` to the first 401 for ``token`` at ``url`` (inf if none in time)."""
    headers = {"Authorization": f"Bearer {token}"}
    while time.monotonic() - since < PROBE_GIVE_UP:
        response = await client.get(url, headers=headers)
        if response.status_code == 401:
            return time.monotonic() - since
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:200]}")
        await asyncio.sleep(PROBE_EVERY)
    return float("inf")


async def _one_revocation(client: httpx.AsyncClient, cluster: Cluster) -> tuple[float, float]:
    """Log in, mint, use the token once at both verifiers, log out; the delays to 401 at each."""
    origin = {"Origin": cluster.public_origin}
    # A saturated machine may time a login out at the gateway (504): that is not what is timed.
    for _ in range(LOGIN_ATTEMPTS):
        login = await client.post(
            f"{cluster.url}/auth/login",
            json={"email": ALICE, "password": cluster.demo_password},
            headers=origin,
        )
        if login.status_code < 500:
            break
    login.raise_for_status()
    cookie = login.headers["set-cookie"].split(";", 1)[0]
    unsafe = {**origin, "Cookie": cookie, "X-CSRF-Token": login.json()["csrf_token"]}
    minted = await client.post(f"{cluster.url}/auth/token", json={"audience": "orders"}, headers=unsafe)
    minted.raise_for_status()
    token = minted.json()["access_token"]
    orders = f"{cluster.service_url('orders')}/whoami"
    gateway = f"{cluster.url}/api/orders?limit=1"
    for url in (orders, gateway):
        (await client.get(url, headers={"Authorization": f"Bearer {token}"})).raise_for_status()
    (await client.post(f"{cluster.url}/auth/logout", headers=unsafe)).raise_for_status()
    since = time.monotonic()
    at_orders, at_gateway = await asyncio.gather(
        _first_401(client, orders, token, since), _first_401(client, gateway, token, since)
    )
    return at_orders, at_gateway


async def _propagation(cluster: Cluster, options: Options) -> dict[str, list[float]]:
    delays: dict[str, list[float]] = {"orders": [], "gateway": []}
    left = options.revocations
    limits = httpx.Limits(max_connections=4 * options.concurrency)
    async with httpx.AsyncClient(timeout=30.0, trust_env=False, limits=limits) as client:

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                at_orders, at_gateway = await _one_revocation(client, cluster)
                delays["orders"].append(at_orders)
                delays["gateway"].append(at_gateway)

        await asyncio.gather(*(worker() for _ in range(options.concurrency)))
    return delays


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (p99 of 200 is the second-largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def propagation(cluster: Cluster, options: Options) -> dict[str, Any]:
    """Logout response to the first 401 at orders and at the gateway, under wrk on orders' /whoami."""
    token = _mint_for(cluster)
    logger.info(
        "propagation: %d revocations, %d at a time, under load", options.revocations, options.concurrency
    )
    with under_load(f"{cluster.service_url('orders')}/whoami", token) as load:
        started = time.monotonic()
        delays = asyncio.run(_propagation(cluster, options))
        elapsed = time.monotonic() - started
    found: dict[str, Any] = {
        "revocations": options.revocations,
        "seconds": elapsed,
        "load_rps": statistics.median(run.rps for run in load.runs) if load.runs else 0.0,
    }
    for where, values in delays.items():
        seen = [value for value in values if value != float("inf")]
        found[where] = {
            "p50_ms": 1000 * percentile(seen, 0.50) if seen else None,
            "p99_ms": 1000 * percentile(seen, 0.99) if seen else None,
            "max_ms": 1000 * max(seen) if seen else None,
            "lost": len(values) - len(seen),
        }
    return found


# --- cost -------------------------------------------------------------------------------------


def _mint_for(cluster: Cluster) -> str:
    with httpx.Client(timeout=30.0, trust_env=False) as client:
        origin = {"Origin": cluster.public_origin}
        auth = cluster.url + "/auth"
        login = client.post(
            f"{auth}/login", json={"email": ALICE, "password": cluster.demo_password}, headers=origin
        )
        login.raise_for_status()
        unsafe = {
            **origin,
            "Cookie": login.headers["set-cookie"].split(";", 1)[0],
            "X-CSRF-Token": login.json()["csrf_token"],
        }
        minted = client.post(f"{auth}/token", json={"audience": "orders"}, headers=unsafe)
        minted.raise_for_status()
        token: str = minted.json()["access_token"]
        return token


def _cold_tokens(cluster: Cluster, template: str, count: int, path: Path) -> Path:
    """``count`` distinct valid tokens signed with the cluster's key, one wrk header line each."""
    claims = loads_strict(b64url_decode(template.split(".")[1]))
    keys = load_keys(cluster.keys_dir)
    now = int(time.time())
    with path.open("w") as handle:
        for _ in range(count):
            fresh = {**claims, "iat": now, "nbf": now, "exp": now + TOKEN_TTL, "jti": str(uuid.uuid4())}
            handle.write(f"Authorization: Bearer {keys.sign(fresh, now)}\n")
    return path


def _measure(url: str, script: str, options: Options, env: dict[str, str]) -> float:
    wrk.run(url, Load(seconds=options.warmup), script, env)
    return wrk.run(url, Load(seconds=options.seconds), script, env).rps


def _verification_rounds(cluster: Cluster, options: Options, work_dir: Path) -> list[dict[str, float]]:
    """Per round, req/s of orders' /healthz, /whoami warm and /whoami cold."""
    orders = cluster.service_url("orders")
    rounds = []
    for _ in range(options.rounds):
        token = _mint_for(cluster)
        cold = _cold_tokens(cluster, token, options.cold_tokens, work_dir / "revocation-cold.txt")
        warm = {"BENCH_HEADER_NAME": "Authorization", "BENCH_HEADER_VALUE": f"Bearer {token}"}
        rounds.append(
            {
                "health": _measure(f"{orders}/healthz", "header", options, {}),
                "warm": _measure(f"{orders}/whoami", "header", options, warm),
                "cold": _measure(f"{orders}/whoami", "lines", options, {"BENCH_LINES_FILE": str(cold)}),
            }
        )
    return rounds


def record_entries(cluster: Cluster, count: int) -> int:
    """``count`` session revocations recorded as auth records them, straight into its Redis store.

    Returns the set's version after the last of them: a verifier holding that version holds them.
    """

    async def fill() -> int:
        client = connect(cluster.service_url("redis"), 10.0)
        store = RevocationStore(client)
        version = 0
        try:
            for start in range(0, count, RECORD_BATCH):
                now = time.time()
                ids = [uuid.uuid4().hex for _ in range(min(RECORD_BATCH, count - start))]
                _, version = await store.record(revoke(Kind.SESSION, ids, now, token_ttl=TOKEN_TTL), now)
        finally:
            await client.aclose()
        return version

    return asyncio.run(fill())


def verifier_gauge(cluster: Cluster, service: str, name: str) -> float:
    """One ``revocations_*`` gauge of a verifier's metrics (the first audience it lists)."""
    text = httpx.get(f"{cluster.service_url(service)}/metrics", timeout=10).text
    match = re.search(rf"^{name}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


def wait_for(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what} after {within:g} s")
        time.sleep(0.05)


def _holding(cluster: Cluster, version: float) -> Callable[[], bool]:
    """Whether both verifiers hold the feed at ``version`` or later.

    By version, not by entry count: entries of earlier phases expire while a later one runs.
    """
    return lambda: all(
        verifier_gauge(cluster, service, "revocations_version") >= version
        for service in ("orders", "gateway")
    )


def cost(cluster: Cluster, options: Options, work_dir: Path) -> dict[str, Any]:
    """Warm and cold verification beside few entries, then beside ``cost_entries`` more, same run.

    Not interleaved: a recorded entry cannot be withdrawn, only outlived (5.5 minutes). Each side
    is a ratio to ``/healthz`` measured in the same round, and every round is kept in the results,
    so drift of the machine between the two sides shows as spread rather than as a difference.
    """
    logger.info("cost: %d rounds without, then with %d entries", options.rounds, options.cost_entries)
    few = _verification_rounds(cluster, options, work_dir)
    held = verifier_gauge(cluster, "orders", "revocations_entries")
    version = record_entries(cluster, options.cost_entries)
    wait_for(_holding(cluster, version), 30, "the verifiers holding the entries")
    many = _verification_rounds(cluster, options, work_dir)

    def ratio(rounds: list[dict[str, float]], kind: str) -> float:
        return statistics.median(each[kind] / each["health"] for each in rounds)

    return {
        "entries_before": held,
        "entries_added": options.cost_entries,
        "without": few,
        "with": many,
        "warm_ratio_without": ratio(few, "warm"),
        "warm_ratio_with": ratio(many, "warm"),
        "cold_ratio_without": ratio(few, "cold"),
        "cold_ratio_with": ratio(many, "cold"),
    }


# --- scale ------------------------------------------------------------------------------------


def _failures(cluster: Cluster, service: str) -> dict[str, float]:
    """A verifier's failed feed refreshes by reason, from its metrics."""
    text = httpx.get(f"{cluster.service_url(service)}/metrics", timeout=10).text
    pattern = r'^revocations_refresh_failures_total\{[^}]*reason="([^"]+)"[^}]*\} ([0-9.e+]+)$'
    return {reason: float(count) for reason, count in re.findall(pattern, text, re.MULTILINE)}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scale(cluster: Cluster, options: Options) -> dict[str, Any]:
    """Verifier memory and feed size at ``scale_entries`` live entries, and what one refresh costs."""
    logger.info("scale: %d entries", options.scale_entries)
    pids = {name: cluster.pid(name) for name in ("orders", "gateway", *cluster.auth_replicas)}
    assert all(pid is not None for pid in pids.values()), pids
    before = {name: rss_bytes(pid) for name, pid in pids.items() if pid is not None}
    version = record_entries(cluster, options.scale_entries)
    wait_for(_holding(cluster, version), 120, "the verifiers holding 100,000 entries")
    after = {name: rss_bytes(pid) for name, pid in pids.items() if pid is not None}
    feed = httpx.get(f"{cluster.url}{FEED_PATH}", timeout=30)
    feed.raise_for_status()
    entries = len(json.loads(b64url_decode(feed.text.split(".")[1]))["entries"])

    # One more entry changes the feed: every verifier fetches, verifies and installs it whole.
    refresh: dict[str, list[float]] = {name: [] for name in pids}
    for _ in range(options.refreshes):
        cpu = {name: cpu_seconds(pid) for name, pid in pids.items() if pid is not None}
        started = time.monotonic()
        version = record_entries(cluster, 1)
        try:
            wait_for(_holding(cluster, version), REFRESH_GIVE_UP, "the verifiers refreshing")
        except RuntimeError:
            # Reported, not fatal: a verifier that cannot refresh at this size is the finding.
            refresh.setdefault("wall", []).append(float("inf"))
            continue
        seen = time.monotonic() - started
        # The CPU counters tick at 100 Hz: let the last tick land.
        time.sleep(0.05)
        for name, pid in pids.items():
            if pid is not None:
                refresh[name].append(cpu_seconds(pid) - cpu[name])
        refresh.setdefault("wall", []).append(seen)
    full_get = []
    with httpx.Client(timeout=30) as client:
        for _ in range(options.refreshes):
            started = time.monotonic()
            client.get(f"{cluster.auth_urls()[0]}{FEED_PATH}").raise_for_status()
            full_get.append(time.monotonic() - started)
    return {
        "failures": {service: _failures(cluster, service) for service in ("orders", "gateway")},
        "entries": entries,
        "feed_bytes": len(feed.content),
        "feed_bytes_per_entry": len(feed.content) / max(entries, 1),
        "rss_delta_bytes": {name: after[name] - before[name] for name in before},
        "refresh_cpu_ms": {
            name: 1000 * statistics.median(values) if values else float("nan")
            for name, values in refresh.items()
        },
        "feed_get_ms": 1000 * statistics.median(full_get),
    }


# --- the whole module -------------------------------------------------------------------------


PHASES = ("propagation", "cost", "scale")


def run_all(
    cluster: Cluster, work_dir: Path, options: Options | None = None, only: tuple[str, ...] = PHASES
) -> dict[str, Any]:
    """Propagation, then cost, then scale (which leaves 100,000 live entries behind for minutes)."""
    options = options or Options()
    found: dict[str, Any] = {}
    phases: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("propagation", lambda: propagation(cluster, options)),
        ("cost", lambda: cost(cluster, options, work_dir)),
        ("scale", lambda: scale(cluster, options)),
    ]
    for name, phase in phases:
        if name not in only:
            continue
        found[name] = phase()
        # Logged as it lands: a later phase that fails loses none of the minutes before it.
        logger.info("%s: %s", name, json.dumps(found[name], sort_keys=True))
    return found


def markdown_rows(data: dict[str, Any]) -> list[str]:
    """The revocation section of the bench report."""
    p, c, s = data["propagation"], data["cost"], data["scale"]
    lines = [
        "",
        f"Revocation (issue 19): {p['revocations']} logouts in {p['seconds']:.0f} s, "
        f"under wrk on orders `/whoami` at {p['load_rps']:,.0f} req/s.",
        "",
        "| Revocation | value | target | met |",
        "|---|---:|---|---|",
    ]
    for where in ("orders", "gateway"):
        row = p[where]
        p99 = row["p99_ms"]
        met = (
            ""
            if p99 is None
            else ("yes" if p99 <= 1000 * TARGET_P99_SECONDS and not row["lost"] else "**no**")
        )
        lines += [
            f"| logout to first 401 at {where}, p50 | {row['p50_ms'] or float('nan'):.0f} ms | | |",
            f"| logout to first 401 at {where}, p99 (lost: {row['lost']}) | {p99 or float('nan'):.0f} ms "
            f"| <= {1000 * TARGET_P99_SECONDS:.0f} ms | {met} |",
        ]
    lines += [
        f"| verify warm / unauthenticated, without / with {c['entries_added']:,} entries "
        f"| {c['warm_ratio_without']:.2f} / {c['warm_ratio_with']:.2f} | within noise | |",
        f"| verify cold / unauthenticated, without / with {c['entries_added']:,} entries "
        f"| {c['cold_ratio_without']:.2f} / {c['cold_ratio_with']:.2f} | within noise | |",
        f"| feed size at {s['entries']:,} entries | {s['feed_bytes'] / 1e6:.1f} MB "
        f"({s['feed_bytes_per_entry']:.0f} B/entry) | | |",
    ]
    for name, delta in s["rss_delta_bytes"].items():
        lines.append(f"| {name} RSS growth with {s['entries']:,} entries | {delta / 1e6:.1f} MB | | |")
    for name, ms in s["refresh_cpu_ms"].items():
        what = (
            "wall time from recording one more entry to both verifiers holding it"
            if name == "wall"
            else f"{name} CPU"
        )
        lines.append(f"| feed refresh at {s['entries']:,} entries: {what} | {ms:.0f} ms | | |")
    lines.append(f"| full feed GET at auth, {s['entries']:,} entries | {s['feed_get_ms']:.0f} ms | | |")
    for service, reasons in s.get("failures", {}).items():
        shown = ", ".join(f"{reason} {count:.0f}" for reason, count in reasons.items()) or "none"
        lines.append(f"| {service}: failed feed refreshes during the run, by reason | {shown} | | |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.revocation", description=__doc__)
    parser.add_argument("--revocations", type=int, default=200, help="logouts timed to their first 401")
    parser.add_argument("--concurrency", type=int, default=4, help="logouts in flight at once")
    parser.add_argument("--seconds", type=int, default=5, help="measured seconds per wrk scenario")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the cost scenarios each side")
    parser.add_argument(
        "--scale-entries", type=int, default=100_000, help="live entries for the scale figures"
    )
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    parser.add_argument("--only", choices=PHASES, action="append", help="run this phase (repeatable)")
    args = parser.parse_args(argv)
    options = Options(
        revocations=args.revocations,
        concurrency=args.concurrency,
        seconds=args.seconds,
        rounds=args.rounds,
        scale_entries=args.scale_entries,
    )
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    wrk.wrk_path()
    with tempfile.TemporaryDirectory(prefix="bench-revocation-") as tmp:
        work_dir = Path(tmp)
        with Cluster(ClusterConfig.on_free_ports(work_dir / "cluster", ENV)) as cluster:
            data = run_all(cluster, work_dir, options, tuple(args.only or PHASES))
    if args.out is not None:
        args.out.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(json.dumps(data, indent=2, sort_keys=True) if args.only else "\n".join(markdown_rows(data)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
