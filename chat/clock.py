"""One clock for the whole server: wall time, monotonic time, UTC datetimes and sleeping.

Services receive a :class:`Clock` instead of calling :mod:`time` and
:func:`asyncio.sleep` themselves, so that a test can pass a :class:`ManualClock`
and move time by hand (a lease that expires, a held notification that comes due)
without waiting for it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import datetime, timezone


class Clock:
    """The real clock."""

    def time(self) -> float:
        """Seconds since the epoch (what tokens, leases and expiries compare)."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (durations, rate limits)."""
        return time.monotonic()

    def utcnow(self) -> datetime:
        """An aware UTC datetime (what the database stores)."""
        return datetime.fromtimestamp(self.time(), timezone.utc)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM = Clock()


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (what the database stores): the one
    spelling for code that is not handed a :class:`Clock`."""
    return datetime.now(timezone.utc)


class ManualClock(Clock):
    """A clock that moves only when :meth:`advance` is called (tests).

    ``sleep`` returns once the clock has been advanced past its end; sleepers
    wake in the order of their deadlines.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    @property
    def sleepers(self) -> int:
        """How many tasks are sleeping on this clock now."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    async def advance(self, seconds: float) -> None:
        """Move time forward, wake every sleeper whose deadline has passed, and
        let the woken tasks run until they wait again."""
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
        for _ in range(3):  # a woken task may need a few loop turns to reach its next await
            await asyncio.sleep(0)
