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

The clock is injectable (``clock``) so tests move time without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Sequence

import orjson
from sqlalchemy import Boolean, Float, Text, and_, bindparam, exists, func, insert, literal, null, or_, select, update

from chat.clock import utcnow
from chat.config import Settings, check_notification_lease
from chat.errors import BadRequest, NotFound
from chat.frames import dumps, timestamp
from chat.i18n import notification_text
from chat.mail import Channel, EmailChannel, Recipient, WebhookChannel, create_mailer
from chat.policies import working_hours
from chat.policies.facts import SCHOOL_STAFF, Role
from chat.storage.models import Notification, NotificationDelivery, NotificationPreference, Person, School, Student
from chat.tasks import cancel_and_wait

if TYPE_CHECKING:
    from chat.service import Actor, ChatService

log = logging.getLogger("chat.notifications")

KINDS = ("message", "added", "announcement", "reaction", "transport", "observation", "absence")
# Ten minutes: long enough that someone reading the app is not e-mailed too,
# short enough that a parent away from the app learns of a teacher's answer the same hour.
EMAIL_AFTER_SECONDS = 600
# The release pass runs this often; a held digest goes out within a minute of 08:00.
# Each channel's send task also looks this often for deliveries another worker
# released or whose retry came due.
RELEASE_INTERVAL_SECONDS = 30.0
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
# Bound on the release cache (it is cleared when full).
CACHE_ENTRIES = 10_000
# A school's hours and closed days are re-read at most this often (as its
# feature switches are): a directory reload applies within half a minute.
CALENDAR_CACHE_SECONDS = 30.0
# One release pass handles at most this many rows (the rest in the next pass).
RELEASE_BATCH = 5000
PAGE_DEFAULT, PAGE_MAX = 30, 100
STAFF_ROLES = {r.value for r in SCHOOL_STAFF}

# Built once: statement construction costs more than running these small look-ups.
_PEOPLE = select(Person.id, Person.role, Person.working_hours).where(
    Person.id.in_(bindparam("ids", expanding=True)))
_SWITCHED_OFF = select(
    NotificationPreference.person_id, NotificationPreference.child_id, NotificationPreference.kind).where(
    NotificationPreference.person_id.in_(bindparam("ids", expanding=True)),
    NotificationPreference.kind.in_(bindparam("kinds", expanding=True)),
    NotificationPreference.enabled == False)  # noqa: E712
_INSERT = Notification.__table__.insert()
_CALENDAR = select(School.working_hours, School.timezone, School.closed_days).where(
    School.id == bindparam("school"))


def guardians_insert(pairs):
    """The ``INSERT … SELECT`` :meth:`Notifier.add_guardians` runs, for ``pairs`` —
    a SELECT of (guardian id, child id) whose values are bound parameters — built
    once by the caller (building it costs more than running it for a class).
    The notification's own values are the parameters ``n_kind``, ``n_code``,
    ``n_fields``, ``n_link``, ``n_urgent`` and ``n_now``."""
    pairs = pairs.subquery()
    person, child = pairs.c[0], pairs.c[1]
    p, n = NotificationPreference.__table__, Notification.__table__.c
    kind = bindparam("n_kind", type_=n.kind.type)
    off = exists().where(p.c.person_id == person, p.c.child_id.in_([child, 0]), p.c.kind == kind,
                         p.c.enabled == False)  # noqa: E712
    now = bindparam("n_now", type_=n.created_at.type)
    body = select(
        person, child, kind, bindparam("n_code", type_=n.code.type), bindparam("n_fields", type_=Text()),
        bindparam("n_link", type_=Text()), null(), bindparam("n_urgent", type_=Boolean()), now, now,
        literal(False, Boolean()), now, null(), literal(0.0, Float())).where(~off)
    return insert(Notification.__table__).from_select(
        ["person_id", "child_id", "kind", "code", "fields", "link", "conversation_id", "urgent", "created_at",
         "deliver_at", "held", "delivered_at", "lease_owner", "lease_until"], body)


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

    def __init__(self, notifier: "Notifier") -> None:
        self.notifier = notifier

    async def deliver(self, person: Recipient, items: list[dict[str, Any]], digest: bool, key: str) -> None:
        frame = {"type": "notification.digest", "digest_id": key, "notifications": items,
                 "unread": await self.notifier.unread_count(person.id)}
        await self.notifier.service.hub.publish_person(person.id, "frame", dumps(frame))


@dataclass
class Pending:
    """A notification to create: who, what kind, about which child, what it says."""

    person_id: int
    kind: str
    code: str
    fields: dict[str, Any]
    link: dict[str, Any]
    school_id: int | None = None
    child_id: int | None = None
    conversation_id: int | None = None
    urgent: bool = False


@dataclass
class _Calendar:
    schedule: working_hours.Schedule
    timezone: str
    closed: frozenset[date] = field(default_factory=frozenset)
    key: tuple = ()  # the school's raw settings: equal keys, equal calendars


def _closed_days(raw: str | None) -> frozenset[date]:
    days: set[date] = set()
    for item in orjson.loads(raw or "[]"):
        if isinstance(item, str):
            days.add(date.fromisoformat(item))
        else:
            start, end = date.fromisoformat(item[0]), date.fromisoformat(item[1])
            while start <= end:
                days.add(start)
                start += timedelta(days=1)
    return frozenset(days)


class Notifier:
    def __init__(self, service: "ChatService", settings: Settings, clock: Callable[[], datetime] = utcnow,
                 channels: Sequence[Channel] | None = None) -> None:
        self.service = service
        self.sessions = service.sessions
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
        self.frame = FrameChannel(self)
        self.lease_seconds = settings.notify_lease_seconds
        self.concurrency = settings.notify_concurrency
        check_notification_lease(self.lease_seconds, tuple(c.timeout for c in (self.frame, *self.channels)))
        self._wake = {c.name: asyncio.Event() for c in (self.frame, *self.channels)}
        self._holidays: dict[int, frozenset[date]] = {}
        # Parsed school calendars (school id -> read at, calendar), and release
        # answers by (calendar, personal hours) with the span of time they hold for.
        self._calendars: dict[int, tuple[float, _Calendar]] = {}
        self._releases: dict[tuple, tuple[datetime, datetime, datetime | None]] = {}
        self._tasks: list[asyncio.Task] = []

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """The release pass, and one send task per channel (so that a channel that
        hangs holds up no other)."""
        self.holidays(self.clock().year)  # the holidays library loads its tables on first use (~0.5 s)
        self._tasks = [asyncio.create_task(self._release_forever(), name="notification-release")] + [
            asyncio.create_task(self._send_forever(channel), name=f"notification-send-{channel.name}")
            for channel in (self.frame, *self.channels)]

    async def stop(self) -> None:
        """Stop the passes.  An attempt cut short keeps its lease: another worker
        (or this one after a restart) attempts it again once the lease has passed."""
        await cancel_and_wait(*self._tasks)

    async def _release_forever(self) -> None:
        while True:
            try:
                if await self.release_due() + await self.email_unread():
                    for wake in self._wake.values():
                        wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self.service.database.outage(exc):  # an outage is logged once (chat.storage.health)
                    log.exception("notification pass failed; retrying at the next one")
            await asyncio.sleep(RELEASE_INTERVAL_SECONDS)

    async def _send_forever(self, channel: Channel) -> None:
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

    # -- creating (inside the caller's transaction) -------------------------------------------------
    def holidays(self, year: int) -> frozenset[date]:
        if year not in self._holidays:
            self._holidays[year] = frozenset(working_hours.quebec_holidays([year, year + 1]))
        return self._holidays[year]

    async def _calendar(self, session, school_id: int) -> _Calendar:
        """The school's calendar, re-read at most every CALENDAR_CACHE_SECONDS (a
        directory reload changing hours or closed days applies within that)."""
        at = time.monotonic()
        cached = self._calendars.get(school_id)
        if cached is not None and at - cached[0] < CALENDAR_CACHE_SECONDS:
            return cached[1]
        hours, timezone, closed = (await session.execute(_CALENDAR, {"school": school_id})).one()
        key = (hours, timezone, closed)
        if cached is not None and cached[1].key == key:
            calendar = cached[1]  # unchanged: keep the parsed one (and the release answers keyed by it)
        else:
            calendar = _Calendar(working_hours.parse_schedule(orjson.loads(hours or "{}")), timezone,
                                 _closed_days(closed), key)
        self._calendars[school_id] = (at, calendar)
        return calendar

    def _release(self, calendar: _Calendar, now: datetime, personal: str | None) -> datetime:
        """:meth:`_compute_release`, reused while its answer holds: every message to a
        teacher needs it, and the answer only changes at the edges of working time."""
        key = (calendar.key, personal)
        cached = self._releases.get(key)
        if cached is not None:
            since, until, release = cached
            if since <= now < until:
                return now if release is None else release
        release, until = self._compute_release(calendar, now, personal)
        if len(self._releases) > CACHE_ENTRIES:
            self._releases.clear()
        if until > now:
            self._releases[key] = (now, until, None if release == now else release)
        return release

    def _compute_release(self, calendar: _Calendar, now: datetime, personal: str | None) -> tuple[datetime, datetime]:
        """When this staff member may be notified, and until when that answer holds
        (:func:`working_hours.release_window`).  A schedule with no working time
        at all (a misconfiguration) cannot hold a notification forever: personal
        hours that never meet the school's fall back to the school's, and a school
        with no hours at all notifies at once — both logged."""
        holidays = self.holidays(now.year)
        own = working_hours.parse_schedule(orjson.loads(personal)) if personal else None
        try:
            return working_hours.release_window(calendar.schedule, now, calendar.timezone, holidays,
                                                calendar.closed, own)
        except ValueError:
            if own is not None:
                log.warning("personal working hours never meet the school's; using the school's")
                return self._compute_release(calendar, now, None)
            log.warning("a school has no working hours at all; notifying staff at once")
            return now, now

    async def add(self, session, pending: Sequence[Pending],
                  people: dict[int, tuple[str, str | None]] | None = None) -> int:
        """Create the notifications (R17 filters, R15 holds) in the caller's transaction.

        ``people`` (person id -> role, working hours), when the caller read them
        already in its transaction, saves reading them again.  Many guardians at
        once (an announcement) go through :meth:`add_guardians` instead.
        """
        if not pending:
            return 0
        now = self.clock()
        person_ids = list({p.person_id for p in pending})
        if people is None:
            people = {pid: (role, hours) for pid, role, hours in (await session.execute(
                _PEOPLE, {"ids": person_ids})).all()}
        off = {(pid, child, kind) for pid, child, kind in (await session.execute(
            _SWITCHED_OFF, {"ids": person_ids, "kinds": list({p.kind for p in pending})})).all()}
        rows = []
        encoded: dict[int, str] = {}  # fields/link shared by many rows are encoded once
        for p in pending:
            if (p.person_id, p.child_id or 0, p.kind) in off or (p.person_id, 0, p.kind) in off:
                continue  # R17: switched off (for this child, or for all): no feed entry, no e-mail
            role, personal = people.get(p.person_id, (None, None))
            deliver_at, held = now, False
            if role in STAFF_ROLES and p.school_id is not None:
                # R15: staff are never notified outside their working hours, urgent or not.
                release = self._release(await self._calendar(session, p.school_id), now, personal)
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
            await session.execute(_INSERT, rows)  # Core executemany
        return len(rows)

    async def add_guardians(self, session, statement, params: dict[str, Any], *, kind: str, code: str,
                            fields: dict[str, Any], link: dict[str, Any], urgent: bool = False) -> None:
        """One notification per (guardian, child) row of the pairs ``statement`` was
        built from (:func:`guardians_insert`), as one ``INSERT … SELECT`` in the
        caller's transaction — an announcement to a whole school.  ``params`` are
        the pairs' own parameters.  The rows :meth:`add` would make for guardians,
        who are never held (R15 is for staff); R17's switched-off (person, child,
        kind) and (person, 0, kind) are left out in SQL."""
        now = self.clock()
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
        now = self.clock()
        # Earliest due first, in the order of the partial index of held rows (by id,
        # SQLite would rather walk the whole table in id order).
        return await self._queue(and_(Notification.delivered_at.is_(None), Notification.deliver_at <= now),
                                 (Notification.deliver_at, Notification.id), now, digest=True)

    async def email_unread(self) -> int:
        """Queue what stayed unread (urgent ones at once) for e-mail, one digest per
        person (delivery rows for the e-mail and the push).  Returns how many."""
        now = self.clock()
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
        channels = [channel] if channel is not None else [self.frame, *self.channels]
        return sum(await asyncio.gather(*(self._drain(c) for c in channels)))

    async def _drain(self, channel: Channel) -> int:
        done = 0
        in_flight: set[asyncio.Task] = set()
        keeper = asyncio.create_task(self._keep_leases(channel.name))
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
        now = self.clock().timestamp()
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

    async def _keep_leases(self, channel: str) -> None:
        """Renew this worker's leases on ``channel`` every third of a lease, while its
        attempts run (each is shorter than half a lease anyway: this covers a slow
        database when recording the outcome)."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                async with self.sessions() as session, session.begin():
                    await session.execute(update(NotificationDelivery).where(
                        NotificationDelivery.channel == channel, NotificationDelivery.lease_owner == self.worker,
                        NotificationDelivery.done_at.is_(None)).values(
                        lease_until=self.clock().timestamp() + self.lease_seconds))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next beat tries again; the lease has two more
                log.warning("renewing the %s delivery leases failed (%s)", channel, type(exc).__name__)

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
        now = self.clock()
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

    # -- reading (R16) and preferences (R17) ---------------------------------------------------------
    @staticmethod
    def render(n: Notification, language: str | None = None) -> dict[str, Any]:
        fields = orjson.loads(n.fields)
        return {
            "id": n.id, "kind": n.kind, "child_id": n.child_id, "link": orjson.loads(n.link),
            "text": {"fr": notification_text(n.code, "fr", fields), "en": notification_text(n.code, "en", fields)},
            "created_at": timestamp(n.created_at), "delivered_at": timestamp(n.delivered_at),
            "held": n.held, "urgent": n.urgent, "read": n.read_at is not None,
        }

    async def unread_count(self, person_id: int, child_id: int | None = None) -> int:
        async with self.sessions() as session:
            query = select(func.count()).select_from(Notification).where(
                Notification.person_id == person_id, Notification.delivered_at.is_not(None),
                Notification.read_at.is_(None))
            if child_id is not None:
                query = query.where(Notification.child_id == child_id)
            return (await session.execute(query)).scalar_one()

    async def feed(self, actor: "Actor", child_id: int | None = None, before: int | None = None,
                   limit: int = PAGE_DEFAULT) -> dict[str, Any]:
        """R16: newest first, per person and optionally per child; held ones appear once released."""
        if not 1 <= limit <= PAGE_MAX:
            raise BadRequest("request.invalid", detail=f"limit must be 1–{PAGE_MAX}")
        async with self.sessions() as session:
            query = select(Notification).where(Notification.person_id == actor.id,
                                               Notification.delivered_at.is_not(None))
            if child_id is not None:
                query = query.where(Notification.child_id == child_id)
            if before is not None:
                query = query.where(Notification.id < before)
            rows = (await session.execute(query.order_by(Notification.id.desc()).limit(limit))).scalars().all()
        return {"notifications": [self.render(n) for n in rows],
                "unread": await self.unread_count(actor.id, child_id)}

    async def open(self, actor: "Actor", notification_id: int) -> dict[str, Any]:
        """R16: opening one shows its details and marks it read."""
        async with self.sessions() as session, session.begin():
            n = await session.get(Notification, notification_id)
            if n is None or n.person_id != actor.id or n.delivered_at is None:
                raise NotFound("notification.not_found", notification_id=notification_id)
            if n.read_at is None:
                n.read_at = self.clock()
            view = self.render(n)
            if n.child_id:
                child = await session.get(Student, n.child_id)
                view["child"] = {"id": child.id, "name": f"{child.first_name} {child.last_name}"}
        return view

    async def mark_all_read(self, actor: "Actor", child_id: int | None = None) -> dict[str, Any]:
        async with self.sessions() as session, session.begin():
            query = update(Notification).where(Notification.person_id == actor.id, Notification.read_at.is_(None),
                                               Notification.delivered_at.is_not(None))
            if child_id is not None:
                query = query.where(Notification.child_id == child_id)
            result = await session.execute(query.values(read_at=self.clock()))
        return {"marked": result.rowcount, "unread": await self.unread_count(actor.id)}

    async def read_conversation(self, session, person_id: int, conversation_id: int) -> None:
        """Reading a conversation reads its message notifications (no e-mail for them)."""
        await session.execute(update(Notification).where(
            Notification.person_id == person_id, Notification.conversation_id == conversation_id,
            Notification.read_at.is_(None)).values(read_at=self.clock()))

    async def preferences(self, actor: "Actor") -> dict[str, Any]:
        """R17: every kind is on by default, for every child; the rows are the exceptions."""
        async with self.sessions() as session:
            rows = (await session.execute(select(NotificationPreference).where(
                NotificationPreference.person_id == actor.id))).scalars().all()
        return {"kinds": list(KINDS), "default": True,
                "preferences": [{"child_id": r.child_id or None, "kind": r.kind, "enabled": r.enabled} for r in rows]}

    async def set_preference(self, actor: "Actor", child_id: int | None, kind: str, enabled: bool) -> dict[str, Any]:
        if kind not in KINDS:
            raise BadRequest("notification.unknown_kind", kind=kind[:32], kinds=", ".join(KINDS))
        async with self.sessions() as session, session.begin():
            if child_id is not None and actor.role == Role.PARENT.value:
                facts = (await self.service._people(session, [actor.id]))[0]
                if child_id not in facts.child_ids:
                    raise NotFound("child.not_found", child_id=child_id)
            row = await session.get(NotificationPreference, (actor.id, child_id or 0, kind))
            if row is None:
                session.add(NotificationPreference(person_id=actor.id, child_id=child_id or 0, kind=kind,
                                                   enabled=enabled))
            else:
                row.enabled = enabled
        return {"child_id": child_id, "kind": kind, "enabled": enabled}
