"""R15: when a notification to a staff member may go out.

Staff are never notified outside their working hours: a notification created
then is held until :func:`chat.policies.working_hours.release_time` of the
school's schedule, Quebec's statutory holidays, the school's closed days and the
person's own hours.  :class:`HoldingCalendars` reads and caches what that
decision needs (school calendars, holiday tables) and reuses each answer for as
long as it holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import orjson
from sqlalchemy import bindparam, select

from chat.clock import SYSTEM, Clock
from chat.policies import working_hours
from chat.storage.models import School

log = logging.getLogger("chat.notifications")

# Bound on the release cache (it is cleared when full).
CACHE_ENTRIES = 10_000
# A school's hours and closed days are re-read at most this often (as its
# feature switches are): a directory reload applies within half a minute.
CALENDAR_CACHE_SECONDS = 30.0

_CALENDAR = select(School.working_hours, School.timezone, School.closed_days).where(
    School.id == bindparam("school"))


@dataclass
class Calendar:
    """A school's working time: its weekly schedule, time zone and closed days."""

    schedule: working_hours.Schedule
    timezone: str
    closed: frozenset[date] = field(default_factory=frozenset)
    key: tuple = ()  # the school's raw settings: equal keys, equal calendars


def closed_days(raw: str | None) -> frozenset[date]:
    """The days a school's ``closed_days`` JSON names (single days and inclusive ranges)."""
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


class HoldingCalendars:
    """The R15 release decision with its caches.  ``clock.monotonic`` ages the
    cached calendars."""

    def __init__(self, *, clock: Clock = SYSTEM) -> None:
        self.clock = clock
        self._holidays: dict[int, frozenset[date]] = {}
        # Parsed school calendars (school id -> read at, calendar), and release
        # answers by (calendar, personal hours) with the span of time they hold for.
        self._calendars: dict[int, tuple[float, Calendar]] = {}
        self._releases: dict[tuple, tuple[datetime, datetime, datetime | None]] = {}

    def holidays(self, year: int) -> frozenset[date]:
        if year not in self._holidays:
            self._holidays[year] = frozenset(working_hours.quebec_holidays([year, year + 1]))
        return self._holidays[year]

    async def calendar(self, session, school_id: int) -> Calendar:
        """The school's calendar, re-read at most every CALENDAR_CACHE_SECONDS (a
        directory reload changing hours or closed days applies within that)."""
        at = self.clock.monotonic()
        cached = self._calendars.get(school_id)
        if cached is not None and at - cached[0] < CALENDAR_CACHE_SECONDS:
            return cached[1]
        hours, timezone, closed = (await session.execute(_CALENDAR, {"school": school_id})).one()
        key = (hours, timezone, closed)
        if cached is not None and cached[1].key == key:
            calendar = cached[1]  # unchanged: keep the parsed one (and the release answers keyed by it)
        else:
            calendar = Calendar(working_hours.parse_schedule(orjson.loads(hours or "{}")), timezone,
                                closed_days(closed), key)
        self._calendars[school_id] = (at, calendar)
        return calendar

    def release(self, calendar: Calendar, now: datetime, personal: str | None) -> datetime:
        """:meth:`compute_release`, reused while its answer holds: every message to a
        teacher needs it, and the answer only changes at the edges of working time."""
        key = (calendar.key, personal)
        cached = self._releases.get(key)
        if cached is not None:
            since, until, release = cached
            if since <= now < until:
                return now if release is None else release
        release, until = self.compute_release(calendar, now, personal)
        if len(self._releases) > CACHE_ENTRIES:
            self._releases.clear()
        if until > now:
            self._releases[key] = (now, until, None if release == now else release)
        return release

    def compute_release(self, calendar: Calendar, now: datetime, personal: str | None) -> tuple[datetime, datetime]:
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
                return self.compute_release(calendar, now, None)
            log.warning("a school has no working hours at all; notifying staff at once")
            return now, now
