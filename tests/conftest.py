"""Suite-wide rules: the ``tests.support`` fixtures, a line as each tier starts, and, in CI, no skips."""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest

pytest_plugins = ["tests.support.plugin"]


def tier_of(nodeid: str) -> str:
    """``tests/e2e/test_x.py::test_y`` is in tier ``e2e``; a test outside a tier folder, in ``tests``."""
    parts = nodeid.split("::", 1)[0].split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "tests" else parts[0]


class TierAnnouncer:
    """Writes ``tier 3/8: integration, 52 tests, after 1 min 05 s`` as each tier begins.

    A full run takes minutes and its slow tiers print few dots: this line says what is running,
    and so that it has not hung. A run within one tier stays as pytest prints it.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.counts: Counter[str] = Counter()
        self.order: list[str] = []
        self.current: str | None = None
        self.started = time.monotonic()

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            tier = tier_of(item.nodeid)
            if tier not in self.counts:
                self.order.append(tier)
            self.counts[tier] += 1

    # Before the terminal reporter, which would otherwise start the file's line above ours.
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logstart(self, nodeid: str) -> None:
        tier = tier_of(nodeid)
        if tier == self.current or len(self.order) < 2:
            return
        self.current = tier
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        minutes, seconds = divmod(int(time.monotonic() - self.started), 60)
        position = self.order.index(tier) + 1 if tier in self.order else 0
        reporter.ensure_newline()
        # -q writes dots without a file name, which ensure_newline() does not end.
        if self.config.get_terminal_writer().width_of_current_line:
            reporter.write("\n")
        reporter.write_sep(
            "-",
            f"tier {position}/{len(self.order)}: {tier}, {self.counts[tier]} tests, "
            f"after {minutes} min {seconds:02d} s",
            bold=True,
        )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(TierAnnouncer(config), "tier-announcer")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A user's machine may lack curl, Docker or Chromium and skip those tests; CI installs them,
    # so there a skip means a test silently did not run.
    if os.environ.get("REQUIRE_NO_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and exitstatus == pytest.ExitCode.OK:
        reporter.write_line(
            f"REQUIRE_NO_SKIPS=1 and {len(skipped)} test(s) skipped: failing the run", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
