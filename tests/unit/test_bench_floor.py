"""The floor tool's arithmetic and its bare app, which the services' figures are read against."""

from __future__ import annotations

from starlette.testclient import TestClient

from bench import floor


def a_round(**rps: float) -> dict[str, float]:
    base = {
        "orders health": 1000.0,
        "orders cold": 400.0,
        "bare health": 2000.0,
        "bare rsa cold": 1000.0,
        "bare verifier cold": 700.0,
        "auth mint": 300.0,
        "bare mint": 400.0,
        "raw sign": 1000.0,
    }
    return {**base, **rps}


def test_each_ratio_is_reported_per_round_with_its_median() -> None:
    text = floor.report([a_round(), a_round(**{"bare mint": 500.0}), a_round(**{"bare mint": 450.0})])
    assert "| bare mint / raw sign | 0.45 | 0.40, 0.50, 0.45 |" in text
    assert "| orders cold / orders health | 0.40 | 0.40, 0.40, 0.40 |" in text
    assert "| bare mint | 400 | 500 | 450 |" in text


def test_the_bare_health_app_answers_and_says_when_it_is_ready() -> None:
    with TestClient(floor.bare_app("health")) as client:
        assert client.get("/ready").json() == {}
        answer = client.get("/")
        assert answer.json() == {"status": "ok"}
        assert answer.headers["content-length"] == str(len(answer.content))
