"""Group commit for ``message.send``: the sends waiting at one moment share one
transaction and a handful of set-based statements.

Why: one send alone costs a dozen statements and a commit, and each statement
costs more in SQLAlchemy than in the database.  While one batch is being
written, the sends that arrive meanwhile queue up, and the next batch takes them all
(up to :data:`MAX_BATCH`).  Under light load a batch is a single send, so
latency does not grow; under heavy load the cost per message falls.  In
between — sends arriving steadily, each batch small — a batch that follows
another within :data:`BUSY_WINDOW` first lingers :data:`LINGER` for company:
a transaction's fixed cost is most of a lone send's, so a few milliseconds
of waiting keep the worker from saturating on one-message transactions.

Each send in a batch is checked exactly as a lone send would be (the same
errors in the same order: idempotent retry, membership, conversation found,
R18 feature, R10 lock), and a refused send changes nothing.  Nothing is
acknowledged or fanned out before the batch has committed (non-negotiable 3).
If the batch itself fails (two workers racing on one ``client_id``, a
deadlock) it is rolled back and every send in it is retried alone, on the
ordinary path, which knows how to answer each case.

Sends with attachments take the ordinary path (R7 checks each upload).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, insert, select, text, update

from chat.clock import utcnow
from chat.errors import ChatError, Conflict, NotFound
from chat.frames import event_frame, timestamp
from chat.policies import features
from chat.service import Actor, ChatService, retry_reply, sent_reply
from chat.storage import direct
from chat.storage.models import Conversation, Event, Message, Participant, Person

log = logging.getLogger("chat.sending")

# At most this many sends share a transaction: enough to amortise the commit,
# small enough that the first of them is not kept waiting long.
MAX_BATCH = 128
# A batch that starts within BUSY_WINDOW of the previous one's end waits LINGER
# first (unless LINGER_ENOUGH sends are already waiting).
BUSY_WINDOW = 0.010
LINGER = 0.002
LINGER_ENOUGH = 16
# Batches written at once on PostgreSQL (SQLite: one, its single connection).
PIPELINE = 8

_MESSAGES = Message.__table__
_EVENTS = Event.__table__
_PARTICIPANTS = Participant.__table__
_CONVERSATIONS = Conversation.__table__
_PEOPLE = Person.__table__

# The statements are built once (building one costs more than running these small look-ups).
_EXISTING_BY_SIZE: dict[int, Any] = {}


def _existing(size: int):
    """The messages already committed for ``size`` (author, client_id) pairs —
    the parameters ``a0, c0, a1, c1, …`` — built once per size.  The pairs are a
    VALUES list joined to the message table: SQLite answers a row-value
    ``(author_id, client_id) IN (VALUES …)`` by scanning the whole unique index
    (a batch then cost time in proportion to every message ever sent), while
    the join looks each pair up in it.  The casts give PostgreSQL the columns' types."""
    statement = _EXISTING_BY_SIZE.get(size)
    if statement is None:
        m = _MESSAGES.c
        pairs = ", ".join(f"(CAST(:a{i} AS BIGINT), CAST(:c{i} AS VARCHAR(64)))" for i in range(size))
        statement = _EXISTING_BY_SIZE[size] = text(
            f"WITH sent (author_id, client_id) AS (VALUES {pairs}) "
            f"SELECT m.id, m.author_id, m.client_id, m.conversation_id, m.seq, m.created_at "
            f"FROM sent JOIN {_MESSAGES.name} AS m ON m.author_id = sent.author_id AND m.client_id = sent.client_id"
        ).columns(m.id, m.author_id, m.client_id, m.conversation_id, m.seq, m.created_at)
    return statement


# The conversations, locked in id order (PostgreSQL, FOR NO KEY UPDATE as an
# UPDATE takes; SQLite's write transaction is exclusive already) so their seqs
# are ours to hand out.
_CONVERSATIONS_LOCKED = select(
    _CONVERSATIONS.c.id, _CONVERSATIONS.c.school_id, _CONVERSATIONS.c.child_id, _CONVERSATIONS.c.name,
    _CONVERSATIONS.c.locked_at, _CONVERSATIONS.c.last_seq).where(
    _CONVERSATIONS.c.id.in_(bindparam("ids", expanding=True))).order_by(_CONVERSATIONS.c.id).with_for_update(
    key_share=True)
# Active members with what the notifier needs of them (R15: role, own hours).
_MEMBERS = select(_PARTICIPANTS.c.conversation_id, _PARTICIPANTS.c.person_id, _PEOPLE.c.role,
                  _PEOPLE.c.working_hours).join(_PEOPLE, _PEOPLE.c.id == _PARTICIPANTS.c.person_id).where(
    _PARTICIPANTS.c.conversation_id.in_(bindparam("ids", expanding=True)), _PARTICIPANTS.c.active == True)  # noqa: E712
# The columns a send writes (the others have no default: NULL).
_MESSAGE_COLUMNS = ("conversation_id", "seq", "author_id", "client_id", "text", "version", "created_at")
_MESSAGE_RETURNING = (_MESSAGES.c.id, _MESSAGES.c.conversation_id, _MESSAGES.c.seq)
_INSERT_EVENTS = insert(_EVENTS)

_SET_LAST_SEQ = (
    update(_CONVERSATIONS)
    .where(_CONVERSATIONS.c.id == bindparam("cid"))
    .values(last_seq=bindparam("seq"), last_message_at=bindparam("at"))
)
_SET_READ = (
    update(_PARTICIPANTS)
    .where(_PARTICIPANTS.c.conversation_id == bindparam("cid"), _PARTICIPANTS.c.person_id == bindparam("pid"))
    .values(last_read_seq=bindparam("seq"))
)


@dataclass(eq=False)
class Send:
    """One ``message.send`` waiting for its batch."""

    actor: Actor
    conversation_id: int
    client_id: str
    text: str
    future: asyncio.Future
    # Filled in while the batch is written:
    seq: int = 0
    message_id: int = 0
    frame: str = ""
    members: list[int] = field(default_factory=list)
    same_as: "Send | None" = None  # a repeat of an earlier, accepted send in the same batch
    refused: ChatError | None = None


@dataclass(eq=False)
class _Turn:
    """A batch's place in line for its conversation locks.  Batches written at
    once must lock in the order they were taken, or a later batch could take a
    conversation's next seqs before an earlier one (a parent's two quick
    messages swapped): each asks for its locks only once the batch before it
    holds its own (or has given up), then may wait in the database for them."""

    after: "_Turn | None"
    done: asyncio.Future

    async def wait(self) -> None:
        if self.after is not None and not self.after.done.done():
            await asyncio.shield(self.after.done)
        self.after = None  # let the chain of finished turns be collected

    def take(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class SendBatcher:
    """Gathers waiting sends into batches.  On PostgreSQL up to
    :data:`PIPELINE` batches are written at once, each on its own connection:
    while one waits for its commit to reach the disk the next is already
    being checked and written.  A second batch starts beside the first at
    once, a third or more only once LINGER_ENOUGH sends per batch in flight
    beyond the first are waiting; until then the sends that arrive wait for a
    batch to end and share the next.  Starting a batch for every two or three
    sends kept all eight in flight at a quarter of capacity, and their round
    trips, interleaved on the one event loop, made each batch 20-40 ms long
    instead of 8 (p50 / p99 send -> receive at a quarter of capacity 25 / 78-120
    ms; after, 16 / 35 ms; bench/).  One batch at a time cost light traffic
    instead (p50 at a tenth of capacity 10-12 ms against 8-10): a send arriving
    during a batch waited for it, where a second batch takes it at once.  Two batches
    touching one conversation still take its seqs in the order they were taken
    (:class:`_Turn`, then the conversation's row lock).  SQLite's single
    connection writes one batch at a time."""

    def __init__(self, service: ChatService, pipeline: int = 1) -> None:
        self.service = service
        self.pipeline = pipeline
        self._waiting: list[Send] = []
        self._task: asyncio.Task | None = None
        self._arrived: asyncio.Event | None = None  # set by a send while the drain waits on batches
        self.batches = 0
        self.sent = 0
        self.writing_peak = 0  # the most batches ever written at once
        self._last_end = float("-inf")  # loop time the previous batch ended
        self._last_turn: _Turn | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def send(self, actor: Actor, conversation_id: int, client_id: str, text: str) -> dict[str, Any]:
        # The loop is looked up once: on Python 3.11 every get_running_loop() is a getpid() system call.
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append(Send(actor, conversation_id, client_id, text, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        elif self._arrived is not None:
            self._arrived.set()
        return await future

    async def _drain(self) -> None:
        writing: set[asyncio.Task] = set()
        try:
            loop = asyncio.get_running_loop()
            while self._waiting or writing:
                # A second batch beside the first at once; a third or more only for LINGER_ENOUGH
                # waiting sends per batch in flight beyond the first: a few sends wait for a batch
                # being written and share the next (see SendBatcher).
                if not self._waiting or len(writing) >= self.pipeline or (
                        len(self._waiting) < LINGER_ENOUGH * (len(writing) - 1)):
                    # Wait for a batch to end — or, with room for another, for a send to arrive.
                    wake = None
                    if len(writing) < self.pipeline:
                        self._arrived = asyncio.Event()
                        wake = asyncio.ensure_future(self._arrived.wait())
                    try:
                        await asyncio.wait(writing | ({wake} if wake else set()), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        self._arrived = None
                        if wake is not None:
                            wake.cancel()
                    writing = {task for task in writing if not task.done()}
                    continue
                if len(self._waiting) < LINGER_ENOUGH and loop.time() - self._last_end < BUSY_WINDOW:
                    await asyncio.sleep(LINGER)
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                # A request cancelled before its batch (its socket closed) is not written.
                batch = [item for item in batch if not item.future.done()]
                if batch:
                    # Batches lock their conversations in the order they were taken (below).
                    turn = _Turn(after=self._last_turn, done=loop.create_future())
                    self._last_turn = turn
                    writing.add(asyncio.ensure_future(self._batch(batch, turn)))
                    self.writing_peak = max(self.writing_peak, len(writing))
        except BaseException as exc:  # cancelled (shutdown): every sender still waiting is told
            for task in writing:
                task.cancel()
            for item in self._waiting:
                self._refuse(item, exc if isinstance(exc, Exception) else ChatError("internal.error"))
            self._waiting = []
            raise
        finally:
            self._task = None

    async def _batch(self, batch: list[Send], turn: "_Turn") -> None:
        try:
            await self._run(batch, turn)
        except Exception as exc:  # never leave a sender waiting forever
            log.exception("a batch of sends failed after its commit")
            for item in batch:
                self._refuse(item, exc)
        except BaseException:
            for item in batch:
                self._refuse(item, ChatError("internal.error"))
            raise
        finally:
            turn.take()  # a batch that failed before locking must not hold the next one up
            self._last_end = asyncio.get_running_loop().time()

    async def _run(self, batch: list[Send], turn: "_Turn | None" = None) -> None:
        try:
            accepted, now = await self._write(batch, turn)
        except Exception as exc:
            # Nothing of this batch was committed: each send goes again alone,
            # where a lost race on a client_id becomes a duplicate answer (and,
            # after a database restart, on a new connection).  An outage is logged once, not per batch.
            if (len(batch) > 1 or not isinstance(exc, ChatError)) and not self.service.database.outage(exc):
                log.info("batch of %d sends rolled back (%s); sending one by one", len(batch), type(exc).__name__)
            await asyncio.gather(*(self._alone(item) for item in batch if not item.future.done()))
            return
        self.batches += 1
        self.sent += len(accepted)
        await self.service.hub.publish_events(
            (item.conversation_id, item.seq, item.members, item.frame) for item in accepted)
        for item in batch:
            if item.future.done():
                continue
            first = item.same_as or item
            item.future.set_result(sent_reply(first.conversation_id, first.message_id, first.seq, first.client_id,
                                              now, duplicate=item.same_as is not None))

    async def _alone(self, item: Send) -> None:
        try:
            result = await self.service._send_one(item.actor, item.conversation_id, item.client_id, item.text, ())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
            if not item.future.done():
                item.future.set_exception(exc)
            return
        if not item.future.done():
            item.future.set_result(result)

    @staticmethod
    def _refuse(item: Send, exc: Exception) -> None:
        if not item.future.done():
            item.future.set_exception(exc)

    async def _write(self, batch: list[Send], turn: "_Turn | None" = None) -> tuple[list[Send], Any]:
        """One transaction for the batch; returns the sends it accepted."""
        service = self.service
        conversation_ids = sorted({item.conversation_id for item in batch})
        # On the driver's connection: SQLAlchemy's execute cost more than these statements (chat.storage.direct).
        async with direct.transaction(service.engine) as session:
            # Retries of sends already committed (a lost acknowledgement).
            pairs = list({(item.actor.id, item.client_id) for item in batch})
            values = {}
            for i, (author, client) in enumerate(pairs):
                values[f"a{i}"], values[f"c{i}"] = author, client
            existing = {(author, client): (mid, cid, seq, created) for mid, author, client, cid, seq, created in (
                await session.execute(_existing(len(pairs)), values)).all()}
            if turn is not None:
                await turn.wait()
            conversations = {row.id: row for row in (
                await session.execute(_CONVERSATIONS_LOCKED, {"ids": conversation_ids})).all()}
            if turn is not None:
                turn.take()
            members: dict[int, list[int]] = {}
            people: dict[int, tuple[str, str | None]] = {}
            for cid, pid, role, hours in (await session.execute(_MEMBERS, {"ids": conversation_ids})).all():
                members.setdefault(cid, []).append(pid)
                people[pid] = (role, hours)
            now = utcnow()
            last_seq = {cid: row.last_seq for cid, row in conversations.items()}
            accepted: list[Send] = []
            first_of: dict[tuple[int, str], Send] = {}
            for item in batch:
                key = (item.actor.id, item.client_id)
                done = existing.get(key)
                if done is not None:
                    try:
                        answer = retry_reply(item.conversation_id, item.client_id, *done)
                    except ChatError as exc:
                        self._refuse(item, exc)
                    else:
                        if not item.future.done():
                            item.future.set_result(answer)
                    continue
                earlier = first_of.get(key)
                if earlier is not None:
                    if earlier.conversation_id != item.conversation_id:
                        self._refuse(item, Conflict("message.client_id_reused"))
                    elif earlier.refused is not None:
                        self._refuse(item, earlier.refused)  # the same send, refused the same way
                    else:
                        item.same_as = earlier  # accepted: the repeat names its message
                    continue
                first_of[key] = item
                try:
                    await self._check(session, item, conversations, members)
                except ChatError as exc:
                    item.refused = exc
                    self._refuse(item, exc)
                    continue
                seq = last_seq[item.conversation_id] = last_seq[item.conversation_id] + 1
                item.seq = seq
                item.members = members[item.conversation_id]
                accepted.append(item)
            if not accepted:
                return [], now
            await session.execute(_SET_LAST_SEQ, [
                {"cid": cid, "seq": seq, "at": now} for cid, seq in last_seq.items()
                if seq != conversations[cid].last_seq])
            ids: dict[tuple[int, int], int] = {}
            for chunk in direct.runs(accepted, MAX_BATCH):
                rows = [{"conversation_id": item.conversation_id, "seq": item.seq, "author_id": item.actor.id,
                         "client_id": item.client_id, "text": item.text, "version": 1, "created_at": now}
                        for item in chunk]
                # The returned rows come in no promised order: (conversation, seq) names each message.
                for message_id, cid, seq in await session.insert_rows(
                        _MESSAGES, _MESSAGE_COLUMNS, rows, _MESSAGE_RETURNING):
                    ids[cid, seq] = message_id
            at = timestamp(now)
            events = []
            for item in accepted:
                item.message_id = message_id = ids[item.conversation_id, item.seq]
                item.frame = event_frame(
                    "message.new", item.conversation_id, item.seq, item.actor.id, now,
                    message={"id": message_id, "client_id": item.client_id, "author": item.actor.id,
                             "text": item.text, "created_at": at, "version": 1, "attachments": []})
                events.append({"conversation_id": item.conversation_id, "seq": item.seq, "kind": "message.new",
                               "actor_id": item.actor.id, "message_id": message_id, "frame": item.frame,
                               "created_at": now})
            await session.execute(_INSERT_EVENTS, events)
            # One's own message is read (the latest of one's sends per conversation).
            read = {(item.conversation_id, item.actor.id): item.seq for item in accepted}
            await session.execute(_SET_READ, [{"cid": cid, "pid": pid, "seq": seq} for (cid, pid), seq in read.items()])
            await service.notifier.add(session, [
                service._pending(conversations[item.conversation_id], pid, "message", "notify.message", item.actor,
                                 {"message_id": item.message_id})
                for item in accepted for pid in item.members if pid != item.actor.id], people=people)
        return accepted, now

    async def _check(self, session, item: Send, conversations: dict, members: dict[int, list[int]]) -> None:
        """The lone path's checks, in its order: member, conversation, R18, R10."""
        conversation = conversations.get(item.conversation_id)
        if conversation is None or item.actor.id not in members.get(item.conversation_id, ()):
            raise NotFound("conversation.not_found", conversation_id=item.conversation_id)
        features.require(await self.service.school_features(session, conversation.school_id), "messaging")
        if conversation.locked_at is not None:
            raise Conflict("conversation.locked")
