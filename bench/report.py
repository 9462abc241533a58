"""Turn one bench run into the ratios that matter, a Markdown table, a chart and the raw JSON."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import revocation

SCENARIOS = (
    ("health", "1. orders `/healthz`, no token (framework ceiling)"),
    ("verify_warm", "2. orders `/whoami`, token verified, warm (client reuses its token)"),
    ("verify_cold", "2. orders `/whoami`, token verified, cold (every token new)"),
    ("orders_direct", "3. orders `GET /orders`, direct"),
    ("orders_gateway", "3. `GET /api/orders` through the gateway"),
    ("orders_nginx", "3. `GET /api/orders` through nginx (plain reverse proxy, no token check)"),
    ("mint", "4. auth `POST /token`, distinct sessions (minting)"),
    ("session_lookup", "5. auth `GET /me`, session cookie (a Redis lookup per request)"),
    ("login", "6. auth `POST /login` (argon2id, bounded on purpose)"),
    ("verify_warm_many_sessions", "2. orders `/whoami`, warm, with 100,000 more live sessions"),
    ("session_lookup_many_sessions", "5. auth `GET /me`, with 100,000 more live sessions"),
    ("health_2_workers", "1. orders `/healthz`, `ORDERS_WORKERS=2`"),
    ("verify_warm_2_workers", "2. orders `/whoami`, warm, `ORDERS_WORKERS=2`"),
    ("mint_2_workers", "4. auth `POST /token`, `AUTH_WORKERS=2`"),
)


# Measured in interleaved rounds, each ratio's two sides minutes apart at most: on a shared
# machine one pair of runs can be 15% off either way, the median of several pairs much less.
PAIRED = ("health", "verify_warm", "verify_cold", "mint")
# The listing direct, through the gateway and through nginx, measured as a trio per round.
PROXIED = ("orders_direct", "orders_gateway", "orders_nginx")


@dataclass(frozen=True)
class Ratio:
    name: str
    value: float
    target: str
    met: bool | None
    each_round: tuple[float, ...] = ()


def rounds(data: dict[str, Any]) -> list[dict[str, float]]:
    """Per round, the paired scenarios' req/s and the raw RSA rates measured beside them."""
    if "rounds" in data:
        found: list[dict[str, float]] = data["rounds"]
        return found
    return [{**{name: data["scenarios"][name]["rps"] for name in PAIRED}, **data["rsa"]}]


def ratios(data: dict[str, Any]) -> list[Ratio]:
    """The comparisons the bench exists for, each with its target when it has one."""
    rps = {name: scenario["rps"] for name, scenario in data["scenarios"].items()}
    memory = data["redis_memory"]["bytes_per_session"]
    paired = rounds(data)

    def per_round(numerator: str, denominator: str) -> tuple[float, ...]:
        return tuple(each[numerator] / each[denominator] for each in paired)

    def physical_bound(each: dict[str, float]) -> float:
        health_ms, verify_ms = 1000.0 / each["health"], 1000.0 / each["verify_per_second"]
        return health_ms / (health_ms + verify_ms)

    def at_least(name: str, each_round: tuple[float, ...], target: float) -> Ratio:
        value = statistics.median(each_round)
        shown = each_round if len(each_round) > 1 else ()
        return Ratio(name, value, f">= {target:g}", value >= target, shown)

    def info(name: str, value: float, note: str = "") -> Ratio:
        return Ratio(name, value, note, None)

    health_ms = statistics.median(1000.0 / each["health"] for each in paired)
    verify_ms = statistics.median(1000.0 / each["verify_per_second"] for each in paired)
    bounds = tuple(physical_bound(each) for each in paired)
    return [
        at_least("verify warm / unauthenticated: (2)/(1)", per_round("verify_warm", "health"), 0.85),
        at_least("verify cold / unauthenticated: (2)/(1)", per_round("verify_cold", "health"), 0.45),
        Ratio(
            "physical bound for cold: t(1) / (t(1) + one raw RSA-2048 verify)",
            statistics.median(bounds),
            f"t(1) = {health_ms:.3f} ms, verify = {verify_ms:.3f} ms",
            None,
            bounds if len(bounds) > 1 else (),
        ),
        *proxy_ratios(data),
        info("session lookup / verify warm: (5)/(2)", rps["session_lookup"] / rps["verify_warm"]),
        info("session lookup / verify cold: (5)/(2)", rps["session_lookup"] / rps["verify_cold"]),
        at_least("minting / raw RSA-2048 signing, one core: (4)", per_round("mint", "sign_per_second"), 0.5),
        info("verify warm, 100,000 sessions / few", rps["verify_warm_many_sessions"] / rps["verify_warm"]),
        info(
            "session lookup, 100,000 sessions / few",
            rps["session_lookup_many_sessions"] / rps["session_lookup"],
        ),
        info("verify warm, 2 workers / 1", rps["verify_warm_2_workers"] / rps["verify_warm"], "no target"),
        info(
            "minting with 2 workers / raw RSA-2048 signing, one core",
            rps["mint_2_workers"] / data["rsa"]["sign_per_second"],
            "no target",
        ),
        Ratio("Redis bytes per session", memory, "<= 400", memory <= 400),
    ]


def proxy_ratios(data: dict[str, Any]) -> list[Ratio]:
    """The gateway's hop against no hop and against nginx's, each the median of its rounds.

    Runs from before the nginx row was measured carry one direct and one gateway figure only.
    """
    proxied: list[dict[str, float]] = data.get("proxy_rounds") or [
        {name: data["scenarios"][name]["rps"] for name in PROXIED[:2]}
    ]

    def median_ratio(name: str, numerator: str, denominator: str, target: float | None) -> Ratio:
        each = tuple(run[numerator] / run[denominator] for run in proxied)
        value = statistics.median(each)
        shown = each if len(each) > 1 else ()
        if target is None:
            return Ratio(name, value, "", None, shown)
        return Ratio(name, value, f">= {target:g}", value >= target, shown)

    found = [median_ratio("gateway / direct: (3)", "orders_gateway", "orders_direct", 0.7)]
    if all("orders_nginx" in run for run in proxied):
        found += [
            median_ratio("nginx / direct: (3)", "orders_nginx", "orders_direct", None),
            median_ratio("gateway / nginx: (3)", "orders_gateway", "orders_nginx", None),
        ]
    return found


# Below this a service only idled through a scenario (timers, health checks): left out of the text.
CPU_SHOWN_FROM_US = 1.0


def cpu_text(cpu_us: Mapping[str, float]) -> str:
    """The CPU per request of the services a scenario kept busy, busiest first: ``auth 180, redis 30``."""
    busy = sorted(
        ((us, name) for name, us in cpu_us.items() if us >= CPU_SHOWN_FROM_US), key=lambda each: -each[0]
    )
    return ", ".join(f"{name} {us:,.0f}" for us, name in busy)


def markdown(data: dict[str, Any]) -> str:
    scenarios = data["scenarios"]
    lines = [
        f"# Benchmark results ({data['when']})",
        "",
        f"Machine: {data['machine']['cpus']} CPUs, Python {data['machine']['python']}, "
        f"{data['machine']['platform']}. wrk, one thread, {data['options']['seconds']:g} s per scenario "
        "after a warm-up; every number below comes from this one run. Scenarios 1, 2 and 4 and the raw "
        f"RSA rates ran in {len(rounds(data))} interleaved rounds: their rows show the median round, and "
        "each targeted ratio is the median of its per-round ratios. CPU per request is each service's "
        "user and system time over the measured seconds (from /proc, workers included) divided by the "
        "requests wrk completed; it moves less than req/s on a shared machine.",
        "",
        "| Scenario | req/s | CPU us per request | p50 ms | p99 ms | errors |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for name, title in SCENARIOS:
        if name in scenarios:
            s = scenarios[name]
            lines.append(
                f"| {title} | {s['rps']:,.0f} | {cpu_text(s.get('cpu_us', {}))} | {s['p50_ms']:.2f} "
                f"| {s['p99_ms']:.2f} | {s['errors']} |"
            )
    lines += ["", "| Ratio | value | target | met | each round |", "|---|---:|---|---|---|"]
    for ratio in ratios(data):
        met = "" if ratio.met is None else ("yes" if ratio.met else "**no**")
        each = ", ".join(f"{value:.2f}" for value in ratio.each_round)
        lines.append(f"| {ratio.name} | {ratio.value:.2f} | {ratio.target} | {met} | {each} |")
    sizes, rates = data["sizes"], data["rsa"]
    lines += [
        "",
        f"* Raw RSA-2048 on one core: {rates['sign_per_second']:,.0f} signatures/s, "
        f"{rates['verify_per_second']:,.0f} verifications/s.",
        f"* Access token: {sizes['access_token_bytes']} bytes; session cookie value: "
        f"{sizes['session_cookie_bytes']} bytes.",
        f"* Redis memory: {data['redis_memory']['bytes_per_session']:.0f} bytes per session, "
        f"measured over {data['redis_memory']['sessions']:,} sessions.",
        f"* Errors across all scenarios: {sum(s['errors'] for s in scenarios.values())}.",
        "",
    ]
    if "revocation" in data:
        lines += [*revocation.markdown_rows(data["revocation"]), ""]
    return "\n".join(lines)


def chart(data: dict[str, Any], path: Path) -> None:
    """A horizontal bar chart of requests per second per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [(name, title) for name, title in SCENARIOS if name in data["scenarios"]]
    values = [data["scenarios"][name]["rps"] for name, _ in names]
    figure, axes = plt.subplots(figsize=(10, 0.45 * len(names) + 1.5))
    axes.barh([title.replace("`", "") for _, title in names], values, color="#3b6ea5")
    axes.invert_yaxis()
    axes.set_xlabel("requests per second (one run, same machine)")
    axes.set_title(f"Hybrid auth benchmark, {data['when']}")
    for index, value in enumerate(values):
        axes.text(value, index, f" {value:,.0f}", va="center", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(data: dict[str, Any], directory: Path) -> None:
    (directory / "latest.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (directory / "latest.md").write_text(markdown(data))
    chart(data, directory / "latest.png")
