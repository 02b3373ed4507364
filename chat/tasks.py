"""Background tasks: running one periodically, and stopping them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from chat.clock import SYSTEM, Clock

log = logging.getLogger("chat.tasks")


def every(interval: float, step: Callable[[], Awaitable[Any]], *, name: str,
          reported: Callable[[Exception], bool] = lambda exc: False,
          clock: Clock = SYSTEM, wait_first: bool = False) -> asyncio.Task[None]:
    """Start a task that awaits ``step()`` every ``interval`` seconds until it is
    cancelled (stop it with :func:`cancel_and_wait`).

    The first step runs at once, or after one interval with ``wait_first``.  A
    step that raises is logged with its traceback under ``name``, unless
    ``reported(exc)`` says it was already reported elsewhere (a database outage
    is logged once by :mod:`chat.storage.health`); either way the next step
    runs at its time.
    """

    async def loop() -> None:
        if wait_first:
            await clock.sleep(interval)
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not reported(exc):
                    log.exception("%s failed; trying again in %g s", name, interval)
            await clock.sleep(interval)

    return asyncio.create_task(loop(), name=name)


async def cancel_and_wait(*tasks: asyncio.Task | None) -> None:
    """Cancel background tasks (``None`` entries are skipped) and wait until each
    has finished, so that its clean-up has run before the caller goes on.  A task
    that had already failed is logged, not raised: the caller is shutting down."""
    live = [task for task in tasks if task is not None]
    for task in live:
        task.cancel()
    for task in live:
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("background task %s had failed", task.get_name())
