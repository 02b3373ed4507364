"""Feature switches per school (R18).

Each school chooses which of the 27 features of the parent portal are on; a
base set is always on.  The hub enforces the ones it serves; the others are
listed so that a school's configuration is checked against the whole set.  A
disabled feature answers ``feature.unavailable`` (FR/EN), never a crash or
silence.
"""

from __future__ import annotations

from typing import Collection

from chat.errors import Forbidden

FEATURES: tuple[str, ...] = (
    # served by the hub
    "messaging", "announcements", "collective_sends", "attachments", "reactions",
    "transport_notices", "observations", "absence_notices",
    # carried as notifications for the wider portal
    "absences", "lateness", "homework", "agenda", "calendar", "grades", "report_cards",
    "timetable", "documents", "tax_slips", "finances", "enrolment", "daycare", "lunch",
    "health", "transport",
    # the base set
    "home", "profile", "notifications",
)
BASE: frozenset[str] = frozenset({"home", "profile", "notifications"})
assert len(FEATURES) == 27 and len(set(FEATURES)) == 27


def enabled_set(configured: Collection[str] | None) -> frozenset[str]:
    """A school's enabled features: all of them when not configured, else its
    list plus the base set."""
    if configured is None:
        return frozenset(FEATURES)
    return frozenset(configured) | BASE


def require(enabled: frozenset[str], feature: str) -> None:
    """Refuse with feature.unavailable when ``feature`` is off for the school."""
    if feature not in enabled:
        raise Forbidden("feature.unavailable", feature=feature)


def unknown(names: Collection[str]) -> list[str]:
    return sorted(set(names) - set(FEATURES))
