"""R16–R17: a person's notification feed (per child), reading, and preferences."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Sequence

import orjson
from sqlalchemy import func, select, update

from chat.clock import SYSTEM, Clock
from chat.errors import BadRequest, NotFound
from chat.frames import timestamp
from chat.i18n import notification_text
from chat.policies.facts import Caller, PersonFacts, Role
from chat.storage.models import Notification, NotificationPreference, Student

KINDS = ("message", "added", "announcement", "reaction", "transport", "observation", "absence")
PAGE_DEFAULT, PAGE_MAX = 30, 100


class Feed:
    """What a person sees of their notifications.  ``people`` gives a person's
    facts (a parent's children, for a per-child preference); ``clock`` stamps reads."""

    def __init__(self, *, sessions: Callable[[], Any],
                 people: Callable[[Any, Sequence[int]], Awaitable[list[PersonFacts]]],
                 clock: Clock = SYSTEM) -> None:
        self.sessions = sessions
        self.people = people
        self.clock = clock

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

    async def feed(self, actor: Caller, child_id: int | None = None, before: int | None = None,
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

    async def open(self, actor: Caller, notification_id: int) -> dict[str, Any]:
        """R16: opening one shows its details and marks it read."""
        async with self.sessions() as session, session.begin():
            n = await session.get(Notification, notification_id)
            if n is None or n.person_id != actor.id or n.delivered_at is None:
                raise NotFound("notification.not_found", notification_id=notification_id)
            if n.read_at is None:
                n.read_at = self.clock.utcnow()
            view = self.render(n)
            if n.child_id:
                child = await session.get(Student, n.child_id)
                view["child"] = {"id": child.id, "name": f"{child.first_name} {child.last_name}"}
        return view

    async def mark_all_read(self, actor: Caller, child_id: int | None = None) -> dict[str, Any]:
        async with self.sessions() as session, session.begin():
            query = update(Notification).where(Notification.person_id == actor.id, Notification.read_at.is_(None),
                                               Notification.delivered_at.is_not(None))
            if child_id is not None:
                query = query.where(Notification.child_id == child_id)
            result = await session.execute(query.values(read_at=self.clock.utcnow()))
        return {"marked": result.rowcount, "unread": await self.unread_count(actor.id)}

    async def read_conversation(self, session, person_id: int, conversation_id: int) -> None:
        """Reading a conversation reads its message notifications (no e-mail for them)."""
        await session.execute(update(Notification).where(
            Notification.person_id == person_id, Notification.conversation_id == conversation_id,
            Notification.read_at.is_(None)).values(read_at=self.clock.utcnow()))

    async def preferences(self, actor: Caller) -> dict[str, Any]:
        """R17: every kind is on by default, for every child; the rows are the exceptions."""
        async with self.sessions() as session:
            rows = (await session.execute(select(NotificationPreference).where(
                NotificationPreference.person_id == actor.id))).scalars().all()
        return {"kinds": list(KINDS), "default": True,
                "preferences": [{"child_id": r.child_id or None, "kind": r.kind, "enabled": r.enabled} for r in rows]}

    async def set_preference(self, actor: Caller, child_id: int | None, kind: str, enabled: bool) -> dict[str, Any]:
        if kind not in KINDS:
            raise BadRequest("notification.unknown_kind", kind=kind[:32], kinds=", ".join(KINDS))
        async with self.sessions() as session, session.begin():
            if child_id is not None and actor.role == Role.PARENT.value:
                facts = (await self.people(session, [actor.id]))[0]
                if child_id not in facts.child_ids:
                    raise NotFound("child.not_found", child_id=child_id)
            row = await session.get(NotificationPreference, (actor.id, child_id or 0, kind))
            if row is None:
                session.add(NotificationPreference(person_id=actor.id, child_id=child_id or 0, kind=kind,
                                                   enabled=enabled))
            else:
                row.enabled = enabled
        return {"child_id": child_id, "kind": kind, "enabled": enabled}
