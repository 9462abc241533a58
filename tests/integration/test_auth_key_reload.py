"""A running auth app picks up key changes without a restart and survives a broken file, showing it."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from services.auth.app import create_app
from services.auth.key_store import KeyFileError, rotate_keys
from services.auth.settings import Settings, rotation_policy
from tests.support.polling import poll

ENV = {
    "APP_ENV": "dev",
    "SESSION_SECRET": "integration-test-secret-that-is-long-enough",
    "KEYS_RELOAD_SECONDS": "0.05",
}


def settings_for(redis_url: str, keys_dir: Path) -> Settings:
    return Settings.from_env({**ENV, "REDIS_URL": redis_url, "AUTH_KEYS_DIR": str(keys_dir)})


def kids(client: TestClient) -> set[str]:
    return {entry["kid"] for entry in client.get("/.well-known/jwks.json").json()["keys"]}


def test_a_rotation_is_published_without_a_restart_and_a_broken_file_keeps_the_last_good_keys(
    redis_url: str, keys_dir: Path
) -> None:
    with TestClient(create_app(settings_for(redis_url, keys_dir))) as client:
        # Dev mode seeds the demo users; ready once they exist.
        poll(lambda: client.get("/readyz").status_code == 200, within=10, what="auth ready")
        (first,) = kids(client)
        second = rotate_keys(keys_dir, rotation_policy(ENV))
        poll(lambda: kids(client) == {first, second}, within=5, what="the new key being published")
        keys = client.get("/readyz").json()["checks"]["signing_keys"]
        assert keys["active"] == first
        assert keys["keys"] == {first: "active", second: "next"}

        broken = keys_dir / "copied-halfway.pem"
        broken.write_bytes(b"-----BEGIN PRIVATE KEY-----\nMIIE")
        poll(
            lambda: client.get("/readyz").json()["checks"]["signing_keys"]["last_error"],
            within=5,
            what="the failed reload showing",
        )
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert str(broken) in ready.json()["checks"]["signing_keys"]["last_error"]
        assert kids(client) == {first, second}
        metrics = client.get("/metrics").text
        assert "auth_key_directory_ok 0.0" in metrics
        assert 'auth_key_reloads_total{result="failure"} 1.0' in metrics
        assert "BEGIN" not in ready.text + metrics

        broken.unlink()
        poll(lambda: "auth_key_directory_ok 1.0" in client.get("/metrics").text, within=5, what="recovery")


def test_a_broken_key_file_stops_start_up_naming_the_file(redis_url: str, keys_dir: Path) -> None:
    broken = keys_dir / "broken.pem"
    broken.write_text("not a key")
    app = create_app(settings_for(redis_url, keys_dir))
    with pytest.raises(KeyFileError, match=f"{broken}: not a PEM RSA private key"), TestClient(app):
        pass
