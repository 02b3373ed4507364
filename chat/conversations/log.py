"""The conversation event log: members, the gap-free seq, appending an event.

Every write of a conversation appends its event here in the writer's
transaction (non-negotiable 3: commit, then publish).  The functions take the
caller's :class:`~chat.storage.executor.Executor` (``participant`` the ORM
session: it returns the row to change).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from chat.clock import utcnow
from chat.errors import NotFound
from chat.frames import event_frame
from chat.notifications import Pending
from chat.storage import queries
from chat.storage.executor import Executor
from chat.storage.models import Conversation, Participant


async def participant(session: Any, conversation_id: int, person_id: int) -> Participant:
    """The caller's active membership, or conversation.not_found (never reveal more)."""
    row = await session.get(Participant, (conversation_id, person_id))
    if row is None or not row.active:
        raise NotFound("conversation.not_found", conversation_id=conversation_id)
    return row


async def member_ids(executor: Executor, conversation_id: int) -> list[int]:
    """The active members' ids."""
    return list((await executor.execute(queries.MEMBER_IDS, {"conversation": conversation_id})).scalars().all())


async def next_seq(executor: Executor, conversation_id: int, message: bool = False) -> int:
    """Allocate the next gap-free seq; the row lock orders concurrent writers."""
    values: dict[str, Any] = {"last_seq": Conversation.last_seq + 1}
    if message:
        values["last_message_at"] = utcnow()
    result = await executor.execute(
        update(Conversation).where(Conversation.id == conversation_id).values(**values).returning(Conversation.last_seq)
    )
    seq = result.scalar_one_or_none()
    if seq is None:
        raise NotFound("conversation.not_found", conversation_id=conversation_id)
    return seq


async def append(
    executor: Executor, conversation_id: int, kind: str, actor_id: int | None, message_id: int | None = None,
    seq: int | None = None, **data: Any,
) -> tuple[int, str]:
    """Log one event (allocating its seq unless given); returns (seq, frame)."""
    if seq is None:
        seq = await next_seq(executor, conversation_id)
    now = utcnow()
    frame = event_frame(kind, conversation_id, seq, actor_id, now, **data)
    await executor.execute(queries.INSERT_EVENT, {
        "conversation_id": conversation_id, "seq": seq, "kind": kind, "actor_id": actor_id,
        "message_id": message_id, "frame": frame, "created_at": now})
    return seq, frame


def pending(conversation: Any, person_id: int, kind: str, code: str, actor: Any,
            link: dict[str, Any], **fields: Any) -> Pending:
    """The notification (R15) that ``actor``'s action in ``conversation`` owes ``person_id``."""
    if not conversation.name:
        code += "_plain"  # no "(…)" after the sender when the conversation has no name
    return Pending(person_id=person_id, kind=kind, code=code,
                   fields={"sender": actor.name, "conversation": conversation.name or "", **fields},
                   link={"conversation_id": conversation.id, **link}, school_id=conversation.school_id,
                   child_id=conversation.child_id, conversation_id=conversation.id)
