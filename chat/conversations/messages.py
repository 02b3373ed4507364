"""Acting on posted messages: edit (R8, R9), retract (R8, R9), react (R6), read markers, typing.

Each is checked, written with its event in one transaction, committed, then
published (non-negotiable 3).
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from chat.clock import utcnow
from chat.conversations import log
from chat.conversations.summaries import unread
from chat.errors import BadRequest, Conflict, NotFound
from chat.frames import dumps, timestamp
from chat.hub import Hub
from chat.i18n import system_text
from chat.people import Actor
from chat.policies import messages
from chat.schools import Schools
from chat.storage.models import Conversation, Event, Message, MessageVersion, Participant, Reaction


async def visible_message(session: Any, actor: Actor, message_id: int) -> Message:
    """The message, if ``actor`` is an active member who may see it (R4); else message.not_found."""
    message = await session.get(Message, message_id)
    if message is None:
        raise NotFound("message.not_found", message_id=message_id)
    row = await session.get(Participant, (message.conversation_id, actor.id))
    if row is None or not row.active or message.seq < row.visible_from_seq:
        raise NotFound("message.not_found", message_id=message_id)
    return message


class Messages:
    """Edit, retract, react, mark read, typing."""

    def __init__(self, *, sessions: async_sessionmaker, hub: Hub, schools: Schools, notifier: Any) -> None:
        self.sessions = sessions
        self.hub = hub
        self.schools = schools
        self.notifier = notifier

    async def edit(self, actor: Actor, message_id: int, text: str) -> dict[str, Any]:
        """R8: the author edits; R9: the earlier text is kept as a version."""
        messages.check_text(text)
        async with self.sessions() as session, session.begin():
            message = await visible_message(session, actor, message_id)
            messages.check_change(actor.id, message.author_id, message.retracted_at is not None)
            await self.schools.writable(session, message.conversation_id)
            session.add(MessageVersion(message_id=message.id, version=message.version, text=message.text,
                                       created_at=message.edited_at or message.created_at))
            message.version += 1
            message.text = text
            message.edited_at = utcnow()
            seq, frame = await log.append(
                session, message.conversation_id, "message.edited", actor.id, message_id=message.id,
                message={"id": message.id, "text": text, "version": message.version,
                         "edited_at": timestamp(message.edited_at)},
            )
            members = await log.member_ids(session, message.conversation_id)
        await self.hub.publish_event(message.conversation_id, seq, members, frame)
        return {"message_id": message.id, "seq": seq, "version": message.version}

    async def retract(self, actor: Actor, message_id: int) -> dict[str, Any]:
        """R8: the author removes a message from the conversation.  R9: it is kept
        (text and versions) for direction's archive; members see "message removed"."""
        async with self.sessions() as session, session.begin():
            message = await visible_message(session, actor, message_id)
            messages.check_change(actor.id, message.author_id, message.retracted_at is not None)
            await self.schools.writable(session, message.conversation_id)
            message.retracted_at = utcnow()
            # Members replaying the log must not see the text any more.
            earlier = (await session.execute(
                select(Event).where(Event.message_id == message.id, Event.conversation_id == message.conversation_id)
            )).scalars().all()
            for event in earlier:
                body = orjson.loads(event.frame)
                if "message" in body:
                    body["message"] = {"id": message.id, "author": message.author_id, "text": "",
                                       "retracted": True, "version": body["message"].get("version", 1),
                                       "created_at": body["message"].get("created_at")}
                    event.frame = dumps(body)
            seq, frame = await log.append(
                session, message.conversation_id, "message.retracted", actor.id, message_id=message.id,
                message={"id": message.id, "author": message.author_id, "text": "", "retracted": True},
                system=system_text("system.retracted"),
            )
            members = await log.member_ids(session, message.conversation_id)
        await self.hub.publish_event(message.conversation_id, seq, members, frame)
        return {"message_id": message.id, "seq": seq}

    async def react(self, actor: Actor, message_id: int, emoji: str, add: bool) -> dict[str, Any]:
        """R6: add or remove one's emoji reaction; every member sees the new count."""
        emoji = messages.check_emoji(emoji)
        async with self.sessions() as session, session.begin():
            message = await visible_message(session, actor, message_id)
            await self.schools.writable(session, message.conversation_id, "reactions")
            if message.retracted_at is not None:
                raise Conflict("message.retracted")
            existing = await session.get(Reaction, (message.id, actor.id, emoji))
            count_query = select(func.count()).select_from(Reaction).where(
                Reaction.message_id == message.id, Reaction.emoji == emoji)
            if (existing is not None) == add:  # nothing changes: answer with the current count
                count = (await session.execute(count_query)).scalar_one()
                return {"message_id": message.id, "emoji": emoji, "count": count, "changed": False}
            if add:
                session.add(Reaction(message_id=message.id, person_id=actor.id, emoji=emoji))
            else:
                await session.delete(existing)
            await session.flush()
            count = (await session.execute(count_query)).scalar_one()
            if add and message.author_id not in (None, actor.id):
                conversation = await session.get(Conversation, message.conversation_id)
                await self.notifier.add(session, [log.pending(
                    conversation, message.author_id, "reaction", "notify.reaction", actor,
                    {"message_id": message.id}, emoji=emoji)])
            seq, frame = await log.append(
                session, message.conversation_id, "reaction.added" if add else "reaction.removed", actor.id,
                reaction={"message_id": message.id, "emoji": emoji, "person": actor.id, "count": count},
            )
            members = await log.member_ids(session, message.conversation_id)
        await self.hub.publish_event(message.conversation_id, seq, members, frame)
        return {"message_id": message.id, "emoji": emoji, "count": count, "seq": seq, "changed": True}

    async def mark_read(self, actor: Actor, conversation_id: int, seq: int) -> dict[str, Any]:
        """Move the read marker forward (never back); the person's other devices follow."""
        async with self.sessions() as session, session.begin():
            participant = await log.participant(session, conversation_id, actor.id)
            conversation = await session.get(Conversation, conversation_id)
            if not 0 <= seq <= conversation.last_seq:
                raise BadRequest("read.invalid_seq", seq=seq, last_seq=conversation.last_seq)
            participant.last_read_seq = max(participant.last_read_seq, seq)
            if participant.last_read_seq >= conversation.last_seq:
                await self.notifier.read_conversation(session, actor.id, conversation_id)
            await session.flush()
            count = (await unread(session, actor.id, [conversation_id])).get(conversation_id, 0)
            position = participant.last_read_seq
        await self.hub.publish_person(actor.id, "frame", dumps(
            {"type": "read", "conversation_id": conversation_id, "seq": position, "unread": count}))
        return {"conversation_id": conversation_id, "seq": position, "unread": count}

    async def typing(self, actor: Actor, conversation_id: int) -> None:
        """An ephemeral 'is typing' to the other members; never stored."""
        async with self.sessions() as session:
            await log.participant(session, conversation_id, actor.id)
            await self.schools.writable(session, conversation_id)
            members = await log.member_ids(session, conversation_id)
        frame = dumps({"type": "typing", "conversation_id": conversation_id, "person": actor.id})
        await self.hub.publish_ephemeral(conversation_id, members, frame, exclude_person=actor.id)
