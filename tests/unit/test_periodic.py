"""The one background loop: its schedule, its survival of a failing step, and a clean stop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.web import Periodic, cancel_and_wait


async def test_the_step_runs_again_and_again_until_closed() -> None:
    calls = 0
    enough = asyncio.Event()

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            enough.set()

    async with Periodic(step, 0.001, name="counting") as periodic:
        await asyncio.wait_for(enough.wait(), 5)
        assert periodic.running
    assert not periodic.running
    seen = calls
    await asyncio.sleep(0.01)
    assert calls == seen, "no step runs after close"


async def test_a_failing_step_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0
    recovered = asyncio.Event()

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("surprise")
        recovered.set()

    with caplog.at_level(logging.ERROR, logger="shared.web.periodic"):
        async with Periodic(step, 0.001, name="flaky"):
            await asyncio.wait_for(recovered.wait(), 5)
    assert [record.getMessage() for record in caplog.records] == ["flaky failed; trying again on schedule"]
    assert caplog.records[0].exc_info is not None


async def test_the_first_step_waits_one_interval_unless_asked_to_run_at_once() -> None:
    ran: list[str] = []

    async def step(name: str) -> None:
        ran.append(name)

    async with (
        Periodic(lambda: step("later"), 60, name="later"),
        Periodic(lambda: step("now"), 60, name="now", immediately=True),
    ):
        for _ in range(5):
            await asyncio.sleep(0)
    assert ran == ["now"]


async def test_the_interval_may_be_asked_before_every_wait() -> None:
    asked = 0
    enough = asyncio.Event()

    def interval() -> float:
        nonlocal asked
        asked += 1
        if asked == 3:
            enough.set()
        return 0.001

    async def step() -> None:
        return None

    async with Periodic(step, interval, name="backing-off"):
        await asyncio.wait_for(enough.wait(), 5)


async def test_closing_waits_until_the_running_step_has_stopped() -> None:
    started = asyncio.Event()
    cleaned_up: list[bool] = []

    async def step() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0)  # a step's clean-up may itself await
            cleaned_up.append(True)

    periodic = Periodic(step, 60, name="slow", immediately=True)
    periodic.start()
    await asyncio.wait_for(started.wait(), 5)
    await periodic.aclose()
    assert cleaned_up == [True], "aclose returned before the step had finished"
    assert not periodic.running


async def test_starting_twice_is_refused() -> None:
    async def step() -> None:
        return None

    async with Periodic(step, 60, name="once") as periodic:
        with pytest.raises(RuntimeError, match="once is already started"):
            periodic.start()


async def test_a_closer_that_is_cancelled_itself_stays_cancelled() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await release.wait()

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    closer = asyncio.create_task(cancel_and_wait(task))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    closer.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await closer
    assert task.done()
