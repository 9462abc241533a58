"""The public surface of ``shared``: one sorted ``__all__`` that names everything a service may use."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from types import ModuleType

import shared
import shared.errors
from shared.errors import ApiError


def shared_modules() -> list[ModuleType]:
    return [importlib.import_module(f"shared.{info.name}") for info in pkgutil.iter_modules(shared.__path__)]


def test_all_is_sorted_and_unique() -> None:
    assert shared.__all__ == sorted(shared.__all__)
    assert len(shared.__all__) == len(set(shared.__all__))


def test_every_exported_name_resolves() -> None:
    namespace: dict[str, object] = {}
    exec("from shared import *", namespace)  # noqa: S102 - the star import is what is under test
    assert set(namespace) - {"__builtins__"} == set(shared.__all__)


def test_exported_classes_and_functions_are_shared_own() -> None:
    for name in shared.__all__:
        value = getattr(shared, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__.startswith("shared."), f"{name} comes from {value.__module__}"


def test_every_api_error_is_exported() -> None:
    errors = [
        value
        for value in vars(shared.errors).values()
        if isinstance(value, type) and issubclass(value, ApiError) and value.__module__ == "shared.errors"
    ]
    assert len(errors) > 10
    assert {error.__name__ for error in errors} <= set(shared.__all__)


def test_every_exception_a_caller_may_catch_is_exported() -> None:
    exceptions = {
        value.__name__
        for module in shared_modules()
        for name, value in vars(module).items()
        if not name.startswith("_")
        and isinstance(value, type)
        and issubclass(value, Exception)
        and value.__module__ == module.__name__
    }
    assert {"ApiError", "JWKSFetchError", "SettingsError"} <= exceptions
    assert exceptions <= set(shared.__all__)


def test_error_codes_are_unique_and_statuses_are_errors() -> None:
    errors = [
        error
        for error in vars(shared.errors).values()
        if isinstance(error, type) and issubclass(error, ApiError)
    ]
    codes = [error.code for error in errors]
    assert len(codes) == len(set(codes))
    assert all(400 <= error.status <= 599 for error in errors)


def test_importing_shared_creates_nothing() -> None:
    # In a fresh interpreter: import must not configure logging or start anything.
    probe = (
        "import asyncio, logging, threading, shared\n"
        "assert logging.getLogger().handlers == [], logging.getLogger().handlers\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
