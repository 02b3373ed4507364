"""Notifications (R15–R17): created with the event, held for staff outside their
working hours, released as one digest, shown in a feed per person and child.

* Creation happens in the same transaction as the event that causes it (a
  message, an addition, an announcement, a reaction, an integration notice),
  so a committed event never lacks its notifications and a held notification
  is in the database before anyone is told anything.
* R17: a switched-off (person, child, kind) creates no row at all — no bell,
  no e-mail.
* R15: for staff, ``deliver_at`` is :func:`chat.policies.working_hours.release_time`
  of the school's schedule, Quebec's statutory holidays, the school's closed
  days and the person's own hours.  Messages themselves are always delivered
  live; only the notification waits.
* Release: a background pass releases due rows in **one transaction**: it
  locks them (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite has one writer),
  marks them delivered and writes, per person, one :class:`NotificationDelivery`
  row for each channel (the ``notification.digest`` frame, the e-mail, the
  push).  With several workers each notification is released once, into one
  digest; a worker that dies mid-release released nothing, and the next pass of
  any worker releases it all.  Held rows survive restarts: the first pass after
  start-up releases whatever came due meanwhile.
* Sending: each channel has its own task, which attempts due delivery rows,
  ``concurrency`` at a time, each attempt under a lease on its row and cut off
  after the channel's timeout (at most half the lease), so a slow channel or
  person holds up nothing else.  A failed attempt is retried from the database
  with backoff (:func:`retry_delay`), a success is marked done only by the worker
  still holding the lease.  That is *at least once* per digest and channel, with
  one send in practice: a second can only follow a crash (or a lost database)
  between the channel's answer and its record, and carries the same key.
* Notifications delivered at once (parents, staff at work) ping through the
  live event itself (the message, the announcement); if still unread after
  ``EMAIL_AFTER_SECONDS`` they are queued for e-mail (and push) in one
  transaction the same way, one digest per person (urgent ones at once).

The clock is injectable (``clock``, a :class:`chat.clock.Clock`) so tests move
time without sleeping.  The parts live beside this module: ``holding`` (R15),
``creating`` (:class:`Pending`, statements), ``delivery`` (channels, leases),
``feed`` (R16–R17).
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any, Awaitable, Callable, Sequence

from sqlalchemy import and_, insert, or_, select, update

from chat.clock import SYSTEM, Clock
from chat.config import Settings, check_notification_lease
from chat.frames import dumps
from chat.mail import Channel, EmailChannel, WebhookChannel, create_mailer
from chat.notifications.creating import INSERT_NOTIFICATIONS, ROLES_AND_HOURS, SWITCHED_OFF, Pending
from chat.notifications.delivery import Deliveries, FrameChannel
from chat.notifications.feed import PAGE_DEFAULT, Feed
from chat.notifications.holding import HoldingCalendars
from chat.policies.facts import SCHOOL_STAFF, Caller, PersonFacts
from chat.storage.health import DatabaseHealth
from chat.storage.models import Notification, NotificationDelivery
from chat.tasks import cancel_and_wait, every

log = logging.getLogger("chat.notifications")

# Ten minutes: long enough that someone reading the app is not e-mailed too,
# short enough that a parent away from the app learns of a teacher's answer the same hour.
EMAIL_AFTER_SECONDS = 600
# The release pass runs this often; a held digest goes out within a minute of 08:00.
# Each channel's send task also looks this often for deliveries another worker
# released or whose retry came due.
RELEASE_INTERVAL_SECONDS = 30.0
# One release pass handles at most this many rows (the rest in the next pass).
RELEASE_BATCH = 5000
STAFF_ROLES = {r.value for r in SCHOOL_STAFF}


class Notifier:
    """Creates, holds (R15), releases and sends notifications; the feed (R16–R17).

    Its collaborators: ``sessions`` (ORM sessions), ``hub`` (the digest frame on
    the person channel), ``people`` (a person's facts, for per-child
    preferences), ``database`` (outages logged once), ``settings`` (the channels,
    leases and concurrency), ``clock`` and ``channels`` (the external channels;
    by default the e-mail, and the push gateway when configured).
    """

    def __init__(self, *, sessions: Callable[[], Any], hub: Any,
                 people: Callable[[Any, Sequence[int]], Awaitable[list[PersonFacts]]], database: DatabaseHealth,
                 settings: Settings, clock: Clock = SYSTEM, channels: Sequence[Channel] | None = None) -> None:
        self.sessions = sessions
        self.database = database
        self.clock = clock
        self.worker = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if channels is None:
            channels = [EmailChannel(create_mailer(settings.smtp_url, settings.smtp_timeout_seconds),
                                     settings.mail_from, settings.app_url, settings.smtp_timeout_seconds)]
            if settings.notify_webhook_url:
                channels.append(WebhookChannel(settings.notify_webhook_url, settings.notify_webhook_timeout_seconds))
        # The external channels (an unread e-mail goes to these); a held digest also
        # goes to the frame.
        self.channels = list(channels)
        self.reading = Feed(sessions=sessions, people=people, clock=clock)
        self.frame = FrameChannel(hub=hub, unread_count=self.reading.unread_count)
        self.lease_seconds = settings.notify_lease_seconds
        self.concurrency = settings.notify_concurrency
        check_notification_lease(self.lease_seconds, tuple(c.timeout for c in (self.frame, *self.channels)))
        self.holding = HoldingCalendars(clock=clock)
        self.deliveries = Deliveries(sessions=sessions, frame=self.frame, channels=self.channels, worker=self.worker,
                                     lease_seconds=self.lease_seconds, concurrency=self.concurrency,
                                     render=self.reading.render, clock=clock)
        self._wake = {c.name: asyncio.Event() for c in (self.frame, *self.channels)}
        self._tasks: list[asyncio.Task] = []

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """The release pass, and one send task per channel (so that a channel that
        hangs holds up no other)."""
        self.holidays(self.clock.utcnow().year)  # the holidays library loads its tables on first use (~0.5 s)
        release = every(RELEASE_INTERVAL_SECONDS, self._release_pass, name="notification pass",
                        reported=self.database.outage, clock=self.clock)
        self._tasks = [release] + [
            asyncio.create_task(self._send_forever(channel), name=f"notification-send-{channel.name}")
            for channel in (self.frame, *self.channels)]

    async def stop(self) -> None:
        """Stop the passes.  An attempt cut short keeps its lease: another worker
        (or this one after a restart) attempts it again once the lease has passed."""
        await cancel_and_wait(*self._tasks)

    async def _release_pass(self) -> None:
        """Release what came due and queue what stayed unread; wake the send tasks
        if anything was (an outage is logged once, by chat.storage.health)."""
        if await self.release_due() + await self.email_unread():
            for wake in self._wake.values():
                wake.set()

    async def _send_forever(self, channel: Channel) -> None:
        """Send the channel's due deliveries whenever the release pass wakes it, and
        at least every RELEASE_INTERVAL_SECONDS (not :func:`chat.tasks.every`: a
        wake-up must not wait for the interval)."""
        wake = self._wake[channel.name]
        while True:
            wake.clear()
            try:
                await self.send_due(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sending %s notifications failed; retrying at the next pass", channel.name)
            try:
                await asyncio.wait_for(wake.wait(), RELEASE_INTERVAL_SECONDS)
            except TimeoutError:
                pass

    def holidays(self, year: int) -> frozenset[date]:
        """Quebec's statutory holidays of ``year`` and the next (R15), loaded once."""
        return self.holding.holidays(year)

    # -- creating (inside the caller's transaction) -------------------------------------------------
    async def add(self, session, pending: Sequence[Pending],
                  people: dict[int, tuple[str, str | None]] | None = None) -> int:
        """Create the notifications (R17 filters, R15 holds) in the caller's transaction.

        ``people`` (person id -> role, working hours), when the caller read them
        already in its transaction, saves reading them again.  Many guardians at
        once (an announcement) go through :meth:`add_guardians` instead.
        """
        if not pending:
            return 0
        now = self.clock.utcnow()
        person_ids = list({p.person_id for p in pending})
        if people is None:
            people = {pid: (role, hours) for pid, role, hours in (await session.execute(
                ROLES_AND_HOURS, {"ids": person_ids})).all()}
        off = {(pid, child, kind) for pid, child, kind in (await session.execute(
            SWITCHED_OFF, {"ids": person_ids, "kinds": list({p.kind for p in pending})})).all()}
        rows = []
        encoded: dict[int, str] = {}  # fields/link shared by many rows are encoded once
        for p in pending:
            if (p.person_id, p.child_id or 0, p.kind) in off or (p.person_id, 0, p.kind) in off:
                continue  # R17: switched off (for this child, or for all): no feed entry, no e-mail
            role, personal = people.get(p.person_id, (None, None))
            deliver_at, held = now, False
            if role in STAFF_ROLES and p.school_id is not None:
                # R15: staff are never notified outside their working hours, urgent or not.
                release = self.holding.release(await self.holding.calendar(session, p.school_id), now, personal)
                if release > now:
                    deliver_at, held = release, True
            rows.append({
                "person_id": p.person_id, "child_id": p.child_id, "kind": p.kind, "code": p.code,
                "fields": encoded.get(id(p.fields)) or encoded.setdefault(id(p.fields), dumps(p.fields)),
                "link": encoded.get(id(p.link)) or encoded.setdefault(id(p.link), dumps(p.link)),
                "conversation_id": p.conversation_id,
                "urgent": p.urgent, "created_at": now, "deliver_at": deliver_at, "held": held,
                "delivered_at": None if held else now, "lease_owner": None, "lease_until": 0.0,
            })
        if rows:
            await session.execute(INSERT_NOTIFICATIONS, rows)  # Core executemany
        return len(rows)

    async def add_guardians(self, session, statement, params: dict[str, Any], *, kind: str, code: str,
                            fields: dict[str, Any], link: dict[str, Any], urgent: bool = False) -> None:
        """One notification per (guardian, child) row of the pairs ``statement`` was
        built from (:func:`guardians_insert`), as one ``INSERT … SELECT`` in the
        caller's transaction — an announcement to a whole school.  ``params`` are
        the pairs' own parameters.  The rows :meth:`add` would make for guardians,
        who are never held (R15 is for staff); R17's switched-off (person, child,
        kind) and (person, 0, kind) are left out in SQL."""
        now = self.clock.utcnow()
        await session.execute(statement, {**params, "n_kind": kind, "n_code": code, "n_fields": dumps(fields),
                                          "n_link": dumps(link), "n_urgent": bool(urgent), "n_now": now})

    # -- releasing (background, each row once, in one transaction) -----------------------------------
    async def _queue(self, condition, order, now: datetime, *, digest: bool) -> int:
        """Take up to RELEASE_BATCH rows matching ``condition`` (in ``order``, that of
        the partial index the condition matches) and, in the same transaction,
        mark them (delivered for a release, e-mailed for the unread pass) and write
        one delivery row per person and channel for those still unread.  Another
        worker's transaction skips the rows this one locked (PostgreSQL) or waits
        for it (SQLite's single writer) and then finds them marked, so each row is
        taken once; a crash before the commit takes nothing."""
        epoch = now.timestamp()
        async with self.sessions() as session, session.begin():
            rows = (await session.execute(
                select(Notification.id, Notification.person_id, Notification.read_at).where(condition)
                .order_by(*order).limit(RELEASE_BATCH).with_for_update(skip_locked=True))).all()
            if not rows:
                return 0
            unread: dict[int, list[int]] = defaultdict(list)
            for row in rows:
                if row.read_at is None:
                    unread[row.person_id].append(row.id)
            if digest:
                # Read meanwhile (the person opened the conversation): delivered, not announced again.
                await session.execute(update(Notification).where(Notification.id.in_([r.id for r in rows]))
                                      .values(delivered_at=now))
            # E-mailed = in a digest whose e-mail is queued: the unread pass leaves it alone.
            queued = [i for ids in unread.values() for i in ids]
            if queued:
                await session.execute(update(Notification).where(Notification.id.in_(queued)).values(emailed_at=now))
            channels = [self.frame, *self.channels] if digest else self.channels
            deliveries = [{"person_id": person_id, "channel": channel.name, "digest": digest,
                           "notification_ids": dumps(ids), "created_at": now, "due_at": epoch, "attempts": 0,
                           "lease_until": 0.0}
                          for person_id, ids in unread.items() for channel in channels]
            if deliveries:
                await session.execute(insert(NotificationDelivery), deliveries)
        return len(rows)

    async def release_due(self) -> int:
        """R15: release held notifications whose working time has come, as one digest
        per person (a frame, an e-mail, a push: delivery rows that :meth:`send_due`
        sends).  Returns how many were released."""
        now = self.clock.utcnow()
        # Earliest due first, in the order of the partial index of held rows (by id,
        # SQLite would rather walk the whole table in id order).
        return await self._queue(and_(Notification.delivered_at.is_(None), Notification.deliver_at <= now),
                                 (Notification.deliver_at, Notification.id), now, digest=True)

    async def email_unread(self) -> int:
        """Queue what stayed unread (urgent ones at once) for e-mail, one digest per
        person (delivery rows for the e-mail and the push).  Returns how many."""
        now = self.clock.utcnow()
        cutoff = now - timedelta(seconds=EMAIL_AFTER_SECONDS)
        # Oldest first, in the order of the partial index of unread, un-e-mailed rows.
        return await self._queue(and_(
            Notification.delivered_at.is_not(None), Notification.read_at.is_(None), Notification.emailed_at.is_(None),
            or_(Notification.delivered_at <= cutoff, Notification.urgent == True)),  # noqa: E712
            (Notification.delivered_at, Notification.id), now, digest=False)

    # -- sending (background, per channel, each attempt under a lease) -------------------------------
    async def send_due(self, channel: Channel | None = None) -> int:
        """Attempt every delivery due now on ``channel`` (every channel at once when
        None), ``concurrency`` at a time per channel; returns how many were done
        (sent, nothing left to send, or given up).  Failed ones wait for their retry."""
        return await self.deliveries.send_due(channel)

    # -- reading (R16) and preferences (R17): chat.notifications.feed ------------------------------
    async def unread_count(self, person_id: int, child_id: int | None = None) -> int:
        return await self.reading.unread_count(person_id, child_id)

    async def feed(self, actor: Caller, child_id: int | None = None, before: int | None = None,
                   limit: int = PAGE_DEFAULT) -> dict[str, Any]:
        """R16: newest first, per person and optionally per child."""
        return await self.reading.feed(actor, child_id, before, limit)

    async def open(self, actor: Caller, notification_id: int) -> dict[str, Any]:
        """R16: opening one shows its details and marks it read."""
        return await self.reading.open(actor, notification_id)

    async def mark_all_read(self, actor: Caller, child_id: int | None = None) -> dict[str, Any]:
        return await self.reading.mark_all_read(actor, child_id)

    async def read_conversation(self, session, person_id: int, conversation_id: int) -> None:
        """Reading a conversation reads its message notifications (no e-mail for them)."""
        await self.reading.read_conversation(session, person_id, conversation_id)

    async def preferences(self, actor: Caller) -> dict[str, Any]:
        """R17: every kind is on by default, for every child; the rows are the exceptions."""
        return await self.reading.preferences(actor)

    async def set_preference(self, actor: Caller, child_id: int | None, kind: str, enabled: bool) -> dict[str, Any]:
        return await self.reading.set_preference(actor, child_id, kind, enabled)
