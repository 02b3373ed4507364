"""The send path of ``message.send``: checked, committed in group, then fanned out.

The sends waiting at one moment share one transaction and a handful of
set-based statements (group commit): one send alone costs a dozen statements
and a commit, and each statement costs more in SQLAlchemy than in the
database.  While one batch is being written, the sends that arrive meanwhile
queue up, and the next batch takes them all (up to :data:`MAX_BATCH`).  Under
light load a batch is a single send, so latency does not grow; under heavy
load the cost per message falls.  In between — sends arriving steadily, each
batch small — a batch that follows another within :data:`BUSY_WINDOW` first
lingers :data:`LINGER` for company.

There is one way a send is written: in a batch, where a send alone is a
batch of one.  So the send rule (member? R18 switches on? R10 not locked?
:mod:`chat.policies.posting`), the retry look-up by (author, client_id)
(:func:`chat.storage.queries.existing_messages`), the R7 check of the uploads
a send attaches and the ``message.new`` event (:func:`message_new`) exist
once.  When a batch is rolled back (two workers racing on one ``client_id``,
a deadlock), each of its sends is written again as a batch of one, where a
lost race answers as a retry.  A refused send changes nothing.  Nothing is acknowledged or fanned out before its
transaction has committed (non-negotiable 3).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from chat.clock import utcnow
from chat.conversations import log
from chat.conversations.uploads import own_uploads, upload_view
from chat.errors import ChatError, Conflict
from chat.frames import event_frame, timestamp
from chat.hub import Hub
from chat.people import Actor
from chat.policies import attachments as attachment_rules
from chat.policies import messages, posting
from chat.schools import Schools
from chat.storage import direct, queries
from chat.storage.executor import Executor
from chat.storage.health import DatabaseHealth

logger = logging.getLogger("chat.sending")

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


def sent_reply(conversation_id: int, message_id: int, seq: int, client_id: str, created_at: Any,
               duplicate: bool) -> dict[str, Any]:
    """The answer to ``message.send`` (docs/protocol.md): a fresh send's, or a retry's."""
    return {"conversation_id": conversation_id, "message_id": message_id, "seq": seq, "client_id": client_id,
            "created_at": timestamp(created_at), "duplicate": duplicate}


def retry_reply(conversation_id: int, client_id: str, message_id: int, message_conversation_id: int, seq: int,
                created_at: Any) -> dict[str, Any]:
    """A send whose (author, client_id) is committed already: the same answer
    again, or ``message.client_id_reused`` when it named another conversation."""
    if message_conversation_id != conversation_id:
        raise Conflict("message.client_id_reused")
    return sent_reply(conversation_id, message_id, seq, client_id, created_at, duplicate=True)


def message_new(conversation_id: int, seq: int, author_id: int, created_at: Any, message_id: int, client_id: str,
                text: str, created: str, attachments: list[dict[str, Any]]) -> str:
    """The ``message.new`` event frame (docs/protocol.md), stored and fanned out as is."""
    return event_frame(
        "message.new", conversation_id, seq, author_id, created_at,
        message={"id": message_id, "client_id": client_id, "author": author_id, "text": text,
                 "created_at": created, "version": 1, "attachments": attachments})


async def committed(executor: Executor, pairs: Sequence[tuple[int, str]]) -> dict[tuple[int, str], tuple]:
    """(author, client_id) -> (message id, conversation id, seq, created_at) of the
    pairs already committed: the retry look-up of every send."""
    values = {}
    for i, (author, client) in enumerate(pairs):
        values[f"a{i}"], values[f"c{i}"] = author, client
    return {(author, client): (mid, cid, seq, created) for mid, author, client, cid, seq, created in (
        await executor.execute(queries.existing_messages(len(pairs)), values)).all()}


@dataclass(eq=False)
class Send:
    """One ``message.send`` waiting for its batch."""

    actor: Actor
    conversation_id: int
    client_id: str
    text: str
    future: asyncio.Future
    attachments: Sequence[str] = ()  # upload ids (R7), checked when the batch is written
    # Filled in while the batch is written:
    uploads: Sequence = ()
    seq: int = 0
    message_id: int = 0
    frame: str = ""
    members: list[int] = field(default_factory=list)
    same_as: "Send | None" = None  # a repeat of an earlier, accepted send in the same batch
    refused: ChatError | None = None


@dataclass(eq=False)
class Turn:
    """A batch's place in line for its conversation locks.  Batches written at
    once must lock in the order they were taken, or a later batch could take a
    conversation's next seqs before an earlier one (a parent's two quick
    messages swapped): each asks for its locks only once the batch before it
    holds its own (or has given up), then may wait in the database for them."""

    after: "Turn | None"
    done: asyncio.Future

    async def wait(self) -> None:
        if self.after is not None and not self.after.done.done():
            await asyncio.shield(self.after.done)
        self.after = None  # let the chain of finished turns be collected

    def take(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


def refuse(item: Send, exc: BaseException) -> None:
    """Hand ``exc`` to the request waiting on ``item``, if it still waits."""
    if not item.future.done():
        item.future.set_exception(exc)


class Sending:
    """``message.send``: checks the frame's fields, then gathers the sends (with or without
    attachments) into batches.  On PostgreSQL up to :data:`PIPELINE` batches are
    written at once, each on its own connection: while one waits for its commit
    the next is already being checked and written.  A second batch starts
    beside the first at once, a third or more only once LINGER_ENOUGH sends per
    batch in flight beyond the first are waiting; until then the sends that
    arrive wait for a batch to end and share the next (measurements:
    docs/architecture.md section 2, step 3).  Two batches touching one
    conversation still take its seqs in the order they were taken
    (:class:`Turn`, then the conversation's row lock).  SQLite's single
    connection writes one batch at a time."""

    def __init__(self, *, engine: AsyncEngine, hub: Hub, schools: Schools,
                 notifier: Any, database: DatabaseHealth, pipeline: int = 1) -> None:
        self.engine = engine
        self.hub = hub
        self.schools = schools
        self.notifier = notifier
        self.database = database
        self.pipeline = pipeline
        self._waiting: list[Send] = []
        self._task: asyncio.Task | None = None
        self._arrived: asyncio.Event | None = None  # set by a send while the drain waits on batches
        self.batches = 0
        self.sent = 0
        self.writing_peak = 0  # the most batches ever written at once
        self._last_end = float("-inf")  # loop time the previous batch ended
        self._last_turn: Turn | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def send(
        self, actor: Actor, conversation_id: int, client_id: str, text: str, attachments: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Commit, then fan out, then acknowledge.  Idempotent on (author, client_id):
        a retry after a lost ack returns the same message and sends nothing again.
        R7: up to ten of the sender's own uploads may be attached (text may then be empty)."""
        messages.check_client_id(client_id)
        attachment_ids = list(dict.fromkeys(attachments))
        attachment_rules.check_count(len(attachment_ids))
        if text or not attachment_ids:
            messages.check_text(text)
        return await self.enqueue(actor, conversation_id, client_id, text, attachment_ids)

    async def enqueue(self, actor: Actor, conversation_id: int, client_id: str, text: str,
                      attachments: Sequence[str] = ()) -> dict[str, Any]:
        """Wait for the batch that writes this (checked) send; its answer."""
        # The loop is looked up once: on Python 3.11 every get_running_loop() is a getpid() system call.
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append(Send(actor, conversation_id, client_id, text, future, attachments))
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
                # being written and share the next (see Sending).
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
                    turn = Turn(after=self._last_turn, done=loop.create_future())
                    self._last_turn = turn
                    writing.add(asyncio.ensure_future(self._batch(batch, turn)))
                    self.writing_peak = max(self.writing_peak, len(writing))
        except BaseException as exc:  # cancelled (shutdown): every sender still waiting is told
            for task in writing:
                task.cancel()
            for item in self._waiting:
                refuse(item, exc if isinstance(exc, Exception) else ChatError("internal.error"))
            self._waiting = []
            raise
        finally:
            self._task = None

    async def _batch(self, batch: list[Send], turn: Turn) -> None:
        try:
            await self._run(batch, turn)
        except Exception as exc:  # never leave a sender waiting forever
            logger.exception("a batch of sends failed after its commit")
            for item in batch:
                refuse(item, exc)
        except BaseException:
            for item in batch:
                refuse(item, ChatError("internal.error"))
            raise
        finally:
            turn.take()  # a batch that failed before locking must not hold the next one up
            self._last_end = asyncio.get_running_loop().time()

    async def _run(self, batch: list[Send], turn: Turn | None = None) -> None:
        try:
            accepted, now = await self._write(batch, turn)
        except Exception as exc:
            # Nothing of this batch was committed: each send goes again alone,
            # where a lost race on a client_id becomes a duplicate answer (and,
            # after a database restart, on a new connection).  An outage is logged once, not per batch.
            if (len(batch) > 1 or not isinstance(exc, ChatError)) and not self.database.outage(exc):
                logger.info("batch of %d sends rolled back (%s); sending one by one", len(batch), type(exc).__name__)
            await asyncio.gather(*(self._alone(item) for item in batch if not item.future.done()))
            return
        await self._deliver(batch, accepted, now)

    async def _deliver(self, batch: list[Send], accepted: list[Send], now: Any) -> None:
        """After the commit: fan the accepted sends out, then answer every send."""
        self.batches += 1
        self.sent += len(accepted)
        await self.hub.publish_events(
            (item.conversation_id, item.seq, item.members, item.frame) for item in accepted)
        for item in batch:
            if item.future.done():
                continue
            first = item.same_as or item
            item.future.set_result(sent_reply(first.conversation_id, first.message_id, first.seq, first.client_id,
                                              now, duplicate=item.same_as is not None))

    async def _alone(self, item: Send) -> None:
        """A send of a rolled-back batch, written again as a batch of one.  If it
        fails because another worker committed the same (author, client_id)
        meanwhile, the answer is that message's, as for any retry."""
        try:
            try:
                accepted, now = await self._write([item])
            except Exception:
                async with direct.reading(self.engine) as executor:
                    done = (await committed(executor, [(item.actor.id, item.client_id)])).get(
                        (item.actor.id, item.client_id))
                if done is None:
                    raise
                answer = retry_reply(item.conversation_id, item.client_id, *done)
                if not item.future.done():
                    item.future.set_result(answer)
                return
            await self._deliver([item], accepted, now)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
            refuse(item, exc)

    async def _write(self, batch: list[Send], turn: Turn | None = None) -> tuple[list[Send], Any]:
        """One transaction for the batch; returns the sends it accepted."""
        conversation_ids = sorted({item.conversation_id for item in batch})
        # On the driver's connection: SQLAlchemy's execute cost more than these statements (chat.storage.direct).
        async with direct.transaction(self.engine) as session:
            # Retries of sends already committed (a lost acknowledgement).
            existing = await committed(session, list({(item.actor.id, item.client_id) for item in batch}))
            if turn is not None:
                await turn.wait()
            conversations = {row.id: row for row in (
                await session.execute(queries.CONVERSATIONS_LOCKED, {"ids": conversation_ids})).all()}
            if turn is not None:
                turn.take()
            members: dict[int, list[int]] = {}
            people: dict[int, tuple[str, str | None]] = {}
            for cid, pid, role, hours in (await session.execute(queries.MEMBERS, {"ids": conversation_ids})).all():
                members.setdefault(cid, []).append(pid)
                people[pid] = (role, hours)
            now = utcnow()
            last_seq = {cid: row.last_seq for cid, row in conversations.items()}
            accepted: list[Send] = []
            first_of: dict[tuple[int, str], Send] = {}
            attached: set[str] = set()  # uploads taken by an earlier send of this batch
            for item in batch:
                key = (item.actor.id, item.client_id)
                done = existing.get(key)
                if done is not None:
                    try:
                        answer = retry_reply(item.conversation_id, item.client_id, *done)
                    except ChatError as exc:
                        refuse(item, exc)
                    else:
                        if not item.future.done():
                            item.future.set_result(answer)
                    continue
                earlier = first_of.get(key)
                if earlier is not None:
                    if earlier.conversation_id != item.conversation_id:
                        refuse(item, Conflict("message.client_id_reused"))
                    elif earlier.refused is not None:
                        refuse(item, earlier.refused)  # the same send, refused the same way
                    else:
                        item.same_as = earlier  # accepted: the repeat names its message
                    continue
                first_of[key] = item
                try:
                    conversation = conversations.get(item.conversation_id)
                    posting.require_member(item.conversation_id, conversation is not None
                                           and item.actor.id in members.get(item.conversation_id, ()))
                    posting.require_open(await self.schools.school_features(session, conversation.school_id),
                                         conversation.locked_at is not None,
                                         "attachments" if item.attachments else "messaging")
                    if item.attachments:
                        item.uploads = await own_uploads(session, item.actor, item.attachments)
                        for upload in item.uploads:
                            if upload.id in attached:
                                raise Conflict("attachment.already_used", upload_id=upload.id)
                        attached.update(upload.id for upload in item.uploads)
                except ChatError as exc:
                    item.refused = exc
                    refuse(item, exc)
                    continue
                seq = last_seq[item.conversation_id] = last_seq[item.conversation_id] + 1
                item.seq = seq
                item.members = members[item.conversation_id]
                accepted.append(item)
            if not accepted:
                return [], now
            await session.execute(queries.SET_LAST_SEQ, [
                {"cid": cid, "seq": seq, "at": now} for cid, seq in last_seq.items()
                if seq != conversations[cid].last_seq])
            ids: dict[tuple[int, int], int] = {}
            for chunk in direct.runs(accepted, MAX_BATCH):
                rows = [{"conversation_id": item.conversation_id, "seq": item.seq, "author_id": item.actor.id,
                         "client_id": item.client_id, "text": item.text, "version": 1, "created_at": now}
                        for item in chunk]
                # The returned rows come in no promised order: (conversation, seq) names each message.
                for message_id, cid, seq in await session.insert_rows(
                        queries.MESSAGES, queries.MESSAGE_COLUMNS, rows, queries.MESSAGE_RETURNING):
                    ids[cid, seq] = message_id
            at = timestamp(now)
            events, attaching = [], []
            for item in accepted:
                item.message_id = message_id = ids[item.conversation_id, item.seq]
                item.frame = message_new(item.conversation_id, item.seq, item.actor.id, now, message_id,
                                         item.client_id, item.text, at, [upload_view(u) for u in item.uploads])
                if item.uploads:
                    attaching += [{"uid": u.id, "mid": message_id, "cid": item.conversation_id} for u in item.uploads]
                events.append({"conversation_id": item.conversation_id, "seq": item.seq, "kind": "message.new",
                               "actor_id": item.actor.id, "message_id": message_id, "frame": item.frame,
                               "created_at": now})
            await session.execute(queries.INSERT_EVENTS, events)
            if attaching:
                await session.execute(queries.ATTACH_UPLOAD, attaching)
            # One's own message is read (the latest of one's sends per conversation).
            read = {(item.conversation_id, item.actor.id): item.seq for item in accepted}
            await session.execute(queries.SET_READ,
                                  [{"cid": cid, "pid": pid, "seq": seq} for (cid, pid), seq in read.items()])
            await self.notifier.add(session, [
                log.pending(conversations[item.conversation_id], pid, "message", "notify.message", item.actor,
                            {"message_id": item.message_id})
                for item in accepted for pid in item.members if pid != item.actor.id], people=people)
        return accepted, now
