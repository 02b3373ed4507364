"""Background tasks: stopping them."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("chat.tasks")


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
