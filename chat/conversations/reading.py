"""Reading conversations: the list, one entry, history pages, the hub's replay,
the resume facts (:mod:`chat.policies.resume` decides), and the
refresh of connections after a broker outage."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from chat.protocol import HISTORY_LIMIT
from chat.conversations import log
from chat.conversations.summaries import summaries, summary
from chat.errors import BadRequest, NotFound
from chat.frames import dumps
from chat.hub import CLOSE_UNAUTHENTICATED, Hub
from chat.people import Actor
from chat.policies import resume
from chat.storage import direct, queries
from chat.storage.models import AuthSession, Conversation, Event, Participant

# History pages: 50 by default, 200 at most (about one screen to a few screens).
HISTORY_MAX = 200


class Reading:
    """What a member reads of their conversations."""

    def __init__(self, *, engine: AsyncEngine, sessions: async_sessionmaker) -> None:
        self.engine = engine
        self.sessions = sessions
        self.hub: Hub | None = None  # set by chat.app once the hub (which replays through this) exists

    async def list_conversations(self, actor: Actor) -> list[dict[str, Any]]:
        """My active conversations, most recent activity first, with unread counts
        (read by every new connection: on the driver's connection, chat.storage.direct)."""
        async with direct.reading(self.engine) as connection:
            conversations = await connection.execute(queries.MY_CONVERSATIONS, {"person": actor.id})
            return await summaries(connection, conversations, actor.id)

    async def conversation(self, actor: Actor, conversation_id: int) -> dict[str, Any]:
        """One list entry, for a member."""
        async with self.sessions() as session:
            await log.participant(session, conversation_id, actor.id)
            conversation = await session.get(Conversation, conversation_id)
            return await summary(session, conversation, actor.id)

    async def history(
        self, actor: Actor, conversation_id: int, after: int | None = None, before: int | None = None,
        limit: int = HISTORY_LIMIT,
    ) -> list[str]:
        """A page of a conversation's events as stored frames, oldest first.

        ``after=N`` pages forward (seq > N), ``before=N`` backward (seq < N, the
        newest page first when neither is given).  Only what the member may see:
        from their ``visible_from_seq`` (R4), never retracted text (R8).
        """
        if not 1 <= limit <= HISTORY_MAX:
            raise BadRequest("request.invalid", detail=f"limit must be 1–{HISTORY_MAX}")
        if after is not None and before is not None:
            raise BadRequest("request.invalid", detail="give after or before, not both")
        async with self.sessions() as session:
            participant = await log.participant(session, conversation_id, actor.id)
            query = select(Event.seq, Event.frame).where(
                Event.conversation_id == conversation_id, Event.seq >= participant.visible_from_seq)
            if after is not None:
                rows = (await session.execute(query.where(Event.seq > after).order_by(Event.seq).limit(limit))).all()
            else:
                if before is not None:
                    query = query.where(Event.seq < before)
                rows = list(reversed((await session.execute(query.order_by(Event.seq.desc()).limit(limit))).all()))
        return [frame for _, frame in rows]

    async def replay(self, person_id: int, conversation_id: int, after: int, limit: int) -> list[tuple[int, str]]:
        """Events after ``after`` that ``person_id`` may see now (used by the hub's gap fill)."""
        async with self.sessions() as session:
            participant = await session.get(Participant, (conversation_id, person_id))
            if participant is None or not participant.active:
                raise NotFound("conversation.not_found", conversation_id=conversation_id)
            start = max(after, participant.visible_from_seq - 1)
            rows = (await session.execute(
                select(Event.seq, Event.frame)
                .where(Event.conversation_id == conversation_id, Event.seq > start)
                .order_by(Event.seq).limit(limit)
            )).all()
        return [(seq, frame) for seq, frame in rows]

    async def positions(self, person_id: int) -> dict[int, int]:
        """Active conversation id → last seq, read when a connection becomes ready."""
        async with direct.reading(self.engine) as connection:
            return dict(await connection.tuples(queries.POSITIONS, {"person": person_id}))

    async def active_conversation_ids(self, person_id: int) -> list[int]:
        async with direct.reading(self.engine) as connection:
            return [row[0] for row in await connection.tuples(queries.ACTIVE, {"person": person_id})]

    async def resume_checks(self, person_id: int, positions: dict[int, int]) -> dict[int, str | None]:
        """Per conversation of ``positions`` (id -> the client's last seq): None when
        the hub can replay from there; else why the client must reload it
        (:func:`chat.policies.resume.reason_to_reload`).  One read for them all:
        a reconnecting client names every conversation it has open."""
        if not positions:
            return {}
        async with direct.reading(self.engine) as connection:
            found = {cid: (visible_from, last_seq) for cid, visible_from, last_seq in await connection.tuples(
                queries.RESUMABLE, {"person": person_id, "ids": list(positions)})}
        return {cid: resume.reason_to_reload(position, found.get(cid)) for cid, position in positions.items()}

    async def refresh_connections(self) -> None:
        """Re-read what person-channel messages may have carried during a broker
        outage: sign-outs (R21) close connections, new memberships subscribe,
        lost ones unsubscribe."""
        hub = self.hub
        person_ids = list(hub.by_person)
        if not person_ids:
            return
        async with self.sessions() as session:
            connected = {conn.session_id for pid in person_ids for conn in hub.by_person.get(pid, ())}
            ended = set((await session.execute(select(AuthSession.id).where(
                AuthSession.id.in_(connected), AuthSession.ended_at.is_not(None)))).scalars())
            rows = (await session.execute(
                select(Participant.person_id, Participant.conversation_id)
                .where(Participant.person_id.in_(person_ids), Participant.active == True)  # noqa: E712
            )).all()
        active: dict[int, set[int]] = {}
        for pid, cid in rows:
            active.setdefault(pid, set()).add(cid)
        for pid in person_ids:
            for conn in list(hub.by_person.get(pid, ())):
                if conn.session_id in ended:
                    conn.push(dumps({"type": "signed_out"}))
                    await conn.close(CLOSE_UNAUTHENTICATED, "signed out", flush=1.0)
                    continue
                mine = active.get(pid, set())
                for cid in set(conn.positions) - mine:
                    await hub.leave(conn, cid, dumps(
                        {"type": "conversation.left", "conversation_id": cid, "reason": "member.removed"}))
                for cid in mine - set(conn.positions) - conn.filling:
                    async with self.sessions() as session:
                        conversation = await session.get(Conversation, cid)
                        entry = await summary(session, conversation, pid)
                    await hub.join(conn, cid, entry["last_seq"],
                                   dumps({"type": "conversation.joined", "conversation": entry}), replay=False)

