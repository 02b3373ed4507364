"""A conversation's list entry as one person sees it, and unread counts (R4, R8, R10, R11)."""

from __future__ import annotations

from typing import Any, Sequence

from chat.frames import timestamp
from chat.storage import queries
from chat.storage.executor import Executor, statements


async def unread(executor: Executor, person_id: int, conversation_ids: Sequence[int]) -> dict[int, int]:
    """Per conversation: messages by others, not retracted, after the person's read
    marker and visible to them."""
    if not conversation_ids:
        return {}
    return dict((await executor.execute(queries.UNREAD, {"person": person_id, "ids": list(conversation_ids)})).all())


async def summary(executor: Executor, conversation: Any, person_id: int) -> dict[str, Any]:
    return (await summaries(executor, [conversation], person_id))[0]


async def summaries(executor: Executor, conversations: Sequence[Any], person_id: int) -> list[dict[str, Any]]:
    """The list entries of ``conversations`` as ``person_id`` sees them: prebuilt
    statements as plain rows (an ORM session's Core connection: no ORM objects)."""
    if not conversations:
        return []
    ids = [c.id for c in conversations]
    connection = await statements(executor)
    members: dict[int, list[dict[str, Any]]] = {}
    for cid, pid, name, role in (await connection.execute(queries.SUMMARY_MEMBERS, {"ids": ids})).all():
        members.setdefault(cid, []).append({"id": pid, "name": name, "role": role})
    mine = {p.conversation_id: p for p in (await connection.execute(
        queries.SUMMARY_MINE, {"ids": ids, "person": person_id})).all()}
    last = {m.conversation_id: m for m in (await connection.execute(queries.SUMMARY_LAST, {"ids": ids})).all()}
    counts = await unread(connection, person_id, list(mine))
    schools = {s.id: s for s in (await connection.execute(
        queries.SUMMARY_SCHOOLS, {"ids": sorted({c.school_id for c in conversations})})).all()}
    children = {s.id: s for s in (await connection.execute(
        queries.SUMMARY_CHILDREN, {"ids": sorted({c.child_id for c in conversations if c.child_id})})).all()}
    result = []
    for c in conversations:
        participant = mine.get(c.id)
        message = last.get(c.id)
        if message is not None and participant is not None and message.seq < participant.visible_from_seq:
            message = None
        child = children.get(c.child_id)
        school = schools.get(c.school_id)
        result.append({
            "id": c.id,
            "name": c.name,
            "school_id": c.school_id,
            "child": {"id": child.id, "name": f"{child.first_name} {child.last_name}"} if child else None,
            "creator_id": c.creator_id,
            "members": members.get(c.id, []),
            "last_seq": c.last_seq,
            "visible_from_seq": participant.visible_from_seq if participant else 1,
            "read_seq": participant.last_read_seq if participant else 0,
            "unread": counts.get(c.id, 0),
            "last_message": None if message is None else {
                "id": message.id, "seq": message.seq, "author": message.author_id,
                "text": "" if message.retracted_at else message.text,
                "retracted": message.retracted_at is not None,
                "created_at": timestamp(message.created_at),
            },
            # R10: members see that direction locked it.
            "locked": c.locked_at is not None,
            "lock_reason": c.lock_reason,
            # R11: the response-delay notice, in both languages.
            "notice": {"fr": school.notice_fr, "en": school.notice_en} if school else None,
        })
    return result
