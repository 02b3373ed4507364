"""Who is in a conversation and whether it takes writes: create (R1–R3), rename (R3),
add (R4), remove and leave (R5, R1), lock and unlock (R10).

Every change follows one order (non-negotiable 3): check with the pure rules
(:mod:`chat.policies.membership`), write it with its event in one transaction,
commit, then publish.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from chat.clock import utcnow
from chat import people as directory
from chat.conversations import log
from chat.conversations.summaries import summary
from chat.errors import Conflict
from chat.frames import dumps
from chat.hub import Hub
from chat.i18n import system_text
from chat.people import Actor, member_view
from chat.policies import membership
from chat.schools import Schools, audit, conversation_directed_by
from chat.storage import direct, queries
from chat.storage.models import Conversation, Participant


@dataclass
class NewConversation:
    """What a list entry (:func:`summary`) reads of a conversation just created."""

    school_id: int
    child_id: int | None
    name: str | None
    creator_id: int
    last_seq: int
    id: int = 0
    locked_at: None = None
    lock_reason: None = None


class Membership:
    """Create, rename, add, remove, leave, lock."""

    def __init__(self, *, engine: AsyncEngine, sessions: async_sessionmaker, hub: Hub, schools: Schools,
                 notifier: Any) -> None:
        self.engine = engine
        self.sessions = sessions
        self.hub = hub
        self.schools = schools
        self.notifier = notifier

    async def create(
        self, actor: Actor, participant_ids: Sequence[int], child_id: int | None = None, name: str | None = None
    ) -> dict[str, Any]:
        """R1, R2, R3: a parent creates for one child; staff for a child or among staff.

        On the driver's connection (chat.storage.direct): a collective send
        (chat.collective) creates hundreds of these in a row."""
        name = membership.check_name(name)
        async with direct.transaction(self.engine) as session:
            facts = await directory.require_people(session, [actor.id, *participant_ids])
            actor_facts, invitees = facts[0], [f for f in facts[1:] if f.id != actor.id]
            child = await directory.child(session, child_id)
            membership.check_creation(actor_facts, child, invitees)
            school_id = child.school_id if child else min(actor_facts.school_ids)
            await self.schools.require_feature(session, school_id, "messaging")
            now = utcnow()
            seq = 1  # the conversation.created event
            conversation = NewConversation(school_id, child_id, name, actor.id, seq)
            conversation.id = (await session.execute(queries.INSERT_CONVERSATION, {
                "school_id": school_id, "child_id": child_id, "name": name, "creator_id": actor.id,
                "created_at": now, "last_seq": seq, "last_message_at": None, "locked_at": None,
                "locked_by": None, "lock_reason": None})).one()[0]
            member_ids = [actor.id, *[f.id for f in invitees]]
            await session.execute(queries.INSERT_PARTICIPANTS, [
                {"conversation_id": conversation.id, "person_id": pid, "active": True, "visible_from_seq": 1,
                 "last_read_seq": 0, "joined_at": now, "left_at": None} for pid in member_ids])
            people = await directory.names(session, member_ids)
            await log.append(
                session, conversation.id, "conversation.created", actor.id, seq=seq,
                name=name, child_id=child_id, members=[member_view(people[p]) for p in member_ids],
                system=system_text("system.created", {"actor": actor.name}))
            entry = await summary(session, conversation, actor.id)
        joined = dumps({"type": "conversation.joined", "conversation": entry | {"unread": 0}})
        for pid in member_ids:
            await self.hub.publish_person(pid, "join", joined, conversation.id, seq)
        return entry

    async def rename(self, actor: Actor, conversation_id: int, name: str | None) -> dict[str, Any]:
        """R3: any member may rename."""
        name = membership.check_name(name)
        async with self.sessions() as session, session.begin():
            await log.participant(session, conversation_id, actor.id)
            await self.schools.writable(session, conversation_id)
            await session.execute(update(Conversation).where(Conversation.id == conversation_id).values(name=name))
            seq, frame = await log.append(
                session, conversation_id, "conversation.renamed", actor.id, name=name,
                system=system_text("system.renamed", {"actor": actor.name, "name": name or ""}),
            )
            members = await log.member_ids(session, conversation_id)
        await self.hub.publish_event(conversation_id, seq, members, frame)
        return {"conversation_id": conversation_id, "seq": seq, "name": name}

    async def add(
        self, actor: Actor, conversation_id: int, person_ids: Sequence[int], share_history: bool
    ) -> dict[str, Any]:
        """R4: add people, choosing whether they see the earlier history; a system
        message records it."""
        async with self.sessions() as session, session.begin():
            await log.participant(session, conversation_id, actor.id)
            conversation = await self.schools.writable(session, conversation_id)
            member_ids = await log.member_ids(session, conversation_id)
            facts = await directory.require_people(session, [actor.id, *member_ids, *person_ids])
            by_id = {f.id: f for f in facts}
            newcomers = [by_id[p] for p in dict.fromkeys(person_ids)]
            child = await directory.child(session, conversation.child_id)
            membership.check_addition(by_id[actor.id], child, [by_id[m] for m in member_ids], newcomers)
            seq = await log.next_seq(session, conversation_id)
            visible_from = 1 if share_history else seq
            for person in newcomers:
                row = await session.get(Participant, (conversation_id, person.id))
                if row is None:
                    session.add(Participant(conversation_id=conversation_id, person_id=person.id,
                                            visible_from_seq=visible_from, last_read_seq=seq))
                else:  # a former member coming back
                    row.active, row.left_at, row.visible_from_seq, row.last_read_seq = True, None, visible_from, seq
            people = await directory.names(session, [actor.id, *[p.id for p in newcomers]])
            names = ", ".join(people[p.id].name for p in newcomers)
            code = "system.added_with_history" if share_history else "system.added_without_history"
            _, frame = await log.append(
                session, conversation_id, "member.added", actor.id, seq=seq,
                members=[member_view(people[p.id]) for p in newcomers], history_shared=share_history,
                system=system_text(code, {"actor": actor.name, "names": names}),
            )
            await session.flush()
            await self.notifier.add(session, [
                log.pending(conversation, p.id, "added", "notify.added", actor, {}) for p in newcomers])
            everyone = [*member_ids, *[p.id for p in newcomers]]
            summaries = {p.id: await summary(session, conversation, p.id) for p in newcomers}
        await self.hub.publish_event(conversation_id, seq, everyone, frame)
        for person in newcomers:
            joined = dumps({"type": "conversation.joined", "conversation": summaries[person.id]})
            await self.hub.publish_person(person.id, "join", joined, conversation_id, seq)
        return {"conversation_id": conversation_id, "seq": seq, "added": [p.id for p in newcomers]}

    async def remove(self, actor: Actor, conversation_id: int, person_id: int) -> dict[str, Any]:
        """R5: the creator removes someone; R1 keeps a staff member."""
        async with self.sessions() as session, session.begin():
            await log.participant(session, conversation_id, actor.id)
            conversation = await session.get(Conversation, conversation_id)
            member_ids = await log.member_ids(session, conversation_id)
            facts = await directory.facts(session, member_ids)
            membership.check_removal(actor.id, conversation.creator_id, person_id, [facts[m] for m in member_ids])
            seq, frame = await self._depart(session, conversation_id, actor, person_id, "member.removed")
        return await self._announce_departure(conversation_id, person_id, member_ids, seq, frame, "member.removed")

    async def leave(self, actor: Actor, conversation_id: int) -> dict[str, Any]:
        """R5: anyone leaves, except the last school-staff member (R1)."""
        async with self.sessions() as session, session.begin():
            await log.participant(session, conversation_id, actor.id)
            member_ids = await log.member_ids(session, conversation_id)
            facts = await directory.facts(session, member_ids)
            membership.check_departure(actor.id, [facts[m] for m in member_ids])
            seq, frame = await self._depart(session, conversation_id, actor, actor.id, "member.left")
        return await self._announce_departure(conversation_id, actor.id, member_ids, seq, frame, "member.left")

    async def _depart(self, session, conversation_id: int, actor: Actor, person_id: int, kind: str) -> tuple[int, str]:
        # The conversation row first, then the participant: the lock order of a
        # send (chat.conversations.sending), so a departure and a batch of sends cannot deadlock.
        seq = await log.next_seq(session, conversation_id)
        row = await session.get(Participant, (conversation_id, person_id))
        row.active, row.left_at = False, utcnow()
        people = await directory.names(session, [actor.id, person_id])
        if kind == "member.left":
            system = system_text("system.left", {"actor": actor.name})
        else:
            system = system_text("system.removed", {"actor": actor.name, "names": people[person_id].name})
        return await log.append(session, conversation_id, kind, actor.id, seq=seq, person=person_id, system=system)

    async def _announce_departure(
        self, conversation_id: int, person_id: int, member_ids: list[int], seq: int, frame: str, kind: str
    ) -> dict[str, Any]:
        # The departing person gets this last event too, then nothing more.
        await self.hub.publish_event(conversation_id, seq, member_ids, frame)
        await self.hub.publish_person(
            person_id, "leave",
            dumps({"type": "conversation.left", "conversation_id": conversation_id, "seq": seq, "reason": kind}),
            conversation_id, seq,
        )
        return {"conversation_id": conversation_id, "seq": seq}

    async def set_lock(self, actor: Actor, conversation_id: int, locked: bool, reason: str | None = None) -> dict[str, Any]:
        """R10: direction of the conversation's school locks or unlocks it; members see it live."""
        membership.check_lock_reason(reason)
        async with self.sessions() as session, session.begin():
            conversation = await conversation_directed_by(session, actor, conversation_id)
            if locked:
                conversation.locked_at, conversation.locked_by, conversation.lock_reason = utcnow(), actor.id, reason
            else:
                if conversation.locked_at is None:
                    raise Conflict("conversation.not_locked")
                conversation.locked_at, conversation.locked_by, conversation.lock_reason = None, None, None
            kind = "conversation.locked" if locked else "conversation.unlocked"
            seq, frame = await log.append(
                session, conversation_id, kind, actor.id, reason=reason,
                system=system_text("system.locked" if locked else "system.unlocked", {"actor": actor.name}))
            audit(session, actor, conversation.school_id, kind, f"conversation:{conversation_id}", reason=reason)
            members = await log.member_ids(session, conversation_id)
        await self.hub.publish_event(conversation_id, seq, members, frame)
        return {"conversation_id": conversation_id, "seq": seq, "locked": locked}
