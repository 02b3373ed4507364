"""Throttling of guesses: password, code, NIP and association attempts, per
account and per client address, in fixed windows shared by every worker.

With ``REDIS_URL`` set the counts live in Redis (``INCR`` and an expiry on the
window); otherwise in the ``throttle`` table, one upsert per attempt (what the
embedded default and a one-worker deployment need).  Over the limit, the
attempt is refused with ``auth.throttled`` and a ``retry_after`` (429).

The limits are set in code (:data:`LIMITS`), as the answer times of a person
typing: docs/operations.md gives them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import text

from chat.accounts.hashing import sha256
from chat.clock import Clock
from chat.errors import RateLimited


@dataclass(frozen=True)
class Limit:
    attempts: int
    window: float  # seconds


# What may be tried per window.  "account" keys hold a person's e-mail (or id),
# "address" keys the client's address, which a school's NAT shares among families.
LIMITS = {
    "password.account": Limit(10, 900),
    "password.address": Limit(100, 900),
    "code.account": Limit(10, 900),
    "code.address": Limit(100, 900),
    "send.account": Limit(5, 900),  # e-mails asked for (codes): a mailbox is not a target
    "send.address": Limit(50, 900),
    "child.account": Limit(10, 3600),  # R20 association and NIP attempts
    "child.address": Limit(50, 3600),
}


class Counter(Protocol):
    async def hit(self, key: str, window: float) -> tuple[int, float]:
        """Count an attempt: (attempts in the current window, seconds left in it)."""


class DatabaseCounter:
    UPSERT = text(
        "INSERT INTO throttle (key, window_start, count) VALUES (:key, :now, 1) "
        "ON CONFLICT (key) DO UPDATE SET "
        "count = CASE WHEN throttle.window_start <= :start THEN 1 ELSE throttle.count + 1 END, "
        "window_start = CASE WHEN throttle.window_start <= :start THEN :now ELSE throttle.window_start END "
        "RETURNING count, window_start")

    def __init__(self, sessions: Any, clock: Clock) -> None:
        self.sessions = sessions
        self.clock = clock

    async def hit(self, key: str, window: float) -> tuple[int, float]:
        now = self.clock.time()
        async with self.sessions() as session, session.begin():
            count, start = (await session.execute(self.UPSERT, {"key": key, "now": now,
                                                                 "start": now - window})).one()
        return count, start + window - now


class RedisCounter:
    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    async def hit(self, key: str, window: float) -> tuple[int, float]:
        name = f"{self.prefix}:throttle:{key}"
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.pexpire(name, math.ceil(window * 1000), nx=True)
            pipe.pttl(name)
            count, _, left = await pipe.execute()
        return count, max(left, 0) / 1000 if left >= 0 else window


class Throttle:
    """Counts attempts under :data:`LIMITS` and refuses those over."""

    def __init__(self, counter: Counter, limits: dict[str, Limit] = LIMITS) -> None:
        self.counter = counter
        self.limits = limits

    async def check(self, kind: str, account: str | None, address: str | None) -> None:
        """Count one attempt of ``kind`` for the account and the address; raise
        ``auth.throttled`` if either is over its limit."""
        for scope, value in (("account", account), ("address", address)):
            if not value:
                continue
            limit = self.limits[f"{kind}.{scope}"]
            # Hashed: e-mails and addresses are not kept in Redis or the table as they are.
            count, left = await self.counter.hit(f"{kind}.{scope}:{sha256(value)[:32]}", limit.window)
            if count > limit.attempts:
                raise RateLimited(left, code="auth.throttled")
