"""The bench's arithmetic: wrk's result line, the ratios and their targets, the Markdown table."""

from __future__ import annotations

from typing import Any

from bench import report, wrk

LINE = (
    'BENCH_JSON {"requests": 20000, "duration_us": 10000000, "connect_errors": 0, "read_errors": 1, '
    '"write_errors": 0, "status_errors": 2, "timeouts": 0, "p50_us": 1500, "p99_us": 9000}'
)


def test_the_result_line_is_read_and_every_kind_of_error_counted() -> None:
    result = wrk.parse(f"Running 10s test\n  1 threads\n{LINE}\n")
    assert result is not None
    assert (result.requests, result.seconds, result.errors) == (20000, 10.0, 3)
    assert (result.rps, result.p50_ms, result.p99_ms) == (2000.0, 1.5, 9.0)


def test_no_result_line_is_no_result() -> None:
    assert wrk.parse("unable to connect to 127.0.0.1:1 Connection refused\n") is None


def scenario(rps: float, errors: int = 0) -> dict[str, Any]:
    return {
        "rps": rps,
        "requests": int(rps * 10),
        "seconds": 10.0,
        "errors": errors,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
    }


def data(**rps: float) -> dict[str, Any]:
    base = {
        "health": 1000.0,
        "verify_warm": 900.0,
        "verify_cold": 400.0,
        "orders_direct": 800.0,
        "orders_gateway": 400.0,
        "orders_nginx": 500.0,
        "mint": 300.0,
        "session_lookup": 450.0,
        "login": 10.0,
        "verify_warm_many_sessions": 880.0,
        "session_lookup_many_sessions": 440.0,
        "health_2_workers": 1500.0,
        "verify_warm_2_workers": 1200.0,
        "mint_2_workers": 550.0,
    }
    base.update(rps)
    return {
        "when": "2026-11-26T00:00:00Z",
        "machine": {"cpus": 2, "python": "3.11.7", "platform": "Linux"},
        "options": {"seconds": 10, "sessions": 64, "cold_tokens": 20000},
        "scenarios": {name: scenario(value) for name, value in base.items()},
        "rsa": {"sign_per_second": 1000.0, "verify_per_second": 10000.0},
        "sizes": {"access_token_bytes": 802, "session_cookie_bytes": 71},
        "redis_memory": {"sessions": 100000, "users": 20000, "bytes_per_session": 390.0},
    }


def by_name(results: dict[str, Any]) -> dict[str, report.Ratio]:
    return {ratio.name.split(":")[0]: ratio for ratio in report.ratios(results)}


def test_ratios_are_computed_from_the_same_run_and_judged_against_their_targets() -> None:
    ratios = by_name(data())
    assert ratios["verify warm / unauthenticated"].value == 0.9
    assert ratios["verify warm / unauthenticated"].met is True
    assert ratios["verify cold / unauthenticated"].value == 0.4
    assert ratios["verify cold / unauthenticated"].met is False
    assert ratios["minting / raw RSA-2048 signing, one core"].value == 0.3
    assert ratios["minting / raw RSA-2048 signing, one core"].met is False
    assert ratios["minting with 2 workers / raw RSA-2048 signing, one core"].value == 0.55
    assert ratios["minting with 2 workers / raw RSA-2048 signing, one core"].met is None
    assert ratios["Redis bytes per session"].met is True
    # One ms per request at 1,000 req/s plus 0.1 ms for one verification: 1 / 1.1.
    assert abs(ratios["physical bound for cold"].value - 1 / 1.1) < 1e-9


def test_the_table_lists_every_scenario_and_flags_a_missed_target() -> None:
    text = report.markdown(data(verify_warm=500.0))
    for _, title in report.SCENARIOS:
        assert title in text
    assert "| verify warm / unauthenticated: (2)/(1) | 0.50 | >= 0.85 | **no** |" in text
    assert "Redis memory: 390 bytes per session" in text


def test_a_targeted_ratio_is_the_median_of_its_rounds() -> None:
    results = data()
    results["rounds"] = [
        {
            "health": 1000.0,
            "verify_warm": 700.0,
            "verify_cold": 300.0,
            "mint": 500.0,
            "sign_per_second": 1000.0,
            "verify_per_second": 10000.0,
        },
        {
            "health": 2000.0,
            "verify_warm": 1800.0,
            "verify_cold": 1000.0,
            "mint": 450.0,
            "sign_per_second": 1000.0,
            "verify_per_second": 10000.0,
        },
        {
            "health": 1000.0,
            "verify_warm": 880.0,
            "verify_cold": 460.0,
            "mint": 600.0,
            "sign_per_second": 1000.0,
            "verify_per_second": 10000.0,
        },
    ]
    ratios = by_name(results)
    warm = ratios["verify warm / unauthenticated"]
    # Per round 0.70, 0.90, 0.88: the median, not the ratio of any two medians.
    assert warm.each_round == (0.7, 0.9, 0.88)
    assert warm.value == 0.88
    assert warm.met is True
    assert ratios["verify cold / unauthenticated"].value == 0.46
    assert ratios["minting / raw RSA-2048 signing, one core"].value == 0.5
    assert "| 0.70, 0.90, 0.88 |" in report.markdown(results)


def test_the_gateway_is_judged_against_direct_and_nginx_in_the_same_rounds() -> None:
    results = data()
    results["proxy_rounds"] = [
        {"orders_direct": 1000.0, "orders_gateway": 800.0, "orders_nginx": 900.0},
        {"orders_direct": 1000.0, "orders_gateway": 600.0, "orders_nginx": 1000.0},
        {"orders_direct": 500.0, "orders_gateway": 400.0, "orders_nginx": 400.0},
    ]
    ratios = by_name(results)
    assert ratios["gateway / direct"].each_round == (0.8, 0.6, 0.8)
    assert (ratios["gateway / direct"].value, ratios["gateway / direct"].met) == (0.8, True)
    assert ratios["gateway / nginx"].value == 800.0 / 900.0
    assert ratios["nginx / direct"].value == 0.9


def test_a_run_from_before_the_nginx_row_still_reports_gateway_over_direct() -> None:
    results = data()
    del results["scenarios"]["orders_nginx"]
    ratios = by_name(results)
    assert (ratios["gateway / direct"].value, ratios["gateway / direct"].met) == (0.5, False)
    assert "gateway / nginx" not in ratios
