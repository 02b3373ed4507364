"""Sending released notifications: one task per channel, each attempt under a lease.

Each channel (the ``notification.digest`` frame, the e-mail, the push) attempts
its due delivery rows ``concurrency`` at a time, each attempt under a lease on
its row and cut off after the channel's timeout (at most half the lease), so a
slow channel or person holds up nothing else.  A failed attempt is retried from
the database with backoff (:func:`retry_delay`); a success is marked done only
by the worker still holding the lease: *at least once* per digest and channel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from sqlalchemy import select, update

from chat.clock import SYSTEM, Clock
from chat.frames import dumps
from chat.mail import Channel, Recipient
from chat.storage.models import Notification, NotificationDelivery, Person
from chat.tasks import cancel_and_wait, every

log = logging.getLogger("chat.notifications")

# A digest frame is one publish to the broker (well under a millisecond): five
# seconds means the broker is stuck, and the attempt is retried later.
FRAME_TIMEOUT_SECONDS = 5.0
# A failed attempt is retried after 30 s, then twice as long each time up to 15
# minutes: a relay back within minutes is used within a minute, a dead one costs a
# try every quarter of an hour.  After a day a digest is news no longer: the
# channel gives it up (logged as an error); the notifications stay in the feed.
RETRY_FIRST_SECONDS = 30.0
RETRY_MAX_SECONDS = 900.0
GIVE_UP_AFTER_SECONDS = 24 * 3600.0


def retry_delay(attempts: int) -> float:
    """Seconds until the next attempt after ``attempts`` failed ones (30 s doubling, at most 15 min)."""
    return min(RETRY_FIRST_SECONDS * 2 ** max(attempts - 1, 0), RETRY_MAX_SECONDS)


def delivery_bound(people: int, concurrency: int, timeout: float) -> float:
    """The documented bound on a channel's first attempts for ``people`` digests
    released together: every one has been attempted (sent, or failed and due for
    a retry) within this many seconds of the send task starting on them, whatever
    the other channels do — ``ceil(people / concurrency)`` rounds of at most one
    timeout each (database time aside)."""
    return -(-people // concurrency) * timeout



class FrameChannel:
    """The ``notification.digest`` frame on the person channel (every connection of
    the person, on every worker).  Best effort live, like every person frame: a
    person not connected, or a broker outage, finds the notifications in the feed."""

    name = "frame"
    timeout = FRAME_TIMEOUT_SECONDS

    def __init__(self, *, hub: Any, unread_count: Callable[[int], Awaitable[int]]) -> None:
        self.hub = hub
        self.unread_count = unread_count

    async def deliver(self, person: Recipient, items: list[dict[str, Any]], digest: bool, key: str) -> None:
        frame = {"type": "notification.digest", "digest_id": key, "notifications": items,
                 "unread": await self.unread_count(person.id)}
        await self.hub.publish_person(person.id, "frame", dumps(frame))


class Deliveries:
    """Attempts the due delivery rows of each channel.  ``worker`` names this
    process's leases; ``render`` turns a notification into its feed view."""

    def __init__(self, *, sessions: Callable[[], Any], frame: Channel, channels: list[Channel], worker: str,
                 lease_seconds: float, concurrency: int, render: Callable[[Notification, str | None], dict[str, Any]],
                 clock: Clock = SYSTEM) -> None:
        self.sessions = sessions
        self.frame = frame
        self.channels = channels
        self.worker = worker
        self.lease_seconds = lease_seconds
        self.concurrency = concurrency
        self.render = render
        self.clock = clock

    async def send_due(self, channel: Channel | None = None) -> int:
        """Attempt every delivery due now on ``channel`` (every channel at once when
        None), ``concurrency`` at a time per channel; returns how many were done
        (sent, nothing left to send, or given up).  Failed ones wait for their retry."""
        channels = [channel] if channel is not None else [self.frame, *self.channels]
        return sum(await asyncio.gather(*(self._drain(c) for c in channels)))

    async def _drain(self, channel: Channel) -> int:
        done = 0
        in_flight: set[asyncio.Task] = set()
        keeper = self._keep_leases(channel.name)
        try:
            more = True
            while True:
                free = self.concurrency - len(in_flight)
                if more and free > 0:
                    try:
                        deliveries = await self._claim(channel.name, free)
                    except Exception as exc:  # the database: let the attempts in flight finish and record
                        log.warning("claiming %s deliveries failed (%s); trying again at the next pass",
                                    channel.name, type(exc).__name__)
                        deliveries = []
                    more = len(deliveries) == free
                    in_flight.update(asyncio.create_task(self._attempt(channel, d)) for d in deliveries)
                if not in_flight:
                    return done
                finished, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                done += sum(task.result() for task in finished)
        finally:
            await cancel_and_wait(keeper, *in_flight)

    async def _claim(self, channel: str, limit: int) -> list[NotificationDelivery]:
        """Take up to ``limit`` due deliveries of ``channel`` whose lease is free (never
        held, given back, or passed: its worker died) for one attempt each."""
        now = self.clock.utcnow().timestamp()
        async with self.sessions() as session, session.begin():
            ids = (await session.execute(
                select(NotificationDelivery.id).where(
                    NotificationDelivery.channel == channel, NotificationDelivery.done_at.is_(None),
                    NotificationDelivery.due_at <= now, NotificationDelivery.lease_until < now)
                .order_by(NotificationDelivery.due_at, NotificationDelivery.id).limit(limit)
                .with_for_update(skip_locked=True))).scalars().all()
            if not ids:
                return []
            await session.execute(
                update(NotificationDelivery).where(NotificationDelivery.id.in_(ids),
                                                   NotificationDelivery.lease_until < now)
                .values(lease_owner=self.worker, lease_until=now + self.lease_seconds,
                        attempts=NotificationDelivery.attempts + 1))
            claimed = (await session.execute(select(NotificationDelivery).where(
                NotificationDelivery.id.in_(ids), NotificationDelivery.lease_owner == self.worker)
                .order_by(NotificationDelivery.id))).scalars().all()
            session.expunge_all()
        return list(claimed)

    def _keep_leases(self, channel: str) -> asyncio.Task[None]:
        """Renew this worker's leases on ``channel`` every third of a lease, while its
        attempts run (each is shorter than half a lease anyway: this covers a slow
        database when recording the outcome).  A beat that fails is one log line;
        the next tries again, and the lease has two more."""

        async def renew() -> None:
            async with self.sessions() as session, session.begin():
                await session.execute(update(NotificationDelivery).where(
                    NotificationDelivery.channel == channel, NotificationDelivery.lease_owner == self.worker,
                    NotificationDelivery.done_at.is_(None)).values(
                    lease_until=self.clock.utcnow().timestamp() + self.lease_seconds))

        def failed(exc: Exception) -> bool:
            log.warning("renewing the %s delivery leases failed (%s)", channel, type(exc).__name__)
            return True

        return every(self.lease_seconds / 3, renew, name=f"notification-leases-{channel}", reported=failed,
                     clock=self.clock, wait_first=True)

    async def _attempt(self, channel: Channel, delivery: NotificationDelivery) -> int:
        """One attempt, cut off after the channel's timeout; its outcome recorded only
        if this worker still holds the lease.  1 when the delivery is done."""
        error: str | None = None
        items: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(channel.timeout):
                person, items = await self._contents(delivery)
                if items:
                    key = f"{delivery.id}.{delivery.created_at:%Y%m%d%H%M%S}"
                    await channel.deliver(person, items, delivery.digest, key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = type(exc).__name__
        now = self.clock.utcnow()
        values: dict[str, Any] = {"lease_owner": None, "lease_until": 0.0, "last_error": error}
        if error is None:
            values.update(done_at=now, outcome="sent" if items else "nothing")
        elif now.timestamp() - delivery.created_at.timestamp() >= GIVE_UP_AFTER_SECONDS:
            values.update(done_at=now, outcome="failed")
            log.error("%s to person %s given up after %d attempts: %s", channel.name, delivery.person_id,
                      delivery.attempts, error)
        else:
            delay = retry_delay(delivery.attempts)
            values.update(due_at=now.timestamp() + delay)
            log.warning("%s to person %s failed (attempt %d, next in %g s): %s", channel.name, delivery.person_id,
                        delivery.attempts, delay, error)
        # Recorded only while this worker still owns the row: a claim always writes its
        # owner, so "owner = me" means no one has taken it over.  (Also requiring
        # "lease_until > now" would only add copies: an attempt that ended after its
        # lease lapsed, with no one having taken it, would then be made again.)
        try:
            async with self.sessions() as session, session.begin():
                result = await session.execute(update(NotificationDelivery).where(
                    NotificationDelivery.id == delivery.id, NotificationDelivery.lease_owner == self.worker)
                    .values(**values))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one line: the database is down, and every attempt would say so
            log.warning("recording a %s delivery to person %s failed (%s); it is attempted again after its lease",
                        channel.name, delivery.person_id, type(exc).__name__)
            return 0
        if result.rowcount != 1:
            # Only if this worker stalled for longer than the lease less the timeout.
            log.warning("%s delivery %s: another worker took it over during the attempt", channel.name, delivery.id)
            return 0
        return 1 if "done_at" in values else 0

    async def _contents(self, delivery: NotificationDelivery) -> tuple[Recipient, list[dict[str, Any]]]:
        """Who, and the digest's notifications they have not read meanwhile, rendered
        in their language."""
        async with self.sessions() as session:
            person = await session.get(Person, delivery.person_id)
            rows = (await session.execute(select(Notification).where(
                Notification.id.in_(orjson.loads(delivery.notification_ids)), Notification.read_at.is_(None))
                .order_by(Notification.id))).scalars().all()
        recipient = Recipient(person.id, person.name, person.email, person.language)
        return recipient, [self.render(n, person.language) for n in rows]
