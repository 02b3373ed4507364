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

On uvicorn's sans-I/O WebSocket protocol (the server's default) frames skip
the outbox: each event is framed once (:func:`text_frame`) and the same bytes
are written to every recipient's transport, as ``websockets.broadcast()``
does; the bound is then the transport's unsent bytes (about 1 KiB a frame),
and the kernel is let hold only a little more (:func:`limit_kernel_unsent`).
Conversation events and replies are held until the end of the event-loop turn
and each socket gets what it was sent in that turn as one write: a batch of
sends gives its sender the message and its ``ok`` together, and a member the
messages of several people at once (one system call and one wake-up of the
reader instead of several).
"""

from __future__ import annotations

import asyncio
import logging
import socket as socket_module
import struct
import time
import weakref
from collections import deque
from enum import Enum
from typing import Awaitable, Callable, Iterable, Protocol

import orjson

from chat.broker import Broker, create_broker

log = logging.getLogger("chat.hub")

# Close codes (docs/protocol.md).  After 4008 and 1012 the client reconnects and
# resumes; after 4401 it must sign in again first.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_SLOW_CONSUMER = 4008
CLOSE_SHUTDOWN = 1012  # service restart: reconnect and resume
SHUTDOWN_REASON = "server restarting"
SLOW_CONSUMER_REASON = "slow consumer: resume from your last seq"
CLOSE_POLICY = 1008
# The database is unreachable while the connection is being set up: reconnect
# with backoff (RFC 6455's "try again later").
CLOSE_TRY_AGAIN = 1013
# A gap fill failed for a reason other than an outage or a lost membership: the
# connection cannot keep its promise of every event in order, so it ends and
# the client resumes (RFC 6455's "internal error").
CLOSE_INTERNAL_ERROR = 1011

ReplayFn = Callable[[int, int, int, int], Awaitable[list[tuple[int, str]]]]
# replay(person_id, conversation_id, after_seq, limit) -> [(seq, frame)], authorised.


class Database(Protocol):
    """What the hub asks of the database's health (chat.storage.health.DatabaseHealth)."""

    def outage(self, exc: BaseException) -> bool: ...  # is this failure an outage (noted if so)?
    async def available(self) -> None: ...  # return once the database is reachable again


class _AlwaysReachable:
    """A hub with no database behind it (its unit tests): no failure is an outage."""

    def outage(self, exc: BaseException) -> bool:
        return False

    async def available(self) -> None:
        return None


# One replay query returns at most this many events; a fill loops until done.
REPLAY_BATCH = 500
# How often connections whose token has expired are looked for and closed.
EXPIRY_SWEEP_SECONDS = 15.0


def text_frame(payload: bytes) -> bytes:
    """``payload`` as one server-to-client WebSocket text frame (RFC 6455 §5.2:
    FIN, opcode 1, unmasked, no extension).  Built once per event, written to
    every recipient."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


# A direct socket's unsent bytes may reach this many per outbox frame allowed.
BYTES_PER_QUEUED_FRAME = 1024
# A direct socket holds at most this many frames for the end of the turn; the
# next one writes them out first.
MAX_HELD_FRAMES = 64
# What the kernel may hold unsent per socket (TCP_NOTSENT_LOWAT), so that what a
# client does not read waits in the transport, where the bound above counts it.
# Left alone, the kernel's send buffer grows to 4 MB (tcp_wmem), four times the
# bound: a client that stopped reading was dropped by the keepalive (1006, and
# no log line) before the bound was reached.  Unlike SO_SNDBUF it leaves the
# bytes in flight alone, so a long link keeps its throughput.  Measured on the
# fan-out benchmark in docs/architecture.md §2.
KERNEL_UNSENT_BYTES = 16 * 1024
# Linux's ioctl for the bytes a socket has not sent yet (SIOCOUTQNSD).
_SIOCOUTQNSD = 0x894B


def limit_kernel_unsent(transport) -> None:
    """Bound what the kernel holds unsent for this transport's socket (see
    ``KERNEL_UNSENT_BYTES``); where the option does not exist, nothing."""
    option = getattr(socket_module, "TCP_NOTSENT_LOWAT", None)
    sock = transport.get_extra_info("socket")
    if option is None or sock is None:
        return
    try:
        sock.setsockopt(socket_module.IPPROTO_TCP, option, KERNEL_UNSENT_BYTES)
    except OSError:  # not TCP (a Unix socket), or a kernel without it
        pass


def kernel_unsent(transport) -> int | None:
    """Bytes written to this transport's socket that the kernel has not sent
    yet; None where that cannot be asked (not Linux, the socket closed)."""
    sock = transport.get_extra_info("socket")
    try:
        import fcntl

        return struct.unpack("i", fcntl.ioctl(sock.fileno(), _SIOCOUTQNSD, b"\0\0\0\0"))[0]
    except (ImportError, AttributeError, OSError, ValueError):
        return None


# Shared by every connection with nothing of the kind: an idle connection owns
# no empty set or deque (a few hundred bytes each, times the open sockets).
NOT_FILLING: frozenset[int] = frozenset()
NO_OUTBOX = ()


class ConnectionState(Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Connection:
    """One client socket as the hub sees it: who, where it is, and its outbox.

    ``send`` and ``close`` are supplied by the web layer.  ``push`` never
    blocks: it appends to the bounded outbox drained once per loop turn, and
    reports ``False`` when the outbox is full.

    With ``socket`` (uvicorn's sans-I/O protocol object: ``.transport`` and
    ``.close_sent``, no compression negotiated) ``push`` writes the framed bytes
    to the transport at once instead, and the bound is the transport's unsent
    bytes.  Replies and fan-out both go that way, so their order is kept.
    """

    __slots__ = (
        "person_id",
        "language",
        "state",
        "positions",
        "pending",
        "filling",
        "_send",
        "_close",
        "_socket",
        "_queue",
        "_limit",
        "_scheduled",
        "_inflight",
        "_held",
        "_behind",
        "_behind_since",
        "close_code",
        "issued_at",
        "expires_at",
    )

    def __init__(
        self,
        person_id: int,
        language: str,
        send: Callable[[str], Awaitable[None]],
        close: Callable[[int, str], Awaitable[None]],
        max_queue: int,
        issued_at: float = 0.0,
        expires_at: float = float("inf"),
        socket=None,
    ) -> None:
        self.person_id = person_id
        # The access token's lifetime: the connection ends when the token does.
        self.issued_at = issued_at
        self.expires_at = expires_at
        self.language = language
        self.state = ConnectionState.OPEN
        # conversation id -> last seq handed to this client
        self.positions: dict[int, int] = {}
        # conversation id -> highest seq seen while not ready to deliver (initialising or filling)
        self.pending: dict[int, int] = {}
        # conversations being filled from the database (a set of its own only while any is)
        self.filling: set[int] | frozenset[int] = NOT_FILLING
        self._send = send
        self._close = close
        self._socket = socket
        # The outbox is created by the first frame queued (a direct socket never queues).
        self._queue: deque[str] | tuple = NO_OUTBOX
        self._limit = max_queue
        self._scheduled = False
        # A send that could not finish at once (the socket's buffer is full): the
        # rest of the outbox waits behind it.
        self._inflight: asyncio.Future | None = None
        # A direct socket's frames held for one write at the end of this turn (hold=True).
        self._held: list[bytes] | None = None
        # A direct socket: frames written since it last had nothing unsent, and
        # since when (monotonic seconds): how far behind its reader is.
        self._behind = 0
        self._behind_since = 0.0
        self.close_code: int | None = None

    def push(self, frame: str, wire: bytes | None = None, hold: bool = False) -> bool:
        """Send a frame (``wire``: the same, framed already by :func:`text_frame`).

        On a direct socket the bytes are written now, or with ``hold`` at the
        end of this event-loop turn, together with whatever else this socket
        gets in the turn (:class:`_Flusher`); order is kept either way.
        Otherwise the frame is queued, and the outbox is drained once per
        event-loop turn for every connection that got frames (one callback for
        a whole fan-out, no task wake-up per frame).  False when the outbox (or
        the socket's unsent bytes) is full."""
        if self.state is not ConnectionState.OPEN:
            return True
        socket = self._socket
        if socket is not None:
            if wire is None:
                wire = text_frame(frame.encode())
            held = self._held
            if held is not None:
                if hold and len(held) < MAX_HELD_FRAMES:
                    held.append(wire)
                    if self._behind:
                        self._behind += 1
                    return True
                self.write_held()  # what came first goes first
            transport = socket.transport
            if socket.close_sent or transport.is_closing():
                return True  # the socket is closing: the reader loop sees the end
            unsent = transport.get_write_buffer_size()
            if unsent:
                if unsent > self._limit * BYTES_PER_QUEUED_FRAME:
                    return False
                if not self._behind:
                    self._behind_since = time.monotonic()
                self._behind += 1
            elif self._behind:
                self._behind = 0  # it caught up
            if hold:
                self._held = [wire]
                _flusher().hold(self)
            else:
                transport.write(wire)
            return True
        queue = self._queue
        if len(queue) >= self._limit:
            return False
        if queue is NO_OUTBOX:
            queue = self._queue = deque()
        queue.append(frame)
        if not self._scheduled and self._inflight is None:
            self._scheduled = True
            _flusher().add(self)
        return True

    async def writable(self) -> None:
        """Wait while a direct socket holds more than its high-water mark unsent
        (uvicorn's flow control): a replay of hundreds of long messages must
        follow the client's pace, not overrun the slow-consumer bound."""
        socket = self._socket
        if socket is not None and not socket.writable.is_set() and self.state is ConnectionState.OPEN:
            await socket.writable.wait()

    def write_held(self) -> None:
        """Write the frames held in this turn, as one write."""
        held = self._held
        if held is None:
            return
        self._held = None
        if self.state is ConnectionState.CLOSED:
            return
        socket = self._socket
        transport = socket.transport
        if socket.close_sent or transport.is_closing():
            return
        transport.write(held[0] if len(held) == 1 else b"".join(held))

    @property
    def queued(self) -> int:
        return len(self._queue)

    def backlog(self) -> str:
        """What waits for this client, for the log: frames and bytes in the hub,
        bytes in the transport and in the kernel, and for how long it has not
        caught up.  Counts only, never content."""
        held = self._held or ()
        frames = len(self._queue) + len(held)
        hub_bytes = sum(len(f.encode()) for f in self._queue) + sum(len(w) for w in held)
        text = f"{frames} frames ({hub_bytes} bytes) waiting in the hub"
        socket = self._socket
        if socket is not None:
            transport = socket.transport
            text += f", {transport.get_write_buffer_size()} bytes unsent in the transport"
            in_kernel = kernel_unsent(transport)
            if in_kernel is not None:
                text += f" and {in_kernel} in the kernel"
            if self._behind:
                text += (f"; behind for {time.monotonic() - self._behind_since:.1f} s, "
                         f"{self._behind} frames written meanwhile")
        return text

    def drain(self) -> None:
        """Send queued frames in order.  A send that completes without waiting (the
        usual case) is run right here; one that must wait for the socket continues
        in a task, and the rest of the outbox follows it."""
        self._scheduled = False
        queue = self._queue
        while queue and self._inflight is None and self.state is ConnectionState.OPEN:
            coroutine = self._send(queue.popleft())
            try:
                waiting_on = coroutine.send(None)
            except StopIteration:
                continue
            except Exception as exc:
                self._broken(exc)
                return
            self._inflight = asyncio.ensure_future(self._finish(coroutine, waiting_on))

    async def _finish(self, coroutine, waiting_on) -> None:
        """Drive a suspended send to its end, as a Task would, then drain the rest."""
        try:
            while True:
                if isinstance(waiting_on, asyncio.Future):
                    waiting_on._asyncio_future_blocking = False
                    await asyncio.wait([waiting_on])  # never cancels the socket's own future
                else:
                    await asyncio.sleep(0)
                try:
                    waiting_on = coroutine.send(None)
                except StopIteration:
                    break
        except asyncio.CancelledError:
            coroutine.close()
            raise
        except Exception as exc:
            self._inflight = None
            self._broken(exc)
            return
        self._inflight = None
        self.drain()

    def _broken(self, exc: Exception) -> None:
        """The socket refused a frame (peer gone): stop sending; the reader sees the close."""
        log.debug("send failed for person %s: %s", self.person_id, type(exc).__name__)
        self._queue = NO_OUTBOX
        self.state = ConnectionState.CLOSED

    async def close(self, code: int, reason: str = "", flush: float = 0.0) -> None:
        """Close once; later calls do nothing.  With ``flush``, first give the
        writer up to that many seconds to send what is queued (a last notice)."""
        if self.state is not ConnectionState.OPEN:
            return
        self.write_held()  # held frames were sent before the close
        if flush:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + flush
            while self._queue and loop.time() < deadline:
                await asyncio.sleep(0.01)
        if self.state is not ConnectionState.OPEN:
            return
        self.state = ConnectionState.CLOSING
        self.close_code = code
        if self._inflight is not None:
            self._inflight.cancel()
        try:
            await self._close(code, reason)
        except Exception:  # the peer may be gone already
            pass
        self.state = ConnectionState.CLOSED


class _Flusher:
    """Drains every connection that got frames, once per event-loop turn; and
    writes the frames held by direct sockets (``push(hold=True)``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.dirty: list[Connection] = []
        self.holding: list[Connection] = []

    def add(self, conn: Connection) -> None:
        if not self.dirty:
            self.loop.call_soon(self.flush)
        self.dirty.append(conn)

    def flush(self) -> None:
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            conn.drain()

    def hold(self, conn: Connection) -> None:
        # Two callbacks away: the tasks a fan-out woke (a batch's senders, whose
        # ``ok`` follows their message) run first and add their replies.
        if not self.holding:
            self.loop.call_soon(self.loop.call_soon, self.write_held)
        self.holding.append(conn)

    def write_held(self) -> None:
        holding, self.holding = self.holding, []
        for conn in holding:
            try:
                conn.write_held()
            except Exception as exc:  # a transport that refuses: that socket is done, the others go on
                conn._broken(exc)


_flushers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Flusher]" = weakref.WeakKeyDictionary()


def _flusher() -> _Flusher:
    loop = asyncio.get_running_loop()
    flusher = _flushers.get(loop)
    if flusher is None:
        flusher = _flushers[loop] = _Flusher(loop)
    return flusher


def conversation_channel(conversation_id: int) -> str:
    return f"conv:{conversation_id}"


def person_channel(person_id: int) -> str:
    return f"person:{person_id}"


def _envelope(header: dict, frame: str | None) -> bytes:
    head = orjson.dumps(header)
    return head + b"\n" + frame.encode() if frame is not None else head + b"\n"


def _event_message(conversation_id: int, seq: int, member_ids: Iterable[int], frame: str) -> tuple[str, bytes]:
    """A committed conversation event as published: its channel and envelope."""
    return conversation_channel(conversation_id), _envelope(
        {"c": conversation_id, "s": seq, "m": list(member_ids)}, frame)


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
        self._database: Database = database if database is not None else _AlwaysReachable()
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
        from chat.i18n import error_text

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
        await self._publish(*_event_message(conversation_id, seq, member_ids, frame))

    async def publish_events(self, events: Iterable[tuple[int, int, Iterable[int], str]]) -> None:
        """:meth:`publish_event` for several committed events (conversation, seq,
        member ids, frame) at once: one broker round trip, order kept."""
        items = [_event_message(*event) for event in events]
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
            _envelope({"c": conversation_id, "m": list(member_ids), "x": exclude_person}, frame),
        )

    async def publish_audience(self, channel: str, recipient_ids: Iterable[int], frame: str) -> None:
        """Fan out an announcement, persisted already, to its recipients on every worker."""
        await self._publish(channel, _envelope({"r": list(recipient_ids)}, frame))

    async def publish_person(
        self, person_id: int, op: str, frame: str | None = None, conversation_id: int | None = None, seq: int = 0
    ) -> None:
        """Tell every connection of one person, on every worker: ``frame`` (show
        it), ``join`` / ``leave`` (a conversation), ``close`` (signed out)."""
        header = {"p": person_id, "op": op}
        if conversation_id is not None:
            header["c"] = conversation_id
            header["s"] = seq
        await self._publish(person_channel(person_id), _envelope(header, frame))

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
        head, _, body = data.partition(b"\n")
        header = orjson.loads(head)
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
            if conn.person_id not in members:
                continue  # removed (or never a member): authorisation at every event
            position = conn.positions.get(conversation_id)
            if position is None or conversation_id in conn.filling:
                if seq > conn.pending.get(conversation_id, 0):
                    conn.pending[conversation_id] = seq
                continue
            if seq <= position:
                continue  # duplicate
            if seq == position + 1:
                if conn.push(frame, wire, hold=True):
                    conn.positions[conversation_id] = seq
                    delivered += 1
                else:
                    slow.append(conn)
            else:  # a gap: fetch what is missing, in order, before going on
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
