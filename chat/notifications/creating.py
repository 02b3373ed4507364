"""What creating notifications needs besides the notifier: the :class:`Pending`
value callers build, and the prebuilt statements (building one costs more than
running these small look-ups)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, Float, Text, bindparam, exists, insert, literal, null, select

from chat.storage.models import Notification, NotificationPreference, Person

# Built once: statement construction costs more than running these small look-ups.
ROLES_AND_HOURS = select(Person.id, Person.role, Person.working_hours).where(
    Person.id.in_(bindparam("ids", expanding=True)))
SWITCHED_OFF = select(
    NotificationPreference.person_id, NotificationPreference.child_id, NotificationPreference.kind).where(
    NotificationPreference.person_id.in_(bindparam("ids", expanding=True)),
    NotificationPreference.kind.in_(bindparam("kinds", expanding=True)),
    NotificationPreference.enabled == False)  # noqa: E712
INSERT_NOTIFICATIONS = Notification.__table__.insert()


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

