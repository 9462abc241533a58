"""The public surface of ``shared``: three floors, each with a sorted ``__all__``, importing downward."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import shared
import shared.core.errors
from shared.core.errors import ApiError

FLOORS = ("core", "web", "runtime")
SHARED_DIR = Path(shared.__file__).parent


def floor(name: str) -> ModuleType:
    return importlib.import_module(f"shared.{name}")


def floor_modules(name: str) -> list[ModuleType]:
    package = floor(name)
    return [
        importlib.import_module(f"{package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
    ]


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at any depth of its body."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_package_itself_exports_nothing() -> None:
    assert shared.__all__ == []
    assert sorted(path.name for path in SHARED_DIR.iterdir() if path.suffix == ".py") == ["__init__.py"]


@pytest.mark.parametrize("name", FLOORS)
def test_each_floor_exports_a_sorted_unique_all(name: str) -> None:
    exported = floor(name).__all__
    assert exported == sorted(exported)
    assert len(exported) == len(set(exported))


@pytest.mark.parametrize("name", FLOORS)
def test_every_exported_name_resolves(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from shared.{name} import *", namespace)  # noqa: S102 - the star import is what is under test
    assert set(namespace) - {"__builtins__"} == set(floor(name).__all__)


@pytest.mark.parametrize("name", FLOORS)
def test_exported_classes_and_functions_are_the_floors_own(name: str) -> None:
    for exported in floor(name).__all__:
        value = getattr(floor(name), exported)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__.startswith(f"shared.{name}."), f"{exported} comes from {value.__module__}"


def test_every_api_error_is_exported_by_the_core() -> None:
    errors = [
        value
        for value in vars(shared.core.errors).values()
        if isinstance(value, type)
        and issubclass(value, ApiError)
        and value.__module__ == "shared.core.errors"
    ]
    assert len(errors) > 10
    assert {error.__name__ for error in errors} <= set(floor("core").__all__)


def test_every_exception_a_caller_may_catch_is_exported_by_its_floor() -> None:
    for name in FLOORS:
        exceptions = {
            value.__name__
            for module in floor_modules(name)
            for attribute, value in vars(module).items()
            if not attribute.startswith("_")
            and isinstance(value, type)
            and issubclass(value, Exception)
            and value.__module__ == module.__name__
        }
        assert exceptions <= set(floor(name).__all__), name
    assert {"ApiError", "SettingsError"} <= set(floor("core").__all__)
    assert "JWKSFetchError" in floor("web").__all__


def test_error_codes_are_unique_and_statuses_are_errors() -> None:
    errors = [
        error
        for error in vars(shared.core.errors).values()
        if isinstance(error, type) and issubclass(error, ApiError)
    ]
    codes = [error.code for error in errors]
    assert len(codes) == len(set(codes))
    assert all(400 <= error.status <= 599 for error in errors)


@pytest.mark.parametrize(
    ("name", "allowed"),
    [("core", ("shared.core",)), ("web", ("shared.core", "shared.web")), ("runtime", ("shared.",))],
)
def test_floors_import_only_downward(name: str, allowed: tuple[str, ...]) -> None:
    for path in sorted((SHARED_DIR / name).glob("*.py")):
        for module in imported_modules(path):
            if module.split(".")[0] == "shared":
                assert module.startswith(allowed), f"{path.name} imports {module}"


# msgspec is a data library with no I/O: declared types are domain rules, so they live in the core.
CORE_THIRD_PARTY = frozenset({"msgspec"})


def test_the_core_imports_the_standard_library_and_msgspec_only() -> None:
    allowed = sys.stdlib_module_names | CORE_THIRD_PARTY | {"__future__"}
    for path in sorted((SHARED_DIR / "core").glob("*.py")):
        for module in imported_modules(path):
            assert module.split(".")[0] in allowed or module.startswith("shared.core"), (
                f"{path.name} imports {module}"
            )


@pytest.mark.parametrize("service", ["auth", "orders", "gateway"])
def test_a_domain_module_loads_nothing_beyond_the_core(service: str) -> None:
    # In a fresh interpreter, so that nothing this test process already imported hides a load.
    # typing_extensions comes with msgspec.
    allowed = {"services", "shared", "msgspec", "typing_extensions"}
    probe = (
        "import sys\n"
        "before = set(sys.modules)\n"
        f"import services.{service}.domain\n"
        "loaded = {name.split('.')[0] for name in set(sys.modules) - before}\n"
        f"print(sorted(loaded - set(sys.stdlib_module_names) - {allowed!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_domain_module_loads_no_floor_above_the_core() -> None:
    probe = (
        "import sys, services.auth.domain, services.orders.domain, services.gateway.domain\n"
        "print(sorted(name for name in sys.modules if name.startswith(('shared.web', 'shared.runtime'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_importing_shared_creates_nothing() -> None:
    # In a fresh interpreter: import must not configure logging or start anything.
    probe = (
        "import asyncio, logging, threading, shared.core, shared.web, shared.runtime\n"
        "assert logging.getLogger().handlers == [], logging.getLogger().handlers\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
