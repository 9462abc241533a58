"""Background loops: one step on a schedule, from start-up to shutdown, surviving a failing step."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)


class Periodic:
    """Run ``step`` every ``interval`` seconds in a background task, between :meth:`start` and :meth:`aclose`.

    ``interval`` is a number of seconds, or a callable asked before every wait (a schedule that
    backs off after failures). With ``immediately`` the first step runs at once, otherwise after
    the first wait. A step that raises is logged under ``name`` and the loop goes on: a loop
    that dies on one surprise would leave keys stale or an origin out of rotation for good,
    silently. Use it as ``async with Periodic(...)`` in a lifespan, or call :meth:`start` and
    :meth:`aclose` from an object that owns it.
    """

    def __init__(
        self,
        step: Callable[[], Awaitable[None]],
        interval: float | Callable[[], float],
        *,
        name: str,
        immediately: bool = False,
    ) -> None:
        self.name = name
        self._step = step
        self._interval = interval if callable(interval) else (lambda: interval)
        self._immediately = immediately
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the loop is running (started and not yet closed)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop in a task of the running event loop; starting twice is an error."""
        if self._task is not None:
            raise RuntimeError(f"{self.name} is already started")
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def aclose(self) -> None:
        """Cancel the loop and wait until it has stopped, so no step outlives its resources.

        See :func:`cancel_and_wait`.
        """
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def __aenter__(self) -> Periodic:
        self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self) -> None:
        if not self._immediately:
            await asyncio.sleep(self._interval())
        while True:
            try:
                await self._step()
            except Exception:
                logger.exception("%s failed; trying again on schedule", self.name)
            await asyncio.sleep(self._interval())


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has finished, so nothing it holds is closed under it.

    The task's own cancellation is absorbed; a cancellation of the caller while it waits is
    passed on, not swallowed with the task's. An error the task ended with is not raised here.
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception:
        logger.exception("%s failed before it was cancelled", task.get_name())
