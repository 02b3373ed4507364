"""One client connection as the hub sees it, and its bounded outbox.

``push`` never blocks: it appends the frame to the connection's outbox and
reports ``False`` when the outbox holds ``max_queue`` frames already; the hub
then closes the connection with 4008 (``slow_consumer``), and the client
resumes from its last seq, so nothing is lost (the overflow rule).  The
outbox is written by an ordinary task, started by the first frame of a burst
and ending when the outbox is empty: frames pushed in one event-loop turn go
out together, in order, with no task wake-up per frame.

This is the public ASGI path (``send`` is the server's).  The uvicorn fast
path (:mod:`chat.hub.fastpath`) subclasses :class:`Connection` to write framed
bytes straight to the transport.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from enum import Enum
from typing import Awaitable, Callable

log = logging.getLogger("chat.hub")

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
    blocks: it appends to the bounded outbox, written by a task of its own
    while it has frames, and reports ``False`` when the outbox is full.
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
        "_queue",
        "_limit",
        "_writer",
        "close_code",
        "session_id",
        "expires_at",
    )

    def __init__(
        self,
        person_id: int,
        language: str,
        send: Callable[[str], Awaitable[None]],
        close: Callable[[int, str], Awaitable[None]],
        max_queue: int,
        session_id: str = "",
        expires_at: float = float("inf"),
    ) -> None:
        self.person_id = person_id
        # The signed-in session (R21: ending it closes this connection) and the
        # access token's lifetime: the connection ends when the token does.
        self.session_id = session_id
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
        # The outbox is created by the first frame queued (a direct socket never queues).
        self._queue: deque[str] | tuple = NO_OUTBOX
        self._limit = max_queue
        # The task writing the outbox, while it has frames.
        self._writer: asyncio.Task | None = None
        self.close_code: int | None = None

    def push(self, frame: str, wire: bytes | None = None, hold: bool = False) -> bool:
        """Queue a frame (``wire``, the same framed already, and ``hold`` matter
        only to the fast path).  False when the outbox is full."""
        if self.state is not ConnectionState.OPEN:
            return True
        queue = self._queue
        if len(queue) >= self._limit:
            return False
        if queue is NO_OUTBOX:
            queue = self._queue = deque()
        queue.append(frame)
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_outbox())
        return True

    async def _write_outbox(self) -> None:
        """Send the queued frames in order until the outbox is empty."""
        queue = self._queue
        try:
            while queue and self.state is ConnectionState.OPEN:
                await self._send(queue.popleft())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._broken(exc)
        finally:
            self._writer = None

    async def writable(self) -> None:
        """Return once the socket may take more (always at once on this path)."""
        return None

    def write_held(self) -> None:
        """Write the frames held in this turn (none on this path)."""
        return None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def backlog(self) -> str:
        """What waits for this client, for the log: frames and bytes in the hub.
        Counts only, never content."""
        hub_bytes = sum(len(f.encode()) for f in self._queue)
        return f"{len(self._queue)} frames ({hub_bytes} bytes) waiting in the hub"

    def broken(self, exc: Exception) -> None:
        """The socket refused a frame (peer gone): stop sending; the reader sees the close."""
        self._broken(exc)

    def _broken(self, exc: Exception) -> None:
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
        if self._writer is not None:
            self._writer.cancel()
        try:
            await self._close(code, reason)
        except Exception:  # the peer may be gone already
            pass
        self.state = ConnectionState.CLOSED


class Flusher:
    """Writes the frames held by direct sockets (``push(hold=True)``) at the end
    of the event-loop turn, one write per socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.holding: list[Connection] = []

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
                conn.broken(exc)


_flushers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Flusher]" = weakref.WeakKeyDictionary()


def flusher() -> Flusher:
    """The running loop's flusher."""
    loop = asyncio.get_running_loop()
    found = _flushers.get(loop)
    if found is None:
        found = _flushers[loop] = Flusher(loop)
    return found
