"""The shared env_* helpers: defaults, bounds, spellings, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.core import (
    Secret,
    SettingsError,
    env_bool,
    env_environment,
    env_float,
    env_int,
    env_list,
    env_secret,
    env_str,
)

LONG = "r" * 32


class TestEnvStr:
    def test_the_value_or_the_default(self) -> None:
        assert env_str({"NAME": "value"}, "NAME", "default") == "value"
        assert env_str({}, "NAME", "default") == "default"
        assert env_str({"NAME": ""}, "NAME", "default") == "default"

    @pytest.mark.parametrize("environ", [{}, {"NAME": ""}])
    def test_a_required_variable_that_is_missing_or_empty_is_named(self, environ: dict[str, str]) -> None:
        with pytest.raises(SettingsError, match="NAME is required"):
            env_str(environ, "NAME")


class TestEnvInt:
    def test_missing_or_empty_gives_the_default(self) -> None:
        assert env_int({}, "N", 7) == 7
        assert env_int({"N": ""}, "N", 7) == 7

    def test_an_integer_is_parsed(self) -> None:
        assert env_int({"N": "42"}, "N", 7) == 42

    def test_bounds_are_inclusive(self) -> None:
        assert env_int({"N": "1"}, "N", 7, minimum=1, maximum=10) == 1
        assert env_int({"N": "10"}, "N", 7, minimum=1, maximum=10) == 10

    @pytest.mark.parametrize("raw", ["0", "11", "-5"])
    def test_out_of_bounds_is_named(self, raw: str) -> None:
        with pytest.raises(SettingsError, match=r"^N must be in 1\.\.10"):
            env_int({"N": raw}, "N", 7, minimum=1, maximum=10)

    def test_the_default_minimum_refuses_negatives(self) -> None:
        with pytest.raises(SettingsError, match=r"N must be in >= 0"):
            env_int({"N": "-1"}, "N", 7)

    @pytest.mark.parametrize("raw", ["seven", "1.5", "1e3", "0x10", "12abc", "nan"])
    def test_garbage_is_named(self, raw: str) -> None:
        with pytest.raises(SettingsError, match=r"^N must be an integer"):
            env_int({"N": raw}, "N", 7)


class TestEnvFloat:
    def test_missing_gives_the_default_and_numbers_parse(self) -> None:
        assert env_float({}, "F", 0.5) == 0.5
        assert env_float({"F": "2.5"}, "F", 0.5) == 2.5
        assert env_float({"F": "3"}, "F", 0.5) == 3.0

    @pytest.mark.parametrize("raw", ["nan", "NaN", "-nan"])
    def test_nan_is_refused(self, raw: str) -> None:
        with pytest.raises(SettingsError, match=r"^F must be"):
            env_float({"F": raw}, "F", 0.5)

    @pytest.mark.parametrize("raw", ["inf", "Infinity"])
    def test_infinity_is_refused(self, raw: str) -> None:
        with pytest.raises(SettingsError, match=r"^F must be"):
            env_float({"F": raw}, "F", 0.5)

    def test_below_minimum_is_named(self) -> None:
        with pytest.raises(SettingsError, match=r"^F must be .*>= 0\.1"):
            env_float({"F": "0.05"}, "F", 0.5, minimum=0.1)

    def test_the_minimum_itself_is_allowed(self) -> None:
        assert env_float({"F": "0.1"}, "F", 0.5, minimum=0.1) == 0.1

    @pytest.mark.parametrize("raw", ["fast", "1,5", "--1"])
    def test_garbage_is_named(self, raw: str) -> None:
        with pytest.raises(SettingsError, match=r"^F must be a number"):
            env_float({"F": raw}, "F", 0.5)


class TestEnvBool:
    @pytest.mark.parametrize("raw", ["1", "true", "TRUE", "True", "yes", "YES", "on", "On"])
    def test_true_spellings(self, raw: str) -> None:
        assert env_bool({"B": raw}, "B", False) is True

    @pytest.mark.parametrize("raw", ["0", "false", "False", "no", "NO", "off", "OFF"])
    def test_false_spellings(self, raw: str) -> None:
        assert env_bool({"B": raw}, "B", True) is False

    @pytest.mark.parametrize("default", [True, False])
    def test_missing_or_empty_gives_the_default(self, default: bool) -> None:
        assert env_bool({}, "B", default) is default
        assert env_bool({"B": ""}, "B", default) is default

    @pytest.mark.parametrize("raw", ["2", "maybe", "t", "enabled", "y"])
    def test_garbage_is_named(self, raw: str) -> None:
        with pytest.raises(SettingsError, match=r"^B must be true or false"):
            env_bool({"B": raw}, "B", True)


class TestEnvList:
    def test_items_are_split_on_commas_and_stripped(self) -> None:
        assert env_list({"L": "orders, billing ,x"}, "L", ("d",)) == ("orders", "billing", "x")

    def test_blank_items_are_dropped(self) -> None:
        assert env_list({"L": ",orders,, ,billing,"}, "L", ("d",)) == ("orders", "billing")

    @pytest.mark.parametrize("environ", [{}, {"L": ""}, {"L": "   "}])
    def test_missing_or_blank_gives_the_default(self, environ: dict[str, str]) -> None:
        assert env_list(environ, "L", ("d",)) == ("d",)


class TestEnvEnvironment:
    def test_production_is_the_default(self) -> None:
        assert env_environment({}) == "production"
        assert env_environment({"APP_ENV": ""}) == "production"

    @pytest.mark.parametrize("value", ["production", "dev"])
    def test_the_known_environments(self, value: str) -> None:
        assert env_environment({"APP_ENV": value}) == value

    @pytest.mark.parametrize("value", ["development", "prod", "DEV", "test", " dev"])
    def test_anything_else_is_named(self, value: str) -> None:
        with pytest.raises(SettingsError, match=r"^APP_ENV must be one of production, dev"):
            env_environment({"APP_ENV": value})


class TestEnvSecret:
    def test_the_value_comes_from_the_variable(self) -> None:
        assert env_secret({"TOKEN": LONG}, "TOKEN", dev=False) == Secret(LONG)

    def test_the_value_comes_from_the_file_stripped(self, tmp_path: Path) -> None:
        path = tmp_path / "token"
        path.write_text(f"  {LONG}\n")
        assert env_secret({"TOKEN_FILE": str(path)}, "TOKEN", dev=False) == Secret(LONG)

    def test_the_file_wins_over_the_variable(self, tmp_path: Path) -> None:
        path = tmp_path / "token"
        path.write_text(LONG)
        assert env_secret({"TOKEN_FILE": str(path), "TOKEN": "f" * 40}, "TOKEN", dev=False) == Secret(LONG)

    def test_an_unreadable_file_is_named(self, tmp_path: Path) -> None:
        with pytest.raises(SettingsError, match=r"^TOKEN_FILE cannot be read"):
            env_secret({"TOKEN_FILE": str(tmp_path / "missing")}, "TOKEN", dev=True)

    def test_a_directory_as_file_is_named(self, tmp_path: Path) -> None:
        with pytest.raises(SettingsError, match=r"^TOKEN_FILE cannot be read"):
            env_secret({"TOKEN_FILE": str(tmp_path)}, "TOKEN", dev=True)

    @pytest.mark.parametrize("dev", [True, False])
    def test_a_missing_secret_is_named(self, dev: bool) -> None:
        with pytest.raises(SettingsError, match=r"^TOKEN is required"):
            env_secret({}, "TOKEN", dev=dev)

    @pytest.mark.parametrize("value", ["change-me", "short", "x" * 31])
    def test_placeholder_or_short_is_refused_outside_dev(self, value: str) -> None:
        with pytest.raises(SettingsError, match=r"^TOKEN must be a random value of at least 32") as caught:
            env_secret({"TOKEN": value}, "TOKEN", dev=False)
        assert value not in str(caught.value)

    def test_a_placeholder_in_a_file_is_refused_outside_dev(self, tmp_path: Path) -> None:
        path = tmp_path / "token"
        path.write_text("change-me\n")
        with pytest.raises(SettingsError, match=r"^TOKEN must be"):
            env_secret({"TOKEN_FILE": str(path)}, "TOKEN", dev=False)

    def test_custom_placeholders_are_refused_even_when_long(self) -> None:
        placeholder = "please-replace-this-value-before-going-live"
        with pytest.raises(SettingsError, match=r"^TOKEN must be"):
            env_secret({"TOKEN": placeholder}, "TOKEN", dev=False, placeholders=(placeholder,))

    @pytest.mark.parametrize("value", ["change-me", "short"])
    def test_dev_accepts_placeholder_and_short(self, value: str) -> None:
        assert env_secret({"TOKEN": value}, "TOKEN", dev=True) == Secret(value)


class TestSecret:
    def test_repr_and_str_are_masked(self) -> None:
        secret = Secret("hunter2-the-real-value")
        for text in (
            repr(secret),
            str(secret),
            f"{secret}",
            f"{secret!r}",
            repr([secret]),
            repr({"k": secret}),
        ):
            assert "hunter2" not in text
            assert "*" in text

    def test_the_value_is_still_available_explicitly(self) -> None:
        assert Secret("hunter2").value == "hunter2"
