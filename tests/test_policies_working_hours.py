"""When a notification to staff is released (R15): now inside working hours,
otherwise when working time starts again — weekends, Quebec statutory
holidays, school closed days, personal hours, midnight and DST included.

Pure policy tests (STYLE.md): schedules, dates and fixed datetimes in, a
release instant out; no clock, no sleeping.  The example tests pin the cases a
school would check by hand; the property tests compare ``release_time`` with
an independent oracle (below) on random schedules, closures and instants
around DST transitions from 2020 to 2035.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat.errors import BadRequest
from chat.policies.working_hours import (
    DAYS,
    MAX_INTERVALS_PER_DAY,
    MAX_SEARCH_DAYS,
    Schedule,
    is_working_time,
    parse_schedule,
    quebec_holidays,
    release_time,
    release_window,
)

TORONTO = ZoneInfo("America/Toronto")
SCHOOL_DAYS = parse_schedule({day: [["08:00", "16:00"]] for day in ("mon", "tue", "wed", "thu", "fri")})
HOLIDAYS = quebec_holidays(range(2026, 2028))


def local(*fields: int, fold: int = 0) -> datetime:
    """A wall-clock instant in Toronto (the schools' zone)."""
    return datetime(*fields, tzinfo=TORONTO, fold=fold)


def release(now: datetime, schedule: Schedule = SCHOOL_DAYS, **kwargs) -> datetime:
    return release_time(schedule, now, "America/Toronto", **{"holidays": HOLIDAYS, **kwargs})


def same_instant(a: datetime, b: datetime) -> bool:
    """Equality of instants; aware datetimes sharing a tzinfo compare by wall time, ignoring fold."""
    return a.astimezone(UTC) == b.astimezone(UTC)


def refusal(raw, **kwargs) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        parse_schedule(raw, **kwargs)
    return info.value


# --- the scenario and ordinary weeks ------------------------------------------


def test_friday_evening_message_before_thanksgiving_is_released_tuesday_at_opening():
    now = local(2026, 10, 9, 21, 40)  # Friday; Monday 2026-10-12 is Action de grâces
    released = release(now)
    assert same_instant(released, local(2026, 10, 13, 8, 0))
    assert released.tzinfo is UTC


def test_inside_working_hours_the_notification_goes_now():
    now = local(2026, 10, 14, 10, 15)
    assert release(now) is now
    assert is_working_time(SCHOOL_DAYS, now, holidays=HOLIDAYS)


def test_before_opening_the_notification_waits_for_that_days_opening():
    assert same_instant(release(local(2026, 10, 14, 6, 30)), local(2026, 10, 14, 8, 0))


def test_closing_time_itself_is_outside_working_hours():
    assert same_instant(release(local(2026, 10, 14, 16, 0)), local(2026, 10, 15, 8, 0))


def test_opening_time_itself_is_inside_working_hours():
    now = local(2026, 10, 14, 8, 0)
    assert release(now) is now


def test_weekend_messages_wait_for_monday_morning():
    assert same_instant(release(local(2026, 10, 16, 16, 5)), local(2026, 10, 19, 8, 0))
    assert same_instant(release(local(2026, 10, 17, 11, 0)), local(2026, 10, 19, 8, 0))


def test_now_may_be_given_in_any_zone():
    now = datetime(2026, 10, 17, 15, 0, tzinfo=UTC)  # Saturday 11:00 in Toronto
    assert same_instant(release_time(SCHOOL_DAYS, now, TORONTO), local(2026, 10, 19, 8, 0))


def test_a_school_closed_day_is_outside_working_hours():
    pedagogical_day = date(2026, 11, 13)  # a Friday
    released = release(local(2026, 11, 12, 18, 0), closed_days={pedagogical_day})
    assert same_instant(released, local(2026, 11, 16, 8, 0))
    assert not is_working_time(SCHOOL_DAYS, local(2026, 11, 13, 10, 0), closed_days=[pedagogical_day])


def test_quebec_holidays_include_the_fete_nationale_canada_day_and_thanksgiving():
    days = quebec_holidays(2026)
    assert {date(2026, 6, 24), date(2026, 7, 1), date(2026, 10, 12), date(2026, 12, 25)} <= days
    assert date(2026, 6, 23) not in days
    assert quebec_holidays([2026, 2027]) >= days | {date(2027, 6, 24)}


def test_the_fete_nationale_holds_messages_until_the_next_day():
    # Wednesday 2026-06-24 is a Quebec statutory holiday.
    assert same_instant(release(local(2026, 6, 23, 17, 0)), local(2026, 6, 25, 8, 0))


# --- long closures --------------------------------------------------------------------


def test_christmas_break_holds_messages_until_the_first_day_back():
    closure = {date(2026, 12, 21) + timedelta(days=n) for n in range(16)}  # 2026-12-21 … 2027-01-05
    released = release(local(2026, 12, 18, 16, 30), closed_days=closure)
    assert same_instant(released, local(2027, 1, 6, 8, 0))


def test_a_summer_of_closed_days_holds_messages_until_the_end_of_august():
    summer = {date(2026, 6, 23) + timedelta(days=n) for n in range(65)}  # through 2026-08-26
    released = release(local(2026, 6, 22, 19, 0), closed_days=summer)
    assert same_instant(released, local(2026, 8, 27, 8, 0))


def test_an_empty_schedule_has_no_release_and_says_so():
    with pytest.raises(ValueError, match="no working time"):
        release_time(parse_schedule({}), local(2026, 10, 14, 10, 0))
    assert not is_working_time(parse_schedule({}), local(2026, 10, 14, 10, 0))


def test_a_school_closed_beyond_the_search_bound_raises():
    closed = {date(2026, 1, 1) + timedelta(days=n) for n in range(MAX_SEARCH_DAYS + 10)}
    with pytest.raises(ValueError, match=f"within {MAX_SEARCH_DAYS} days"):
        release_time(SCHOOL_DAYS, local(2026, 1, 1, 9, 0), closed_days=closed)


def test_a_naive_now_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        release_time(SCHOOL_DAYS, datetime(2026, 10, 14, 10, 0))


# --- personal hours -------------------------------------------------------------------

MORNINGS = parse_schedule({day: [["09:30", "12:00"]] for day in ("mon", "tue", "wed", "thu", "fri")})


def test_personal_hours_narrower_than_the_schools_hold_until_the_persons_start():
    assert same_instant(release(local(2026, 10, 14, 8, 30), personal=MORNINGS), local(2026, 10, 14, 9, 30))
    assert same_instant(release(local(2026, 10, 14, 13, 0), personal=MORNINGS), local(2026, 10, 15, 9, 30))
    now = local(2026, 10, 14, 10, 0)
    assert release(now, personal=MORNINGS) is now


def test_personal_hours_never_extend_the_schools():
    saturday = parse_schedule({"sat": [["09:00", "12:00"]], "mon": [["07:00", "09:00"]]})
    # Saturday is not school time, and on Monday only 08:00–09:00 is shared.
    assert same_instant(release(local(2026, 10, 17, 10, 0), personal=saturday), local(2026, 10, 19, 8, 0))
    assert not is_working_time(SCHOOL_DAYS, local(2026, 10, 17, 10, 0), personal=saturday)


def test_personal_hours_that_never_meet_the_schools_raise():
    weekends = parse_schedule({"sat": [["09:00", "12:00"]]})
    with pytest.raises(ValueError, match="no working time"):
        release(local(2026, 10, 14, 10, 0), personal=weekends)


# --- intervals across midnight --------------------------------------------------------

NIGHTS = parse_schedule({day: [["22:00", "06:00"]] for day in ("mon", "tue", "wed", "thu", "fri")})


def test_a_night_shift_is_working_time_after_midnight():
    now = local(2026, 10, 14, 3, 0)  # Wednesday, in Tuesday's shift
    assert release(now, NIGHTS) is now
    saturday_night = local(2026, 10, 17, 5, 59)  # in Friday's shift
    assert release(saturday_night, NIGHTS) is saturday_night


def test_a_night_shift_starts_at_its_evening():
    assert same_instant(release(local(2026, 10, 14, 6, 0), NIGHTS), local(2026, 10, 14, 22, 0))
    assert same_instant(release(local(2026, 10, 17, 7, 0), NIGHTS), local(2026, 10, 19, 22, 0))


def test_a_shift_starting_on_a_holiday_is_closed_even_after_midnight():
    # Thanksgiving Monday's shift would run to Tuesday 06:00: closed all along.
    assert same_instant(release(local(2026, 10, 13, 3, 0), NIGHTS), local(2026, 10, 13, 22, 0))


def test_a_shift_starting_before_a_closed_day_runs_to_its_end():
    now = local(2026, 10, 14, 2, 0)  # Tuesday's shift, continuing into a closed Wednesday
    assert release(now, NIGHTS, closed_days={date(2026, 10, 14)}) is now


def test_equal_start_and_end_mean_twenty_four_hours():
    schedule = parse_schedule({"wed": [["08:00", "08:00"]]})
    assert is_working_time(schedule, local(2026, 10, 15, 7, 59))
    assert not is_working_time(schedule, local(2026, 10, 15, 8, 0))


def test_twenty_four_hundred_ends_at_midnight():
    schedule = parse_schedule({"wed": [["20:00", "24:00"]]})
    assert is_working_time(schedule, local(2026, 10, 14, 23, 59))
    assert not is_working_time(schedule, local(2026, 10, 15, 0, 0))


# --- daylight saving time -------------------------------------------------------------
# America/Toronto springs forward at 02:00 on 2027-03-14 (02:00–03:00 does not
# exist) and falls back at 02:00 on 2026-11-01 (01:00–02:00 happens twice).


def test_spring_forward_a_start_in_the_gap_opens_when_the_clock_jumps():
    schedule = parse_schedule({"sun": [["02:30", "04:00"]]})
    released = release(local(2027, 3, 13, 12, 0), schedule)
    assert released == datetime(2027, 3, 14, 7, 0, tzinfo=UTC)  # 03:00 EDT, the first instant after 02:30
    assert released.astimezone(TORONTO).hour == 3


def test_spring_forward_an_interval_inside_the_gap_does_not_exist_that_day():
    schedule = parse_schedule({"sun": [["02:00", "02:45"]], "mon": [["08:00", "16:00"]]})
    assert same_instant(release(local(2027, 3, 14, 0, 30), schedule), local(2027, 3, 15, 8, 0))


def test_spring_forward_an_interval_across_the_gap_is_one_hour_shorter():
    schedule = parse_schedule({"sun": [["01:00", "03:00"]]})
    assert release(local(2027, 3, 13, 12, 0), schedule) == datetime(2027, 3, 14, 6, 0, tzinfo=UTC)
    assert is_working_time(schedule, datetime(2027, 3, 14, 6, 59, 59, tzinfo=UTC))  # 01:59:59 EST
    assert not is_working_time(schedule, datetime(2027, 3, 14, 7, 0, tzinfo=UTC))  # 03:00 EDT, its end


def test_fall_back_an_ambiguous_start_is_its_first_occurrence():
    schedule = parse_schedule({"sun": [["01:30", "03:00"]]})
    released = release(local(2026, 10, 31, 12, 0), schedule)
    assert released == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT, not 01:30 EST
    second_0110 = local(2026, 11, 1, 1, 10, fold=1)  # 06:10 UTC, after the first 01:30
    assert release(second_0110, schedule) is second_0110


def test_fall_back_an_ambiguous_end_is_its_first_occurrence():
    schedule = parse_schedule({"sun": [["00:00", "01:30"], ["02:00", "03:00"]]})
    assert is_working_time(schedule, local(2026, 11, 1, 1, 15, fold=0))  # 05:15 UTC
    # The repeated 01:15 (EST) is after the first 01:30: held until 02:00 EST.
    assert release(local(2026, 11, 1, 1, 15, fold=1), schedule) == datetime(2026, 11, 1, 7, 0, tzinfo=UTC)


def test_fall_back_an_interval_across_the_repeated_hour_lasts_one_hour_longer():
    schedule = parse_schedule({"sun": [["01:00", "03:00"]]})
    assert release(local(2026, 10, 31, 12, 0), schedule) == datetime(2026, 11, 1, 5, 0, tzinfo=UTC)
    assert is_working_time(schedule, datetime(2026, 11, 1, 7, 59, tzinfo=UTC))  # 02:59 EST
    assert not is_working_time(schedule, datetime(2026, 11, 1, 8, 0, tzinfo=UTC))


# --- parsing the directory's working_hours --------------------------------------------


def test_parse_schedule_reads_days_intervals_midnight_and_2400():
    schedule = parse_schedule({"mon": [["13:00", "16:00"], ["08:00", "11:30"]], "fri": [["22:00", "06:00"]],
                               "sat": [["20:00", "24:00"]], "sun": []})
    assert schedule.days == (((480, 690), (780, 960)), (), (), (), ((1320, 1800),), ((1200, 1440),), ())


@pytest.mark.parametrize(("raw", "where"), [
    ([["08:00", "16:00"]], "working_hours"),
    ({"monday": [["08:00", "16:00"]]}, "working_hours.monday"),
    ({"Mon": [["08:00", "16:00"]]}, "working_hours.Mon"),
    ({"mon": "08:00-16:00"}, "working_hours.mon"),
    ({"mon": [["08:00", "16:00"], "08:00"]}, "working_hours.mon[1]"),
    ({"mon": [["08:00"]]}, "working_hours.mon[0]"),
    ({"mon": [["08:00", "12:00", "16:00"]]}, "working_hours.mon[0]"),
    ({"mon": [["8:00", "16:00"]]}, "working_hours.mon[0][0]"),
    ({"mon": [["08:00", "16h00"]]}, "working_hours.mon[0][1]"),
    ({"mon": [["08:60", "16:00"]]}, "working_hours.mon[0][0]"),
    ({"mon": [["08:00", "25:00"]]}, "working_hours.mon[0][1]"),
    ({"mon": [["08:00", "24:01"]]}, "working_hours.mon[0][1]"),
    ({"mon": [["24:00", "06:00"]]}, "working_hours.mon[0][0]"),
    ({"mon": [[800, 1600]]}, "working_hours.mon[0][0]"),
    ({"mon": [["08:00", None]]}, "working_hours.mon[0][1]"),
    ({"mon": [["08:00", "16:00"]] * (MAX_INTERVALS_PER_DAY + 1)}, "working_hours.mon"),
], ids=["not-an-object", "long-day-name", "capitalised-day", "day-not-a-list", "interval-not-a-list",
        "one-time", "three-times", "one-digit-hour", "not-hh-mm", "minute-60", "hour-25", "past-2400",
        "2400-start", "numbers", "null", "too-many-intervals"])
def test_bad_schedules_are_refused_with_where(raw, where):
    error = refusal(raw)
    assert error.code == "directory.invalid"
    assert error.fields["where"] == where
    assert error.fields["problem"]


def test_the_where_prefix_points_into_the_directory():
    error = refusal({"sun": [["08:00", "7:00"]]}, where="schools[2].working_hours")
    assert error.fields["where"] == "schools[2].working_hours.sun[0][1]"
    assert "HH:MM" in error.fields["problem"] and "'7:00'" in error.fields["problem"]


# --- properties against an independent oracle -----------------------------------------
#
# The oracle never maps a wall-clock time to an instant.  It walks real
# instants (UTC minutes) forward, reads the wall clock with zoneinfo's
# unambiguous UTC → local direction, and keeps the *running maximum* of the
# wall clock, M.  "Bound b maps to the first instant at which the wall clock
# reads b or later" means exactly: instant u is inside [a, b) iff a <= M(u) < b.
# Membership is then plain wall-clock arithmetic on a bitmap with one byte per
# local minute (1 = working minute for school and person, closed days skipped),
# built from the raw minutes the strategy drew, not from the parsed Schedule.
#
# `first_open_by_minute_scan` is pure brute force over a bounded window.
# `first_open_by_oracle` is the same walk, but it jumps over stretches in which
# the bitmap has no working minute, so it can cross long closures; it always
# lands three hours before the next working wall time and walks from there,
# which is where DST can make the answer differ from the wall-clock guess.

ZONES = ("America/Toronto", "America/Toronto", "America/Toronto", "America/St_Johns", "Europe/Paris",
         "Australia/Lord_Howe")  # Toronto first; others test half-hour offsets and half-hour DST
FIRST_YEAR, LAST_YEAR = 2020, 2035
# Times around DST transitions and school days, drawn more often than chance would.
NOTABLE_MINUTES = (0, 60, 90, 119, 120, 150, 180, 181, 210, 480, 960, 1320, 1439)
LOOKBACK_MINUTES = 180  # longer than any repeated hour: enough to know M at `now`
DAY_MINUTES = 1440


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@cache
def transitions(zone_name: str, year: int) -> tuple[int, ...]:
    """UTC timestamps at which the zone's offset changes during ``year``."""
    zone = ZoneInfo(zone_name)

    def offset(ts: int) -> timedelta:
        return datetime.fromtimestamp(ts, zone).utcoffset()

    found = []
    ts = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    while ts < end:
        step = ts + 86400
        if offset(ts) != offset(step):
            low, high = ts, step
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if offset(middle) == offset(ts) else (low, middle)
            found.append(high)
        ts = step
    return tuple(found)


@dataclass(frozen=True)
class Scenario:
    zone_name: str
    school: dict[str, list[tuple[int, int]]]     # raw minutes, end <= start meaning "next day"
    personal: dict[str, list[tuple[int, int]]] | None
    holidays: frozenset[date]
    closed_days: frozenset[date]
    now: datetime

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.zone_name)

    def parsed(self, weekly: dict[str, list[tuple[int, int]]]) -> Schedule:
        return parse_schedule({day: [[hhmm(s), "24:00" if e == DAY_MINUTES else hhmm(e)] for s, e in intervals]
                               for day, intervals in weekly.items()})

    def args(self) -> dict:
        return {"tz": self.zone_name, "holidays": self.holidays, "closed_days": self.closed_days,
                "personal": None if self.personal is None else self.parsed(self.personal)}

    def release(self) -> datetime | None:
        try:
            return release_time(self.parsed(self.school), self.now, **self.args())
        except ValueError:
            return None

    def is_working(self, at: datetime) -> bool:
        return is_working_time(self.parsed(self.school), at, **self.args())


# Bitmap lengths, counted from two days before now's local date.  FULL reaches
# the local midnight that ends day today + MAX_SEARCH_DAYS, like release_time;
# SHORT answers almost every example at a fraction of the cost.
FULL_DAYS = MAX_SEARCH_DAYS + 3
SHORT_DAYS = 24


def wall_bitmap(sc: Scenario, days: int) -> tuple[bytes, int]:
    """One byte per local minute for ``days`` days from two days before ``now``'s
    local date: 1 where school and person both work."""
    first = datetime.fromtimestamp(sc.now.timestamp(), sc.zone).date() - timedelta(days=2)
    size = days * DAY_MINUTES
    ones = b"\x01" * (2 * DAY_MINUTES)
    closed = sc.holidays | sc.closed_days

    def bits(weekly: dict[str, list[tuple[int, int]]]) -> bytearray:
        out = bytearray(size)
        for n in range(days):
            day = first + timedelta(days=n)
            if day in closed:
                continue  # the whole interval, even past midnight, belongs to its first day
            for start, end in weekly.get(DAYS[day.weekday()], []):
                end = end if end > start else end + DAY_MINUTES
                low, high = n * DAY_MINUTES + start, min(n * DAY_MINUTES + end, size)
                if low < high:
                    out[low:high] = ones[: high - low]
        return out

    school = bits(sc.school)
    if sc.personal is None:
        return bytes(school), first.toordinal()
    both = int.from_bytes(school, "little") & int.from_bytes(bits(sc.personal), "little")
    return both.to_bytes(size, "little"), first.toordinal()


class Walk:
    """Real instants, minute by minute, with the running maximum of the wall clock."""

    def __init__(self, sc: Scenario, days: int = SHORT_DAYS) -> None:
        self.zone, self.now = sc.zone, sc.now
        self.bitmap, self.origin = wall_bitmap(sc, days)
        self.t = math.floor(sc.now.timestamp() / 60) * 60  # last minute boundary <= now
        self.m = max(self.wall(t) for t in range(self.t - LOOKBACK_MINUTES * 60, self.t + 1, 60))
        self.m = max(self.m, self.wall(sc.now.timestamp()))  # now itself, seconds dropped

    def wall(self, ts: float) -> int:
        local = datetime.fromtimestamp(ts, self.zone)
        return (local.toordinal() - self.origin) * DAY_MINUTES + local.hour * 60 + local.minute

    def working(self) -> bool:
        return self.m < len(self.bitmap) and self.bitmap[self.m] == 1

    def step(self) -> bool:
        """Next minute boundary; False once past the bitmap (the search bound)."""
        self.t += 60
        self.m = max(self.m, self.wall(self.t))
        return self.m < len(self.bitmap)


def first_open_by_minute_scan(sc: Scenario, limit_minutes: int) -> datetime | None:
    walk = Walk(sc, days=3 + limit_minutes // DAY_MINUTES + 2)
    if walk.working():
        return sc.now
    for _ in range(limit_minutes):
        if not walk.step():
            return None
        if walk.working():
            return datetime.fromtimestamp(walk.t, UTC)
    return None


def first_open_by_oracle(sc: Scenario) -> datetime | None:
    found = first_open_by_walk(Walk(sc, SHORT_DAYS))
    return found if found is not None else first_open_by_walk(Walk(sc, FULL_DAYS))


def first_open_by_walk(walk: Walk) -> datetime | None:
    if walk.working():
        return walk.now
    while True:
        target = walk.bitmap.find(1, walk.m)  # next working wall minute
        if target < 0:
            return None
        if target - walk.m > 4 * 60:
            # Nothing works in between: jump to ~3 h (wall) before it.  DST moves
            # the landing by at most an hour, so it is still before the target.
            walk.t += (target - LOOKBACK_MINUTES - walk.m) * 60
            walk.m = max(walk.m, walk.wall(walk.t))
        for _ in range(6 * 60):  # past the target, or the target was swallowed by a DST gap
            if not walk.step():
                return None
            if walk.working():
                return datetime.fromtimestamp(walk.t, UTC)


def oracle_is_working(sc: Scenario) -> bool:
    return Walk(sc, days=4).working()


# Generation dominates the run time (each hypothesis draw costs tens of
# microseconds), so a whole interval is one draw: an index into (day, start,
# end) over pools holding every minute once and the notable ones many times.
START_POOL = NOTABLE_MINUTES * 40 + tuple(range(DAY_MINUTES))
END_POOL = (*NOTABLE_MINUTES, DAY_MINUTES) * 40 + tuple(range(DAY_MINUTES + 1))


def interval(index: int) -> tuple[str, int, int]:
    index, start = divmod(index, len(START_POOL))
    day, end = divmod(index, len(END_POOL))
    return DAYS[day], START_POOL[start], END_POOL[end]


def weekly(indexes: list[int]) -> dict[str, list[tuple[int, int]]]:
    days: dict[str, list[tuple[int, int]]] = {}
    for day, start, end in map(interval, indexes):
        days.setdefault(day, []).append((start, end))
    return days


# 1 to 8 intervals on random days, several a day sometimes; missing days are closed.
weekly_st = st.lists(st.integers(0, 7 * len(START_POOL) * len(END_POOL) - 1), min_size=1, max_size=8).map(weekly)
FIRST_INSTANT = int(datetime(FIRST_YEAR, 1, 2, tzinfo=UTC).timestamp())
LAST_INSTANT = int(datetime(LAST_YEAR, 12, 30, tzinfo=UTC).timestamp())
# Seconds added to a minute (mostly on the minute, sometimes just after it or
# just before the next) and the zone ``now`` is expressed in (UTC, the
# school's as None, a fixed offset), which must not matter: one draw for both.
SECONDS_AND_ZONES = tuple((seconds, zone) for seconds in (0.0, 0.0, 0.0, 0.000001, 17.5, 59.999999)
                          for zone in (UTC, None, timezone(timedelta(hours=-3))))
quebec_holidays_of = cache(quebec_holidays)


@cache
def all_transitions(zone_name: str) -> tuple[int, ...]:
    return tuple(t for year in range(FIRST_YEAR, LAST_YEAR + 1) for t in transitions(zone_name, year))


@st.composite
def instants(draw, zone_name: str) -> tuple[datetime, int | None]:
    """``now``, and the DST transition (UTC timestamp) it was drawn near, if any."""
    transition = None
    if draw(st.booleans()):  # within a day and a bit of a DST transition
        transition = draw(st.sampled_from(all_transitions(zone_name)))
        minute = transition // 60 + draw(st.integers(-30 * 60, 30 * 60))
    else:
        minute = draw(st.integers(FIRST_INSTANT // 60, LAST_INSTANT // 60))
    seconds, zone = draw(st.sampled_from(SECONDS_AND_ZONES))
    now = datetime.fromtimestamp(minute * 60, UTC) + timedelta(seconds=seconds)
    now = now.astimezone(zone or ZoneInfo(zone_name))
    return now, transition


# Minutes from the transition's wall time; the hour after it is the gap (spring)
# or the end of the repeated stretch (fall), the hour before it the repeated stretch.
OFFSETS_AROUND = st.sampled_from((-90, -61, -60, -59, -30, -1, 0, 1, 15, 29, 30, 31, 59, 60, 61, 90)) | st.integers(
    -90, 90)


@st.composite
def around(draw, zone_name: str, transition: int) -> tuple[str, tuple[int, int]]:
    """An interval on the transition's day with bounds within 90 minutes of its
    wall time: starts and ends in the gap, in the repeated stretch, across them."""
    wall = datetime.fromtimestamp(transition - 1, ZoneInfo(zone_name)) + timedelta(seconds=1)
    start = (wall.hour * 60 + wall.minute + draw(OFFSETS_AROUND)) % DAY_MINUTES
    end = (start + draw(st.integers(1, 180))) % DAY_MINUTES  # wrapped ends cross midnight
    return DAYS[wall.weekday()], (start, end or DAY_MINUTES)


def with_interval(weekly: dict[str, list[tuple[int, int]]], day: str, pair: tuple[int, int]) -> dict:
    return {**weekly, day: [*weekly.get(day, []), pair]}


@st.composite
def scenarios(draw) -> Scenario:
    zone_name = draw(st.sampled_from(ZONES))
    now, transition = draw(instants(zone_name))
    today = now.astimezone(ZoneInfo(zone_name)).date()
    school = draw(weekly_st)
    personal = draw(st.none() | st.none() | weekly_st)
    if transition is not None:  # bounds where DST bites
        school = with_interval(school, *draw(around(zone_name, transition)))
        if personal is not None:
            personal = with_interval(personal, *draw(around(zone_name, transition)))
    if draw(st.integers(0, 2)) == 0:  # a third of the time, now inside one of the school's intervals
        day, (start, end) = draw(st.sampled_from([(day, pair) for day, pairs in school.items() for pair in pairs]))
        length = end - start if end > start else end + DAY_MINUTES - start
        # On the last such weekday up to today: after-midnight parts of yesterday's land today.
        wall = datetime.combine(today - timedelta(days=(today.weekday() - DAYS.index(day)) % 7), time())
        wall += timedelta(minutes=start + draw(st.integers(0, length - 1)))
        now = wall.replace(tzinfo=ZoneInfo(zone_name)).astimezone(now.tzinfo)
        today = now.astimezone(ZoneInfo(zone_name)).date()
    # Days off from 3 days before to 45 after: even numbers are holidays, odd ones closed days.
    days_off = draw(st.lists(st.integers(0, 2 * 49 - 1), max_size=8))
    holidays = {today + timedelta(days=n // 2 - 3) for n in days_off if n % 2 == 0}
    closed = {today + timedelta(days=n // 2 - 3) for n in days_off if n % 2 == 1}
    if draw(st.booleans()):
        holidays |= quebec_holidays_of(today.year) | quebec_holidays_of(today.year + 1)
    if draw(st.booleans()):  # a break or a summer: from day -2…10, 1–80 days long
        start, length = divmod(draw(st.integers(0, 13 * 80 - 1)), 80)
        closed |= {today + timedelta(days=start - 2 + n) for n in range(length + 1)}
    return Scenario(zone_name, school, personal, frozenset(holidays), frozenset(closed), now)


@st.composite
def dst_scenarios(draw) -> Scenario:
    """A schedule made only of intervals around one DST transition, and a ``now``
    shortly before or after it: every answer depends on the DST rules."""
    zone_name = draw(st.sampled_from(ZONES))
    transition = draw(st.sampled_from(all_transitions(zone_name)))
    school: dict[str, list[tuple[int, int]]] = {}
    for _ in range(draw(st.integers(1, 2))):
        school = with_interval(school, *draw(around(zone_name, transition)))
    personal = draw(st.none() | around(zone_name, transition).map(lambda pair: with_interval({}, *pair)))
    seconds, zone = draw(st.sampled_from(SECONDS_AND_ZONES))
    now = datetime.fromtimestamp(transition // 60 * 60 + 60 * draw(st.integers(-30 * 60, 3 * 60)), UTC)
    now = (now + timedelta(seconds=seconds)).astimezone(zone or ZoneInfo(zone_name))
    return Scenario(zone_name, school, personal, frozenset(), frozenset(), now)


PROPERTY = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(scenarios())
def test_property_release_is_never_before_now(sc: Scenario):
    released = sc.release()
    assert released is None or released >= sc.now


@PROPERTY
@given(scenarios())
def test_property_release_is_inside_working_time(sc: Scenario):
    released = sc.release()
    if released is not None:
        assert sc.is_working(released)


@PROPERTY
@given(scenarios())
def test_property_release_is_the_first_working_instant(sc: Scenario):
    released = sc.release()
    expected = first_open_by_oracle(sc)
    assert released == expected  # None: both found no working time within the bound
    if expected is not None and expected - sc.now <= timedelta(days=2):
        # And by brute force: no working minute in [now, release), release working.
        assert first_open_by_minute_scan(sc, limit_minutes=2 * DAY_MINUTES + 1) == released


@PROPERTY
@given(scenarios())
def test_property_now_is_released_now_exactly_when_it_is_working_time(sc: Scenario):
    working = sc.is_working(sc.now)
    assert working == oracle_is_working(sc)
    released = sc.release()
    assert (released is sc.now) == working


@PROPERTY
@given(dst_scenarios())
def test_property_around_dst_transitions_release_is_the_first_working_instant(sc: Scenario):
    released = sc.release()
    assert released == first_open_by_oracle(sc)
    if released is not None:
        assert released >= sc.now and sc.is_working(released)


@PROPERTY
@given(scenarios(), st.floats(min_value=0.0, max_value=1.0))
def test_property_the_release_window_holds_for_any_later_instant_before_its_end(sc: Scenario, fraction: float):
    """The notifier reuses an answer until ``until`` (chat/notifications.py): any
    instant in [now, until) must get the same kind of answer, computed afresh."""
    try:
        released, until = release_window(sc.parsed(sc.school), sc.now, **sc.args())
    except ValueError:
        return
    assert released is sc.now or released == until
    assert until >= sc.now
    later = sc.now + (until - sc.now) * fraction
    if later >= until:
        return
    again = release_time(sc.parsed(sc.school), later, **sc.args())
    assert (again is later) if released is sc.now else (again == released)
