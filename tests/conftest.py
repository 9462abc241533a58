"""Suite-wide rules: the fixtures of ``tests.support``; where CI asks for it, a skipped test fails the run."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.support.plugin"]


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
