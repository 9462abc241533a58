"""The README: its first screen, its curl block, and every number it takes from the code."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from html.parser import HTMLParser
from pathlib import Path

import pytest

from deploy.devcluster import ClusterConfig
from services.auth import domain as auth_domain
from services.auth.settings import DEMO_PASSWORD, Settings
from services.gateway.settings import GatewaySettings
from services.orders import domain as orders_domain
from services.orders.settings import OrdersSettings
from shared.core.logs import LogSettings
from shared.core.tokens import TokenPolicy
from shared.web.edge import EdgeSettings
from shared.web.verifier import VerifierSettings
from tests.docs.mermaid import DOCS, README, ROOT
from tests.e2e.test_readme_walkthrough import walkthrough_script

_FENCE = re.compile(r"^```[\w-]*\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_CURL = re.compile(r"(?<![\w./-])curl\s")
# What a terminal or a browser shows before any scrolling.
FIRST_SCREEN_LINES = 24
STATIC = ROOT / "services" / "gateway" / "static"


def test_every_curl_block_of_the_readme_is_the_walkthrough_the_e2e_tier_executes() -> None:
    blocks = _FENCE.findall(README.read_text())
    with_curl = [block for block in blocks if _CURL.search(block)]
    # tests/e2e/test_readme_walkthrough.py runs this block whole under `bash -euo pipefail`
    # (and tests/compose/test_cluster.py against the containers); a curl block elsewhere would
    # be documentation nobody executes.
    assert with_curl == [walkthrough_script()], (
        "every README block with curl commands must be the '## Walkthrough with curl' block"
    )


def first_screen() -> str:
    return "\n".join(README.read_text().splitlines()[:FIRST_SCREEN_LINES])


def test_the_first_screen_says_what_this_is_then_the_two_commands_then_how_to_open_the_demo() -> None:
    screen = first_screen()
    what = screen.find("reference implementation")
    commands = _FENCE.search(screen)
    assert what != -1, "the first screen must say what the project is"
    assert commands is not None, "the first screen must show the commands in a code block"
    assert what < commands.start(), "say what this is before the commands"
    block = commands.group(1)
    assert re.search(r"^make run\b", block, re.MULTILINE)
    assert re.search(r"^make test\b", block, re.MULTILINE)
    demo = screen[commands.end() :]
    assert "http://localhost:8000" in demo
    assert DEMO_PASSWORD in demo
    assert "alice@example.com" in demo


def test_the_first_screen_says_how_long_the_tests_take_and_names_the_quick_loop() -> None:
    screen = first_screen()
    assert re.search(r"make test\b.*about \d+ minutes", screen), "say how long `make test` takes"
    assert "make test-unit" in screen


def test_the_readme_and_the_makefile_list_the_same_tiers_in_the_same_order() -> None:
    makefile = (ROOT / "Makefile").read_text()
    declared = re.search(r"^TIERS\s*:?=\s*(.+)$", makefile, re.MULTILINE)
    assert declared is not None, "the Makefile declares the tiers `make test` runs, in order"
    table = re.findall(r"^\| (\w+) \| `make test-(\w+)` \|", README.read_text(), re.MULTILINE)
    assert [tier for tier, _ in table] == declared.group(1).split()
    assert all(tier == target for tier, target in table)
    # Every folder with tests or a conftest is a tier `make test` runs (tests/support holds helpers).
    on_disk = {
        path.parent.name
        for pattern in ("*/test_*.py", "*/conftest.py")
        for path in (ROOT / "tests").glob(pattern)
    }
    assert sorted(declared.group(1).split()) == sorted(on_disk - {"support"})


# -- Numbers the README states, read from the code ----------------------------------------------


class _Inputs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, dict[str, str | None]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "input" and named.get("id"):
            self.inputs[str(named["id"])] = named


def readme_prose() -> str:
    """The README with every run of whitespace one space, so a phrase may wrap."""
    return " ".join(README.read_text().split())


def demo_form() -> dict[str, dict[str, str | None]]:
    parser = _Inputs()
    parser.feed((STATIC / "index.html").read_text())
    return parser.inputs


def test_the_api_table_states_the_order_limits_the_orders_service_applies() -> None:
    text = readme_prose()
    stated = re.search(r"item (\d+)-(\d+) chars, quantity (\d+)-(\d+)", text)
    assert stated is not None, "the API table states the order limits"
    assert [int(number) for number in stated.groups()] == [
        1,
        orders_domain.ITEM_MAX_LENGTH,
        orders_domain.QUANTITY_MIN,
        orders_domain.QUANTITY_MAX,
    ]


def test_the_demo_form_takes_what_the_api_takes() -> None:
    form = demo_form()
    assert form["item"]["maxlength"] == str(orders_domain.ITEM_MAX_LENGTH)
    assert form["quantity"]["min"] == str(orders_domain.QUANTITY_MIN)
    assert form["quantity"]["max"] == str(orders_domain.QUANTITY_MAX)


def test_the_session_browser_label_length_is_the_one_auth_keeps() -> None:
    stated = re.search(r"`user_agent` \([^)]*first (\d+) characters\)", readme_prose())
    assert stated is not None, "the sessions API row states how much of a user agent is kept"
    assert int(stated.group(1)) == auth_domain.MAX_USER_AGENT_LENGTH
    script = (STATIC / "app.js").read_text()
    page = re.search(r"const USER_AGENT_LABEL_MAX = (\d+);", script)
    assert page is not None
    assert int(page.group(1)) == auth_domain.MAX_USER_AGENT_LENGTH


def test_the_verification_rules_state_the_verifiers_limits() -> None:
    text = readme_prose()
    verifier = VerifierSettings.from_env({})
    policy = TokenPolicy("issuer", "orders")
    size = re.search(r"tokens over (\d+) KiB are refused before parsing", text)
    leeway = re.search(r"a leeway of (\d+) s; lifetime capped at (\d+) s", text)
    assert size is not None
    assert leeway is not None
    assert int(size.group(1)) * 1024 == policy.max_token_bytes
    assert int(leeway.group(1)) == verifier.leeway
    assert int(leeway.group(2)) == Settings.from_env(_AUTH_BASE).access_token_ttl


def test_the_throttling_table_states_auths_default_budgets() -> None:
    rows = dict(re.findall(r"^\| (per [^|]+?) \| (\d+) \|", README.read_text(), re.MULTILINE))
    throttle = Settings.from_env(_AUTH_BASE).login_throttle
    assert {
        "per client IP (IPv6: its /64), any account": throttle.per_ip.limit,
        "per account at one client IP": throttle.per_account_ip.limit,
        "per account, all addresses": throttle.per_account.limit,
    } == {name: int(value) for name, value in rows.items()}


# -- Configuration tables: every default is the code's -----------------------------------------

# A production-valid secret, so that the defaults, not dev mode, decide everything else.
_AUTH_BASE = {"SESSION_SECRET": "documentation-check-" + "k" * 40}
_LOADERS: list[Callable[[Mapping[str, str]], object]] = [
    lambda env: Settings.from_env({**_AUTH_BASE, **env}),
    OrdersSettings.from_env,
    GatewaySettings.from_env,
    VerifierSettings.from_env,
    EdgeSettings.from_env,
    ClusterConfig.from_env,
    lambda env: LogSettings.from_env(env, terminal=True),
    lambda env: LogSettings.from_env(env, terminal=False),
]
# Documented in words the code cannot compare: the state directory is relative to the project.
_WORDED = {"VAR_DIR"}
_ROW = re.compile(r"^\| ((?:`[A-Z_]+`(?: / )?)+) \| `([^`|]*)`((?: / `[^`|]*`)*)", re.MULTILINE)


def documented_defaults(document: Path) -> dict[str, str]:
    """``VARIABLE -> default`` from a table whose first columns are `VAR` [/ `VAR`] | `default`."""
    found: dict[str, str] = {}
    for names, first, rest in _ROW.findall(document.read_text()):
        variables = re.findall(r"`([A-Z_]+)`", names)
        defaults = [first, *re.findall(r"`([^`|]*)`", rest)]
        if len(variables) == len(defaults):
            found.update(zip(variables, defaults, strict=True))
    return found


def differs_from_the_code(variable: str, default: str) -> bool:
    """Whether setting ``variable`` to ``default`` changes anything the code reads."""
    for load in _LOADERS:
        try:
            if load({variable: default}) != load({}):
                return True
        except ValueError:
            return True
    return False


@pytest.mark.parametrize("document", [README, DOCS / "configuration.md"], ids=lambda path: path.name)
def test_every_default_in_a_configuration_table_is_the_codes(document: Path) -> None:
    defaults = documented_defaults(document)
    assert len(defaults) >= (6 if document == README else 40), "the table pattern no longer finds the rows"
    wrong = [
        f"{variable}={default!r}"
        for variable, default in defaults.items()
        if variable not in _WORDED and differs_from_the_code(variable, default)
    ]
    assert not wrong, f"{document.name} documents defaults the code does not have: {wrong}"


def test_a_wrong_default_is_caught() -> None:
    assert differs_from_the_code("TOKEN_LEEWAY_SECONDS", "11")
    assert differs_from_the_code("GATEWAY_PORT", "8080")
    assert differs_from_the_code("LOG_FORMAT", "text")
    assert not differs_from_the_code("TOKEN_LEEWAY_SECONDS", "10")
