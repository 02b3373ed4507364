"""The async hub: local connections, their subscriptions, and fan-out.

How an event flows (docs/architecture.md has the picture):

1. The service commits the event (it now has its conversation ``seq``) and
   calls :meth:`Hub.publish_event` with the frame *already encoded once* and
   the ids of the conversation's members at commit time.
2. The broker carries ``header \\n frame`` to every hub process subscribed to
   the conversation's channel (in-process, or Redis pub/sub).
3. Each hub delivers the same frame string to its local connections whose
   person is in that member list — authorisation against current membership
   is part of every delivery, so a removed member gets nothing more on any
   worker.
4. Every connection remembers the last ``seq`` it was given per conversation.
   An older or equal seq is a duplicate and is dropped; a jump (two workers'
   publishes crossing, a Redis outage) is filled from the database before
   anything newer is sent.  Clients therefore see each conversation's events
   exactly once and in order.

Each connection has a bounded outbox (``Settings.send_queue_frames``).  A
client that does not drain it is closed with code 4008 (``slow_consumer``);
nothing is lost for it: it reconnects and resumes from its last seq.

The outbox and its overflow rule are in :mod:`chat.hub.connection`, the
uvicorn fast path in :mod:`chat.hub.fastpath`, the deliver/drop/fill
decision in :mod:`chat.policies.delivery`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Iterable, Protocol

import orjson

from chat.broker import Broker, create_broker
from chat.hub.codes import CLOSE_INTERNAL_ERROR, CLOSE_SHUTDOWN, CLOSE_SLOW_CONSUMER, CLOSE_UNAUTHENTICATED, \
    SHUTDOWN_REASON, SLOW_CONSUMER_REASON
from chat.hub.connection import NOT_FILLING, Connection, ConnectionState
from chat.hub.envelope import conversation_channel, envelope, event_message, open_envelope, person_channel
from chat.hub.fastpath import text_frame
from chat.i18n import error_text
from chat.policies.delivery import DELIVER, FILL, NOTE, delivery_decision

log = logging.getLogger("chat.hub")

ReplayFn = Callable[[int, int, int, int], Awaitable[list[tuple[int, str]]]]
# replay(person_id, conversation_id, after_seq, limit) -> [(seq, frame)], authorised.


class Database(Protocol):
    """What the hub asks of the database's health (chat.storage.health.DatabaseHealth)."""

    def outage(self, exc: BaseException) -> bool: ...  # is this failure an outage (noted if so)?
    async def available(self) -> None: ...  # return once the database is reachable again


class AlwaysReachable:
    """A hub with no database behind it (its unit tests): no failure is an outage."""

    def outage(self, exc: BaseException) -> bool:
        return False

    async def available(self) -> None:
        return None


# One replay query returns at most this many events; a fill loops until done.
REPLAY_BATCH = 500
# How often connections whose token has expired are looked for and closed.
EXPIRY_SWEEP_SECONDS = 15.0


class Hub:
    """Keeps this process's connections and routes broker messages to them."""

    def __init__(
        self,
        broker_url: str,
        replay: ReplayFn,
        redis_prefix: str = "chat",
        refresh: Callable[[], Awaitable[None]] | None = None,
        database: Database | None = None,
    ) -> None:
        self._replay = replay
        # Called first on a resync: re-reads memberships and sign-outs that
        # person-channel messages may have carried during a broker outage.
        self._refresh = refresh
        # A replay or a refresh that meets a database outage waits for its end and goes on.
        self._database: Database = database if database is not None else AlwaysReachable()
        # One resync at a time: two refreshes interleaved could show one join twice.
        self._resync_lock = asyncio.Lock()
        self._resync_scheduled = False
        self.broker: Broker = create_broker(broker_url, self._on_message, self._resync, prefix=redis_prefix)
        # person id -> their connections here: a tuple, as most people have one
        # (an empty set alone is 216 bytes, times every person online)
        self.by_person: dict[int, tuple[Connection, ...]] = {}
        self.subscribers: dict[int, set[Connection]] = {}
        # Audience channels (a school, an organisation) for announcements (R13):
        # one publish reaches every worker; the envelope names the recipients.
        self.audiences: dict[str, set[Connection]] = {}
        self._tasks: set[asyncio.Task] = set()
        self.stats = {"delivered": 0, "slow_consumers": 0, "gap_fills": 0, "publish_failures": 0}
        # Observes the duration of each local fan-out (the metrics histogram).
        self.on_fanout: Callable[[float], None] | None = None

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        await self.broker.connect()
        self._spawn(self._sweep_expired())

    async def _sweep_expired(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_SWEEP_SECONDS)
            self.close_expired(time.time())

    def close_expired(self, now: float) -> int:
        """Close (4401) every connection whose access token expired by ``now``."""
        closed = 0
        for conns in list(self.by_person.values()):
            for conn in list(conns):
                if conn.expires_at <= now and conn.state is ConnectionState.OPEN:
                    conn.push(orjson.dumps({"type": "error", "id": None, "code": "auth.expired_token",
                                            "message": error_text("auth.expired_token", conn.language)}).decode())
                    self._spawn(conn.close(CLOSE_UNAUTHENTICATED, "token expired", flush=1.0))
                    closed += 1
        return closed

    async def close_all(self, code: int, reason: str) -> None:
        """Close every connection of this process with ``code`` and ``reason``,
        all at once (one that cannot be written to does not hold up the others)."""
        closing = [conn.close(code, reason) for conns in list(self.by_person.values()) for conn in conns]
        if closing:
            await asyncio.gather(*closing, return_exceptions=True)

    async def stop(self) -> None:
        await self.close_all(CLOSE_SHUTDOWN, SHUTDOWN_REASON)
        for task in list(self._tasks):
            task.cancel()
        await self.broker.disconnect()

    def _spawn(self, coro: Awaitable) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- connections and subscriptions ------------------------------------------
    async def register_audiences(self, conn: Connection, channels: Iterable[str]) -> None:
        """Listen to announcements for these audiences (``school:ID``, ``org:ID``)."""
        for channel in channels:
            subs = self.audiences.get(channel)
            if subs is None:
                subs = self.audiences[channel] = {conn}
                await self.broker.subscribe(channel)
            else:
                subs.add(conn)

    async def register(self, conn: Connection, conversation_ids: Iterable[int]) -> None:
        """Attach a connection: its person's channel and its conversations.

        Until :meth:`track` gives a conversation its starting position, events
        for it are only noted (``pending``) so none can slip between the
        subscription and the position read from the database.
        """
        conns = self.by_person.get(conn.person_id, ())
        if conn not in conns:
            conns = self.by_person[conn.person_id] = (*conns, conn)
        if len(conns) == 1:
            await self.broker.subscribe(person_channel(conn.person_id))
        for conversation_id in conversation_ids:
            await self._subscribe(conn, conversation_id)

    async def unregister(self, conn: Connection) -> None:
        conns = self.by_person.get(conn.person_id)
        if conns is not None:
            conns = tuple(c for c in conns if c is not conn)
            if conns:
                self.by_person[conn.person_id] = conns
            else:
                del self.by_person[conn.person_id]
                await self.broker.unsubscribe(person_channel(conn.person_id))
        for conversation_id in list(conn.positions) + list(conn.pending):
            await self._unsubscribe(conn, conversation_id)
        await self.unregister_audiences(conn)

    async def unregister_audiences(self, conn: Connection) -> None:
        """Stop listening to announcements (the undoing of :meth:`register_audiences`)."""
        for channel, subs in list(self.audiences.items()):
            if conn in subs:
                subs.discard(conn)
                if not subs:
                    del self.audiences[channel]
                    await self.broker.unsubscribe(channel)

    async def _subscribe(self, conn: Connection, conversation_id: int) -> None:
        conn.pending.setdefault(conversation_id, 0)
        subs = self.subscribers.get(conversation_id)
        if subs is None:
            subs = self.subscribers[conversation_id] = set()
            subs.add(conn)
            await self.broker.subscribe(conversation_channel(conversation_id))
        else:
            subs.add(conn)

    async def _unsubscribe(self, conn: Connection, conversation_id: int) -> None:
        conn.positions.pop(conversation_id, None)
        conn.pending.pop(conversation_id, None)
        subs = self.subscribers.get(conversation_id)
        if subs is None:
            return
        subs.discard(conn)
        if not subs:
            del self.subscribers[conversation_id]
            await self.broker.unsubscribe(conversation_channel(conversation_id))

    def track(self, conn: Connection, conversation_id: int, position: int, replay: bool = False) -> None:
        """Start live delivery of a conversation after ``position``.

        With ``replay`` (a resume, or a join) everything after ``position`` is
        fetched from the database first; otherwise only what arrived while the
        connection was getting ready, if anything.
        """
        if conversation_id in conn.filling or conversation_id in conn.positions:
            return
        seen = conn.pending.pop(conversation_id, 0)
        conn.positions[conversation_id] = position
        if replay or seen > position:
            conn.pending[conversation_id] = seen
            self._start_fill(conn, conversation_id)

    def _start_fill(self, conn: Connection, conversation_id: int) -> None:
        if conn.filling is NOT_FILLING:
            conn.filling = {conversation_id}
        else:
            conn.filling.add(conversation_id)
        self.stats["gap_fills"] += 1
        self._spawn(self._fill(conn, conversation_id))

    async def _fill(self, conn: Connection, conversation_id: int) -> None:
        try:
            while conn.state is ConnectionState.OPEN:
                position = conn.positions.get(conversation_id)
                if position is None:
                    return
                try:
                    events = await self._replay(conn.person_id, conversation_id, position, REPLAY_BATCH)
                except Exception as exc:
                    if not self._database.outage(exc):
                        raise
                    # The database is away: the fill goes on from here once it is back;
                    # meanwhile live events are noted (pending), as during any fill.
                    await self._database.available()
                    continue
                for seq, frame in events:
                    await conn.writable()
                    if seq > conn.positions.get(conversation_id, seq):
                        if not conn.push(frame):
                            self._slow(conn)
                            return
                        conn.positions[conversation_id] = seq
                position = conn.positions.get(conversation_id, 0)
                if len(events) < REPLAY_BATCH and conn.pending.get(conversation_id, 0) <= position:
                    conn.pending.pop(conversation_id, None)
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            conn.positions.pop(conversation_id, None)
            conn.pending.pop(conversation_id, None)
            if getattr(exc, "code", None) == "conversation.not_found":
                # Not a member any more: its conversation.left comes (or came) on the person's channel.
                log.info("gap fill stopped for conversation %s: %s", conversation_id, exc.code)
            else:
                # Anything else would leave the client silently behind: it resumes instead.
                log.warning("gap fill for conversation %s failed (%s); closing the connection (%d) so that the "
                            "client resumes", conversation_id, type(exc).__name__, CLOSE_INTERNAL_ERROR)
                self._spawn(conn.close(CLOSE_INTERNAL_ERROR, "gap fill failed: resume from your last seq"))
        finally:
            if conversation_id in conn.filling:
                conn.filling.discard(conversation_id)
                if not conn.filling:
                    conn.filling = NOT_FILLING

    # -- publishing ----------------------------------------------------------------
    async def publish_event(self, conversation_id: int, seq: int, member_ids: Iterable[int], frame: str) -> None:
        """Fan out a committed conversation event to the members at commit time."""
        await self._publish(*event_message(conversation_id, seq, member_ids, frame))

    async def publish_events(self, events: Iterable[tuple[int, int, Iterable[int], str]]) -> None:
        """:meth:`publish_event` for several committed events (conversation, seq,
        member ids, frame) at once: one broker round trip, order kept."""
        items = [event_message(*event) for event in events]
        if not items:
            return
        try:
            await self.broker.publish_many(items)
        except Exception as exc:
            self._publish_failed(items[0][0], exc)

    async def publish_ephemeral(
        self, conversation_id: int, member_ids: Iterable[int], frame: str, exclude_person: int
    ) -> None:
        """Fan out something never stored (typing): no seq, not resumable."""
        await self._publish(
            conversation_channel(conversation_id),
            envelope({"c": conversation_id, "m": list(member_ids), "x": exclude_person}, frame),
        )

    async def publish_audience(self, channel: str, recipient_ids: Iterable[int], frame: str) -> None:
        """Fan out an announcement, persisted already, to its recipients on every worker."""
        await self._publish(channel, envelope({"r": list(recipient_ids)}, frame))

    async def publish_person(
        self, person_id: int, op: str, frame: str | None = None, conversation_id: int | None = None, seq: int = 0,
        sessions: list[str] | None = None,
    ) -> None:
        """Tell every connection of one person, on every worker: ``frame`` (show
        it), ``join`` / ``leave`` (a conversation), ``close`` (signed out: the
        connections of ``sessions`` only, when given)."""
        header: dict = {"p": person_id, "op": op}
        if conversation_id is not None:
            header["c"] = conversation_id
            header["s"] = seq
        if sessions is not None:
            header["x"] = sessions
        await self._publish(person_channel(person_id), envelope(header, frame))

    async def _publish(self, channel: str, data: bytes) -> None:
        try:
            await self.broker.publish(channel, data)
        except Exception as exc:
            self._publish_failed(channel, exc)

    def _publish_failed(self, channel: str, exc: Exception) -> None:
        # The event is committed: local clients get it from the database by a
        # resync; other workers resync when their own broker link recovers.
        self.stats["publish_failures"] += 1
        log.warning("publish to %s failed: %s", channel.split(":")[0], type(exc).__name__)
        if not self._resync_scheduled:
            self._resync_scheduled = True
            self._spawn(self._resync_soon())

    async def _resync_soon(self) -> None:
        await asyncio.sleep(0.5)  # let a burst of failing publishes end first
        self._resync_scheduled = False
        await self._resync()

    def send(self, conn: Connection, frame: str) -> None:
        """A frame for one connection (a reply); an overflowing outbox closes it."""
        if not conn.push(frame, hold=True):
            self._slow(conn)

    # -- receiving -------------------------------------------------------------------
    def _on_message(self, channel: str, data: bytes) -> None:
        header, body = open_envelope(data)
        frame = body.decode() if body else None
        wire = text_frame(body) if body else None  # framed once for every recipient
        if "p" in header:
            self._on_person(header, frame, wire)
            return
        if "r" in header:
            self._on_audience(channel, header["r"], frame, wire)
            return
        conversation_id = header["c"]
        subs = self.subscribers.get(conversation_id)
        if not subs:
            return
        members = set(header["m"])
        seq = header.get("s")
        if seq is None:  # ephemeral
            exclude = header.get("x")
            for conn in subs:
                if conn.person_id in members and conn.person_id != exclude and conversation_id in conn.positions:
                    conn.push(frame, wire, hold=True)
            return
        started = time.perf_counter()
        slow: list[Connection] = []
        delivered = 0
        for conn in subs:
            # The deliver/drop/fill decision is a policy (chat.policies.delivery).
            decision = delivery_decision(conn.person_id in members, conn.positions.get(conversation_id),
                                         conversation_id in conn.filling, seq)
            if decision == DELIVER:
                if conn.push(frame, wire, hold=True):
                    conn.positions[conversation_id] = seq
                    delivered += 1
                else:
                    slow.append(conn)
            elif decision == NOTE:
                if seq > conn.pending.get(conversation_id, 0):
                    conn.pending[conversation_id] = seq
            elif decision == FILL:  # a gap: fetch what is missing, in order, before going on
                conn.pending[conversation_id] = seq
                self._start_fill(conn, conversation_id)
        self.stats["delivered"] += delivered
        if self.on_fanout is not None:
            self.on_fanout(time.perf_counter() - started)
        for conn in slow:
            self._slow(conn)

    def _on_audience(self, channel: str, recipients: list[int], frame: str, wire: bytes) -> None:
        subs = self.audiences.get(channel)
        if not subs:
            return
        wanted = set(recipients)
        delivered = 0
        slow = []
        for conn in subs:
            if conn.person_id in wanted:
                if conn.push(frame, wire):
                    delivered += 1
                else:
                    slow.append(conn)
        self.stats["delivered"] += delivered
        for conn in slow:
            self._slow(conn)

    def _slow(self, conn: Connection) -> None:
        if conn.close_code is not None or conn.state is not ConnectionState.OPEN:
            return  # closing already: one line and one close per connection
        conn.close_code = CLOSE_SLOW_CONSUMER
        self.stats["slow_consumers"] += 1
        log.info("closing slow consumer (person %s): %s", conn.person_id, conn.backlog())
        self._spawn(conn.close(CLOSE_SLOW_CONSUMER, SLOW_CONSUMER_REASON))

    def _on_person(self, header: dict, frame: str | None, wire: bytes | None) -> None:
        conns = self.by_person.get(header["p"])
        if not conns:
            return
        op = header["op"]
        for conn in list(conns):
            if op == "join":
                # Live from the event that added this person (it is committed already).
                self._spawn(self.join(conn, header["c"], header["s"] - 1, frame, replay=True))
            elif op == "leave":
                self._spawn(self.leave(conn, header["c"], frame))
            elif op == "close":
                if "x" in header and conn.session_id not in header["x"]:
                    continue
                if frame is not None:
                    conn.push(frame, wire)
                self._spawn(conn.close(CLOSE_UNAUTHENTICATED, "signed out", flush=1.0))
            elif frame is not None and not conn.push(frame, wire, hold=True):
                self._slow(conn)

    async def join(self, conn: Connection, conversation_id: int, position: int, frame: str | None,
                   replay: bool) -> None:
        """Subscribe a connection to a conversation it now belongs to, show ``frame``,
        and go live after ``position`` (replaying from there when ``replay``)."""
        if conversation_id in conn.positions or conversation_id in conn.filling:
            return
        await self._subscribe(conn, conversation_id)
        if frame is not None:
            conn.push(frame)
        self.track(conn, conversation_id, position, replay=replay)

    async def leave(self, conn: Connection, conversation_id: int, frame: str | None) -> None:
        await self._unsubscribe(conn, conversation_id)
        if frame is not None:
            conn.push(frame)

    async def _resync(self) -> None:
        """After a broker outage: fetch from the database what may have been missed.
        If the database is away too, the refresh waits for it and tries again,
        and so does each fill: every live conversation is filled once it is back."""
        async with self._resync_lock:
            while self._refresh is not None:
                try:
                    await self._refresh()
                except Exception as exc:
                    if self._database.outage(exc):
                        await self._database.available()
                        continue
                    log.exception("refreshing memberships after a broker outage failed")
                break
            for conns in list(self.by_person.values()):
                for conn in list(conns):
                    for conversation_id in list(conn.positions):
                        if conversation_id not in conn.filling:
                            self._start_fill(conn, conversation_id)

    def connection_count(self) -> int:
        return sum(len(c) for c in self.by_person.values())
