"""Helpers that read typed settings from an environment mapping and fail fast by name."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
ENVIRONMENTS = ("production", "dev")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Secret:
    """A secret value whose repr never shows it."""

    value: str

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


def env_str(environ: Mapping[str, str], name: str, default: str | None = None) -> str:
    """The variable's value, or ``default``; with no default a missing variable is an error."""
    value = environ.get(name, default)
    if value is None or value == "":
        if default is not None:
            return default
        raise SettingsError(f"{name} is required")
    return value


def env_int(
    environ: Mapping[str, str], name: str, default: int, *, minimum: int = 0, maximum: int | None = None
) -> int:
    """An integer within ``[minimum, maximum]``."""
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise SettingsError(f"{name} must be in {bound}, got {value}")
    return value


def env_float(environ: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    """A float of at least ``minimum``."""
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value < minimum:
        raise SettingsError(f"{name} must be a finite number >= {minimum}, got {raw}")
    return value


def env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean spelled true/false, yes/no, on/off or 1/0."""
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def env_list(environ: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list; blanks are dropped."""
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    items = tuple(item.strip() for item in raw.split(",") if item.strip())
    if not items:
        raise SettingsError(f"{name} must list at least one value")
    return items


def env_environment(environ: Mapping[str, str]) -> str:
    """``APP_ENV``: ``production`` (the default, so nothing insecure ships on) or ``dev``."""
    value = env_str(environ, "APP_ENV", "production")
    if value not in ENVIRONMENTS:
        raise SettingsError(f"APP_ENV must be one of {', '.join(ENVIRONMENTS)}, got {value!r}")
    return value


def env_secret(
    environ: Mapping[str, str], name: str, *, dev: bool, placeholders: tuple[str, ...] = ("change-me",)
) -> Secret:
    """A secret from ``NAME`` or from the file named by ``NAME_FILE``.

    Placeholder or short values are refused outside dev, so a demo secret never reaches production.
    """
    file_name = environ.get(f"{name}_FILE")
    if file_name:
        try:
            value = Path(file_name).read_text().strip()
        except OSError as exc:
            raise SettingsError(f"{name}_FILE cannot be read: {exc.strerror}") from None
        if not value:
            raise SettingsError(f"{name}_FILE names an empty file")
    else:
        value = env_str(environ, name)
    if not dev and (value in placeholders or len(value) < 32):
        raise SettingsError(f"{name} must be a random value of at least 32 characters outside dev")
    return Secret(value)
