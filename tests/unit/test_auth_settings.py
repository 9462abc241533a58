"""Auth settings from the environment: documented defaults, fail-fast errors by name, masked secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.auth.settings import DEMO_PASSWORD, Settings
from shared.core import Secret, SettingsError

SECRET = "s3cr3t-" + "k" * 40
DEV = {"APP_ENV": "dev", "SESSION_SECRET": SECRET}
PRODUCTION = {"SESSION_SECRET": SECRET}


def failure(environ: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(environ)
    return str(caught.value)


def test_defaults_in_dev() -> None:
    settings = Settings.from_env(DEV)
    assert settings.environment == "dev"
    assert settings.dev
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8001, 1)
    assert settings.log_level == "info"
    assert settings.redis_url == Secret("redis://127.0.0.1:6379/0")
    assert settings.redis_timeout == 0.5
    assert settings.issuer == "http://localhost:8000"
    assert settings.public_origin == "http://localhost:8000"
    assert settings.keys_dir == Path("var/keys")
    assert settings.session_secret == Secret(SECRET)
    assert settings.audiences == ("orders",)
    assert settings.access_token_ttl == 300
    assert (settings.session_idle_timeout, settings.session_absolute_timeout) == (1800, 86400)
    assert settings.cookie_secure
    assert settings.cookie_name == "__Host-session"
    assert settings.jwks_max_age == 300
    assert settings.demo_password == Secret(DEMO_PASSWORD)


def test_production_is_the_default_environment_and_has_no_demo_password() -> None:
    settings = Settings.from_env(PRODUCTION)
    assert settings.environment == "production"
    assert not settings.dev
    assert settings.demo_password is None


def test_dev_takes_demo_password_from_the_environment() -> None:
    settings = Settings.from_env({**DEV, "DEMO_PASSWORD": "another-demo-password"})
    assert settings.demo_password == Secret("another-demo-password")


def test_variables_override_defaults() -> None:
    settings = Settings.from_env(
        {
            **PRODUCTION,
            "AUTH_HOST": "192.0.2.10",
            "AUTH_PORT": "9001",
            "TOKEN_ISSUER": "https://auth.example.com",
            "PUBLIC_ORIGIN": "https://app.example.com/",
            "TOKEN_AUDIENCES": "orders, billing",
            "AUTH_KEYS_DIR": "/run/keys",
            "SESSION_IDLE_TIMEOUT_SECONDS": "60",
            "SESSION_ABSOLUTE_TIMEOUT_SECONDS": "60",
        }
    )
    assert (settings.host, settings.port) == ("192.0.2.10", 9001)
    assert settings.issuer == "https://auth.example.com"
    assert settings.public_origin == "https://app.example.com"
    assert settings.audiences == ("orders", "billing")
    assert settings.keys_dir == Path("/run/keys")
    assert (settings.session_idle_timeout, settings.session_absolute_timeout) == (60, 60)


class TestSessionSecret:
    def test_production_requires_a_session_secret(self) -> None:
        assert "SESSION_SECRET" in failure({})

    @pytest.mark.parametrize("value", ["change-me", "short", "x" * 31])
    def test_production_refuses_a_placeholder_or_short_secret(self, value: str) -> None:
        assert "SESSION_SECRET" in failure({"SESSION_SECRET": value})

    def test_dev_accepts_the_placeholder(self) -> None:
        assert Settings.from_env({"APP_ENV": "dev", "SESSION_SECRET": "change-me"}).dev

    def test_production_accepts_a_32_character_secret(self) -> None:
        assert Settings.from_env({"SESSION_SECRET": "x" * 32}).session_secret == Secret("x" * 32)

    def test_the_secret_is_read_from_session_secret_file(self, tmp_path: Path) -> None:
        path = tmp_path / "session-secret"
        path.write_text(SECRET + "\n")
        settings = Settings.from_env({"SESSION_SECRET_FILE": str(path)})
        assert settings.session_secret == Secret(SECRET)

    def test_an_unreadable_secret_file_is_named(self, tmp_path: Path) -> None:
        assert "SESSION_SECRET_FILE" in failure({"SESSION_SECRET_FILE": str(tmp_path / "absent")})

    def test_a_placeholder_in_the_secret_file_is_refused_in_production(self, tmp_path: Path) -> None:
        path = tmp_path / "session-secret"
        path.write_text("change-me\n")
        assert "SESSION_SECRET" in failure({"SESSION_SECRET_FILE": str(path)})


class TestCookie:
    def test_cookie_secure_false_is_refused_outside_dev(self) -> None:
        assert "COOKIE_SECURE" in failure({**PRODUCTION, "COOKIE_SECURE": "false"})

    def test_cookie_secure_false_in_dev_drops_the_host_prefix(self) -> None:
        settings = Settings.from_env({**DEV, "COOKIE_SECURE": "false"})
        assert not settings.cookie_secure
        assert settings.cookie_name == "session"

    def test_a_garbage_cookie_secure_is_named(self) -> None:
        assert "COOKIE_SECURE" in failure({**DEV, "COOKIE_SECURE": "sometimes"})


class TestInvalidValues:
    @pytest.mark.parametrize(
        "origin",
        [
            "localhost:8000",
            "ftp://localhost:8000",
            "http://",
            "http://localhost:8000/app",
            "//localhost:8000",
            "not a url",
        ],
    )
    def test_a_bad_public_origin_is_named(self, origin: str) -> None:
        assert "PUBLIC_ORIGIN" in failure({**DEV, "PUBLIC_ORIGIN": origin})

    @pytest.mark.parametrize(
        "origin", ["http://localhost:8000?x=1", "http://localhost:8000#top", "http://user@localhost:8000"]
    )
    def test_a_public_origin_with_parts_an_origin_never_has_is_named(self, origin: str) -> None:
        assert "PUBLIC_ORIGIN" in failure({**DEV, "PUBLIC_ORIGIN": origin})

    def test_idle_longer_than_absolute_is_named(self) -> None:
        message = failure(
            {**DEV, "SESSION_IDLE_TIMEOUT_SECONDS": "7200", "SESSION_ABSOLUTE_TIMEOUT_SECONDS": "3600"}
        )
        assert "SESSION_IDLE_TIMEOUT_SECONDS" in message

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("AUTH_PORT", "eighty"),
            ("AUTH_PORT", "80.5"),
            ("AUTH_PORT", "0"),
            ("AUTH_PORT", "65536"),
            ("AUTH_WORKERS", "0"),
            ("ACCESS_TOKEN_TTL_SECONDS", "3600"),
            ("SESSION_IDLE_TIMEOUT_SECONDS", "0"),
            ("REDIS_TIMEOUT_SECONDS", "nan"),
            ("APP_ENV", "staging"),
        ],
    )
    def test_an_invalid_value_is_named(self, name: str, value: str) -> None:
        assert name in failure({**DEV, name: value})


class TestRepr:
    REDIS_URL = "redis://:hunter2secret@redis.internal:6379/0"

    def test_repr_never_shows_the_session_secret_or_the_redis_password(self) -> None:
        settings = Settings.from_env({**PRODUCTION, "REDIS_URL": self.REDIS_URL})
        for text in (repr(settings), str(settings), f"{settings}"):
            assert SECRET not in text
            assert "hunter2secret" not in text
        assert settings.redis_url.value == self.REDIS_URL

    def test_repr_never_shows_the_demo_password(self) -> None:
        settings = Settings.from_env(DEV)
        assert DEMO_PASSWORD not in repr(settings)
        assert SECRET not in repr(settings)


def test_the_revocation_feed_settings_and_their_bound() -> None:
    settings = Settings.from_env(DEV)
    assert (settings.revocations_poll_interval, settings.revocations_max_waiters) == (0.1, 32)
    tuned = Settings.from_env({**DEV, "REVOCATIONS_POLL_SECONDS": "0.25", "REVOCATIONS_MAX_WAITERS": "0"})
    assert (tuned.revocations_poll_interval, tuned.revocations_max_waiters) == (0.25, 0)
    # Held long-polls must leave in-flight slots for logins and tokens.
    message = failure({**DEV, "REVOCATIONS_MAX_WAITERS": "8", "EDGE_MAX_IN_FLIGHT": "8"})
    assert "REVOCATIONS_MAX_WAITERS must be below EDGE_MAX_IN_FLIGHT" in message
    assert "REVOCATIONS_POLL_SECONDS" in failure({**DEV, "REVOCATIONS_POLL_SECONDS": "0"})
