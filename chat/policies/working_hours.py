"""When a notification to staff may go out (R15): now, or held until when.

R15: no notification reaches a staff member outside their working hours; it is
held and delivered when their working time starts again.  Weekends and Quebec
statutory holidays are outside working hours.  The seeds say it in French: « La
messagerie respectera les temps de travail du personnel : aucune notification
ne sera envoyée en dehors des heures prévues. »

The decision is :func:`release_time`, a pure function of the school's weekly
:class:`Schedule`, its holidays and closed days (pedagogical days, breaks), its
time zone, the staff member's own schedule if any, and ``now``.  It returns
``now`` itself when ``now`` is working time, otherwise the first instant (UTC)
at which working time starts again.  Nothing here reads the clock, the
database or the network.

Working time is the union, over local dates *d*, of the intervals the
schedule gives for *d*'s weekday, skipping every *d* that is a holiday or a
closed day; with a personal schedule, the intersection of that set with the
same set built from the personal schedule ("a staff member may have their own
hours within the school's").  Weekends are simply days without intervals.

Choices, each written down because a reader could expect the other one:

* **Midnight.**  An interval whose end is before or equal to its start
  (``["22:00", "06:00"]``, or ``["08:00", "08:00"]`` for 24 hours) crosses
  midnight and *belongs to the day it starts on*: if that day is a holiday
  the whole interval is closed, including its hours on the next day; if only
  the next day is a holiday, the hours after midnight stay open.  ``"24:00"``
  may end an interval (the next midnight) but never start one.
* **Wall clock and DST.**  Interval bounds are wall-clock times in the
  school's zone.  Each bound maps to *the first instant at which the wall
  clock reads that time or later*, which gives both rules of the brief at
  once: on the spring-forward day a time that does not exist (02:30 in
  America/Toronto) maps to the first instant after the gap (03:00 EDT); on
  the fall-back day an ambiguous time maps to its first occurrence (fold=0).
  Consequences: an interval lying entirely inside the skipped hour does not
  exist that day; ``["00:00", "01:30"]`` on the fall-back day ends at the first
  01:30 and does not cover the repeated 01:00–01:30; ``["01:00", "03:00"]``
  covers three real hours that night.
* **Result.**  Inside working time the very ``now`` object is returned (its
  zone untouched), so callers can test ``release_time(...) is now`` or
  compare; a held notification gets an aware UTC datetime, the form storage
  and schedulers want.
* **Bound.**  The search goes day by day up to :data:`MAX_SEARCH_DAYS`; a
  schedule with no working time at all (empty, or a personal schedule that
  never meets the school's) raises :class:`ValueError`: that is a broken
  configuration, not a notification to hold forever.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from holidays import country_holidays

from chat.errors import BadRequest

# The keys of the ``working_hours`` object, in ``date.weekday()`` order.
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Schools are in Quebec; chat.directory stores the same default zone.
DEFAULT_TIMEZONE = "America/Toronto"
# How far ahead release_time looks for working time.  A year of closures
# (a summer of closed days plus Christmas plus every weekend) still finds the
# first day back; 400 > 366 so any schedule that opens at least once a year
# is always answered.  Past that, the schedule is broken, not long.
MAX_SEARCH_DAYS = 400
# Split shifts have two or three intervals a day; 16 leaves room for any real
# timetable while bounding the work per day of search for a generated file.
MAX_INTERVALS_PER_DAY = 16

_MINUTES_PER_DAY = 24 * 60
# "HH:MM" with two digits each: what the directory format documents.
_TIME = re.compile(r"\A([0-9]{2}):([0-9]{2})\Z")

# (start, end): minutes after the local midnight of the day the interval starts on.
Interval = tuple[int, int]


@dataclass(frozen=True)
class Schedule:
    """A weekly timetable: ``days[w]`` holds the intervals of weekday ``w``
    (0 = Monday) as ``(start, end)`` minutes after that day's local midnight,
    sorted, with ``0 <= start < 1440`` and ``start < end <= start + 1440``
    (an ``end`` past 1440 crosses midnight).  Build it with
    :func:`parse_schedule`; overlapping intervals are allowed and simply join.
    """

    days: tuple[tuple[Interval, ...], ...]

    def __post_init__(self) -> None:
        if len(self.days) != 7:
            raise ValueError(f"a schedule has 7 days, got {len(self.days)}")
        for intervals in self.days:
            for start, end in intervals:
                if not (0 <= start < _MINUTES_PER_DAY and start < end <= start + _MINUTES_PER_DAY):
                    raise ValueError(f"bad interval ({start}, {end}) in minutes after midnight")

    @property
    def is_empty(self) -> bool:
        """True when no day has any interval: such a schedule never opens."""
        return not any(self.days)


def _invalid(where: str, problem: str) -> BadRequest:
    # Same code and fields as chat.directory's checks: the directory loader
    # reports schedule problems like any other problem in the file.
    return BadRequest("directory.invalid", where=where, problem=problem)


def _minutes(value: Any, where: str, *, is_end: bool) -> int:
    if not isinstance(value, str) or not (match := _TIME.match(value)):
        raise _invalid(where, f'expected a time "HH:MM", got {value!r}')
    hours, minutes = int(match[1]), int(match[2])
    if value == "24:00" and is_end:
        return _MINUTES_PER_DAY
    if hours > 23 or minutes > 59:
        allowed = '"00:00" to "23:59" or "24:00"' if is_end else '"00:00" to "23:59"'
        raise _invalid(where, f"expected a time from {allowed}, got {value!r}")
    return hours * 60 + minutes


def parse_schedule(raw: Any, where: str = "working_hours") -> Schedule:
    """Check and convert the ``working_hours`` JSON shape of the directory,
    ``{"mon": [["08:00", "16:00"]], …}``, into a :class:`Schedule`.  Missing
    days have no working time; an interval whose end is before or equal to its
    start crosses midnight; ``"24:00"`` may end an interval.  Raises
    ``BadRequest("directory.invalid", where=…, problem=…)`` at the first
    problem, ``where`` pointing into the object (``working_hours.mon[0][1]``).
    """
    if not isinstance(raw, dict):
        raise _invalid(where, f"expected an object of day → [[start, end], …], got {type(raw).__name__}")
    days: list[tuple[Interval, ...]] = [() for _ in DAYS]
    for day, intervals in raw.items():
        if day not in DAYS:
            raise _invalid(f"{where}.{day}", f"expected a day among {', '.join(DAYS)}, got {day!r}")
        if not isinstance(intervals, list):
            kind = type(intervals).__name__
            raise _invalid(f"{where}.{day}", f"expected a list of [start, end] intervals, got {kind}")
        if len(intervals) > MAX_INTERVALS_PER_DAY:
            raise _invalid(f"{where}.{day}", f"at most {MAX_INTERVALS_PER_DAY} intervals a day, got {len(intervals)}")
        parsed: list[Interval] = []
        for i, interval in enumerate(intervals):
            at = f"{where}.{day}[{i}]"
            if not isinstance(interval, list) or len(interval) != 2:
                raise _invalid(at, f'expected ["HH:MM", "HH:MM"], got {interval!r}')
            start = _minutes(interval[0], f"{at}[0]", is_end=False)
            end = _minutes(interval[1], f"{at}[1]", is_end=True)
            if end <= start:
                end += _MINUTES_PER_DAY  # crosses midnight into the next day
            parsed.append((start, end))
        days[DAYS.index(day)] = tuple(sorted(parsed))
    return Schedule(tuple(days))


def quebec_holidays(years: int | Iterable[int]) -> set[date]:
    """The Quebec statutory holidays (R15) of ``years``, from the ``holidays``
    library: New Year's Day, Good Friday, Patriots' Day, Fête nationale (June
    24), Canada Day, Labour Day, Thanksgiving and Christmas.  The law lets an
    employer give Easter Monday instead of Good Friday; that, and the school's
    own days off (pedagogical days, breaks), are closed days of the school,
    passed separately to :func:`release_time`."""
    years = [years] if isinstance(years, int) else list(years)
    return set(country_holidays("CA", subdiv="QC", years=years).keys())


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}")
    return now.astimezone(UTC)


def _first_instant_at(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) at which the wall clock of ``zone`` reads
    ``wall`` or later: the instant itself for a normal time, the first
    occurrence (fold=0) for an ambiguous one, and the end of the gap for a
    time skipped by a spring-forward transition."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # ``wall`` is in a gap.  PEP 495: fold=0 reads it with the offset before
    # the transition, fold=1 with the offset after; the transition lies
    # between the two readings.  Bisect (whole seconds: tz data transitions
    # fall on whole seconds) for the first instant whose wall time is >= wall.
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = sorted((int(first.timestamp()), int(second.timestamp())))
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _day_intervals(schedule: Schedule, day: date, zone: ZoneInfo,
                   closed: Collection[date]) -> list[tuple[datetime, datetime]]:
    """The working intervals (UTC, half-open) that start on local date ``day``."""
    if day in closed:
        return []  # R15: holidays and closed days, including the part past midnight
    midnight = datetime.combine(day, time())
    intervals: list[tuple[datetime, datetime]] = []
    for start, end in schedule.days[day.weekday()]:
        opens = _first_instant_at(midnight + timedelta(minutes=start), zone)
        closes = _first_instant_at(midnight + timedelta(minutes=end), zone)
        if opens < closes:  # an interval inside a spring-forward gap does not exist
            intervals.append((opens, closes))
    return intervals


def _union(intervals: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _intersection(left: list[tuple[datetime, datetime]],
                  right: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Intersection of two sorted lists of disjoint intervals."""
    out: list[tuple[datetime, datetime]] = []
    i = j = 0
    while i < len(left) and j < len(right):
        start, end = max(left[i][0], right[j][0]), min(left[i][1], right[j][1])
        if start < end:
            out.append((start, end))
        if left[i][1] < right[j][1]:
            i += 1
        else:
            j += 1
    return out


def _closed_set(holidays: Collection[date], closed_days: Collection[date]) -> set[date]:
    return set(holidays) | set(closed_days)


# An interval crosses at most one midnight, so the intervals covering a local
# date start on it or the day before; one more day back covers fall-back
# transitions that move the wall clock back across midnight.
_DAYS_BACK = 2


def release_time(schedule: Schedule, now: datetime, tz: str | ZoneInfo = DEFAULT_TIMEZONE,
                 holidays: Collection[date] = (), closed_days: Collection[date] = (),
                 personal: Schedule | None = None) -> datetime:
    """R15: when a notification produced at ``now`` may reach a staff member
    (see :func:`release_window`, which also says how long the answer holds)."""
    release, _until = release_window(schedule, now, tz, holidays, closed_days, personal)
    return release


def release_window(schedule: Schedule, now: datetime, tz: str | ZoneInfo = DEFAULT_TIMEZONE,
                   holidays: Collection[date] = (), closed_days: Collection[date] = (),
                   personal: Schedule | None = None) -> tuple[datetime, datetime]:
    """R15: when a notification produced at ``now`` may reach a staff member.
    Returns ``now`` itself when it is working time (the school's ``schedule``
    in zone ``tz``, minus ``holidays`` and ``closed_days``, within the
    ``personal`` schedule when given), else the first instant, in UTC, at
    which working time starts again.  Raises :class:`ValueError` for a naive
    ``now``, for an empty schedule, and when no working time exists within
    :data:`MAX_SEARCH_DAYS` days.

    Returned with the release: the instant (UTC) until which the same kind of
    answer holds for any later ``now`` — the end of the working interval
    (inside it, "now" stays the answer), or the release itself (before it,
    the release stays the answer).  Callers may reuse the answer until then.
    """
    instant = _utc(now)
    if schedule.is_empty or (personal is not None and personal.is_empty):
        raise ValueError("the schedule has no working time at all; a held notification would never be released")
    zone = _zone(tz)
    closed = _closed_set(holidays, closed_days)
    today = instant.astimezone(zone).date()
    school: list[tuple[datetime, datetime]] = []
    own: list[tuple[datetime, datetime]] = []
    day = today - timedelta(days=_DAYS_BACK)
    # Widen the window in steps: almost every answer is within a week, long
    # closures need more.  Only a candidate before the window's end is sure:
    # intervals of later days could start earlier than one found past it.
    for horizon in (7, 35, MAX_SEARCH_DAYS):
        last = today + timedelta(days=horizon)
        while day <= last:
            school += _day_intervals(schedule, day, zone, closed)
            if personal is not None:
                own += _day_intervals(personal, day, zone, closed)
            day += timedelta(days=1)
        working = _union(school) if personal is None else _intersection(_union(school), _union(own))
        window_end = _first_instant_at(datetime.combine(day, time()), zone)
        for start, end in working:
            if end > instant:
                if start <= instant:
                    return now, end  # inside working time: deliver now
                if start < window_end:
                    return start, start
                break
    raise ValueError(f"no working time within {MAX_SEARCH_DAYS} days after {now.isoformat()}")


def is_working_time(schedule: Schedule, at: datetime, tz: str | ZoneInfo = DEFAULT_TIMEZONE,
                    holidays: Collection[date] = (), closed_days: Collection[date] = (),
                    personal: Schedule | None = None) -> bool:
    """R15: is ``at`` inside working time (same arguments as
    :func:`release_time`)?  An empty schedule is never working time."""
    instant = _utc(at)
    zone = _zone(tz)
    closed = _closed_set(holidays, closed_days)
    today = instant.astimezone(zone).date()

    def covers(weekly: Schedule) -> bool:
        return any(start <= instant < end
                   for back in range(_DAYS_BACK + 1)
                   for start, end in _day_intervals(weekly, today - timedelta(days=back), zone, closed))

    return covers(schedule) and (personal is None or covers(personal))
