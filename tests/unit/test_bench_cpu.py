"""The bench's CPU per request: process groups read from /proc, and the table's CPU column."""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench import cpu, report
from tests.unit.test_bench_report import data


def _stat(proc: Path, pid: int, group: int, ticks: tuple[int, int, int, int], name: str = "python") -> None:
    (proc / str(pid)).mkdir()
    utime, stime, cutime, cstime = ticks
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    fields = ["S", "1", str(group), str(group), "0", "-1", "0", "0", "0", "0", "0"]
    fields += [str(utime), str(stime), str(cutime), str(cstime), "20", "0"]
    (proc / str(pid) / "stat").write_text(f"{pid} ({name}) {' '.join(fields)}\n")


def test_a_groups_cpu_is_every_members_user_system_and_reaped_childrens_time(tmp_path: Path) -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    _stat(tmp_path, 100, 100, (ticks, ticks, 0, ticks))  # the supervisor, one worker already reaped
    _stat(tmp_path, 101, 100, (2 * ticks, 0, 0, 0), name="python worker) x")  # a name with ") "
    _stat(tmp_path, 200, 200, (50 * ticks, 0, 0, 0))  # another service
    (tmp_path / "self").mkdir()
    assert cpu.group_cpu_seconds(100, tmp_path) == 5.0
    assert cpu.snapshot({"auth": 100, "orders": 200, "gateway": None}, tmp_path) == {
        "auth": 5.0,
        "orders": 50.0,
    }


def test_this_process_groups_cpu_grows_as_it_works() -> None:
    group = os.getpgrp()
    before = cpu.group_cpu_seconds(group)
    deadline = time.process_time() + 0.1
    while time.process_time() < deadline:
        pass
    assert cpu.group_cpu_seconds(group) - before >= 0.05


def test_cpu_per_request_is_the_time_spent_over_the_requests_done() -> None:
    spent = cpu.per_request_us({"auth": 1.0, "redis": 2.0}, {"auth": 1.5, "redis": 2.1}, 1000)
    assert round(spent["auth"]) == 500
    assert round(spent["redis"]) == 100
    assert cpu.per_request_us({"auth": 1.0}, {"auth": 2.0}, 0) == {}


def test_the_table_shows_each_busy_services_cpu_per_request_beside_req_s() -> None:
    results = data()
    results["scenarios"]["session_lookup"]["cpu_us"] = {"auth": 212.4, "redis": 31.0, "gateway": 0.4}
    table = report.markdown(results)
    row = next(line for line in table.splitlines() if "auth `GET /me`, session cookie" in line)
    assert "| 450 | auth 212, redis 31 |" in row
    assert "CPU us per request" in table
