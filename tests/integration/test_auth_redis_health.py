"""Auth's /metrics says whether Redis answers and counts its failures, from auth's own commands."""

from __future__ import annotations

from pathlib import Path

import redis
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from deploy.processes import free_port
from deploy.redis_server import RedisServer
from services.auth.app import create_app
from tests.integration.test_auth_app import Session, login, settings_for, wait_for_demo_users


def redis_samples(client: TestClient) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name.startswith("auth_redis_")
    }


def test_redis_up_falls_to_zero_with_errors_counted_and_returns_when_redis_does(
    tmp_path: Path, keys_dir: Path
) -> None:
    server = RedisServer(tmp_path / "redis", port=free_port(), persist=True)
    server.start()
    app = create_app(settings_for(server.url, keys_dir))
    try:
        with TestClient(app, base_url="http://localhost:8001") as client:
            wait_for_demo_users(client)
            caller = Session(client)
            assert redis_samples(client) == {"auth_redis_up": 1.0, "auth_redis_errors_total": 0.0}

            server.stop()
            # Minting runs the session script on auth's pipelined socket: it is watched too.
            assert caller.mint().status_code == 503
            after_mint = redis_samples(client)
            assert after_mint["auth_redis_up"] == 0.0
            assert after_mint["auth_redis_errors_total"] >= 1
            assert login(client).status_code == 503
            down = redis_samples(client)
            assert down["auth_redis_up"] == 0.0
            assert down["auth_redis_errors_total"] > after_mint["auth_redis_errors_total"]

            server.start()
            # The readiness probe's ping is enough to notice: no user traffic is needed.
            assert client.get("/readyz").status_code == 200
            back = redis_samples(client)
            assert back["auth_redis_up"] == 1.0
            # The revocation feed's poll of Redis failed too while it was down; once it is back,
            # no more errors are counted.
            assert client.get("/readyz").status_code == 200
            assert caller.mint().status_code in (200, 401)
            assert redis_samples(client)["auth_redis_errors_total"] == back["auth_redis_errors_total"]
    finally:
        server.stop()


def test_a_script_redis_has_forgotten_is_not_an_error(redis_url: str, keys_dir: Path) -> None:
    app = create_app(settings_for(redis_url, keys_dir))
    with TestClient(app, base_url="http://localhost:8001") as client:
        wait_for_demo_users(client)
        caller = Session(client)
        # A restarted or failed-over Redis has no scripts: redis-py meets NOSCRIPT and loads them.
        with redis.Redis.from_url(redis_url) as admin:
            admin.script_flush()
        assert caller.mint().status_code == 200
        assert redis_samples(client) == {"auth_redis_up": 1.0, "auth_redis_errors_total": 0.0}
