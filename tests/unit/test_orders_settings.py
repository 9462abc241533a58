"""Orders' limits come from the environment, with defaults, and a wrong value names its variable."""

from __future__ import annotations

import pytest

from services.orders.settings import OrdersSettings
from shared.core import SettingsError

BASE = {"JWKS_URL": "http://127.0.0.1:8001/.well-known/jwks.json", "TOKEN_ISSUER": "http://localhost:8000"}


def test_the_limits_default_to_1000_orders_and_10_a_second_in_bursts_of_20() -> None:
    settings = OrdersSettings.from_env(BASE)
    assert (settings.max_orders_per_user, settings.create_rate, settings.create_burst) == (1000, 10.0, 20)


def test_each_limit_is_read_from_its_variable() -> None:
    settings = OrdersSettings.from_env(
        {**BASE, "ORDERS_MAX_PER_USER": "5", "ORDERS_CREATE_RATE": "0.5", "ORDERS_CREATE_BURST": "3"}
    )
    assert (settings.max_orders_per_user, settings.create_rate, settings.create_burst) == (5, 0.5, 3)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ORDERS_MAX_PER_USER", "0"),
        ("ORDERS_MAX_PER_USER", "many"),
        ("ORDERS_CREATE_RATE", "0"),
        ("ORDERS_CREATE_RATE", "-1"),
        ("ORDERS_CREATE_RATE", "nan"),
        ("ORDERS_CREATE_BURST", "0"),
        ("ORDERS_CREATE_BURST", "1.5"),
    ],
)
def test_a_limit_that_would_refuse_everything_or_is_no_number_fails_naming_its_variable(
    name: str, value: str
) -> None:
    with pytest.raises(SettingsError, match=name):
        OrdersSettings.from_env({**BASE, name: value})
