"""The uvicorn fast path: frames written straight to the socket's transport.

This is the one module that touches the private state of uvicorn's sans-I/O
WebSocket protocol (``transport``, ``close_sent``, ``writable``,
``conn.extensions``, ``request``/``response``) and of websockets' parser.
It is used only when ``Settings.hub_fast_path`` is ``"auto"`` and the
installed uvicorn and websockets are versions it was tested with
(``TESTED``); otherwise :func:`enabled` says so in one log line and every
connection goes through the public ASGI ``send`` (:class:`Connection`).

On the fast path each event is framed once (:func:`text_frame`) and the same
bytes are written to every recipient's transport, as
``websockets.broadcast()`` does; the bound is then the transport's unsent
bytes (about 1 KiB a frame), and the kernel is let hold only a little more
(:func:`limit_kernel_unsent`).  Conversation events and replies are held
until the end of the event-loop turn and each socket gets what it was sent in
that turn as one write: a batch of sends gives its sender the message and its
``ok`` together, and a member the messages of several people at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket as socket_module
import struct
import time
from importlib import metadata
from typing import Any, Awaitable, Callable

from chat.config import Settings
from chat.hub.connection import Connection, ConnectionState, flusher

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover - uvicorn without websockets' sans-I/O protocol
    WebSocketsSansIOProtocol = None

try:
    import fcntl
except ImportError:  # pragma: no cover - not Unix
    fcntl = None

log = logging.getLogger("chat.hub")

# The (major, minor) releases whose private state this module was tested with;
# pyproject.toml pins the same range.
TESTED = {"uvicorn": ((0, 55),), "websockets": ((17, 4),)}

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
# bytes in flight alone, so a long link keeps its throughput (docs/architecture.md §2).
KERNEL_UNSENT_BYTES = 16 * 1024
# Linux's ioctl for the bytes a socket has not sent yet (SIOCOUTQNSD).
SIOCOUTQNSD = 0x894B


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


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def unknown_versions() -> list[str]:
    """The libraries among uvicorn and websockets whose installed release is not
    one this module was tested with (``name version``), or absent."""
    unknown = []
    for name, releases in TESTED.items():
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            unknown.append(f"{name} (not installed)")
            continue
        if _release(version) not in releases:
            unknown.append(f"{name} {version}")
    if WebSocketsSansIOProtocol is None and not unknown:
        unknown.append("uvicorn (no sans-I/O WebSocket protocol)")
    return unknown


def enabled(settings: Settings) -> bool:
    """Whether this process writes frames straight to uvicorn's transports:
    ``HUB_FAST_PATH`` is ``auto`` and the installed versions are tested ones.
    A fallback for unknown versions is logged once, here."""
    if settings.hub_fast_path == "off":
        return False
    unknown = unknown_versions()
    if unknown:
        log.warning("hub fast path off: %s not among the tested versions; frames go through ASGI send",
                    ", ".join(unknown))
        return False
    return True


def direct_socket(send: Callable[..., Awaitable[None]]) -> Any | None:
    """uvicorn's sans-I/O WebSocket protocol behind an ASGI ``send``, when frames
    may be written straight to its transport: no extension (compression) was
    negotiated, so a text frame is the same bytes for every recipient."""
    protocol = getattr(send, "__self__", None)
    if (WebSocketsSansIOProtocol is not None and isinstance(protocol, WebSocketsSansIOProtocol)
            and not protocol.conn.extensions):
        limit_kernel_unsent(protocol.transport)  # what the client does not read waits where the hub counts it
        return protocol
    return None


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
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, b"\0\0\0\0"))[0]
    except (AttributeError, OSError, ValueError):
        return None


def release_handshake(protocol) -> None:
    """Drop uvicorn's parsed handshake request and response once the handshake
    is done (about 5 KiB an idle socket would keep).  uvicorn reads them only
    until the handshake completes; websockets' parser keeps the request object
    to the end: its headers are emptied."""
    if protocol is not None and protocol.handshake_complete:
        if protocol.request is not None:
            protocol.request.headers.clear()
        protocol.request = protocol.response = None


async def close_now(protocol, close: Callable[[int, str], Awaitable[None]], code: int, reason: str,
                    unread_grace: float) -> None:
    """Close a direct socket with ``close`` (the ASGI close), without waiting
    for the client to read what is queued.

    uvicorn's send first waits while the transport holds more than its
    high-water mark: the close of a client that stopped reading (4008) would
    wait until the keepalive dropped it, and the client would never learn why.
    The close frame goes now, behind what is already queued; a client that has
    not read up to it within ``unread_grace`` seconds is dropped."""
    writable = protocol.writable
    paused = not writable.is_set()
    if paused:
        writable.set()
    try:
        await close(code, reason)
    finally:
        if paused:
            writable.clear()  # nothing ran in between: the transport is still paused
    asyncio.get_running_loop().call_later(unread_grace, drop_unread, protocol.transport)


def drop_unread(transport) -> None:
    """Abort a closed connection whose client still has not read what was sent
    before the close frame (uvicorn's close waits for those bytes forever)."""
    if transport.get_write_buffer_size():
        transport.abort()


class DirectConnection(Connection):
    """A :class:`Connection` on uvicorn's sans-I/O protocol (``socket``: its
    ``.transport`` and ``.close_sent``, no compression negotiated): ``push``
    writes the framed bytes to the transport at once (or, with ``hold``, at the
    end of the turn), and the bound is the transport's unsent bytes.  Replies
    and fan-out both go that way, so their order is kept."""

    __slots__ = ("_socket", "_held", "_behind", "_behind_since")

    def __init__(
        self,
        person_id: int,
        language: str,
        send: Callable[[str], Awaitable[None]],
        close: Callable[[int, str], Awaitable[None]],
        max_queue: int,
        session_id: str = "",
        expires_at: float = float("inf"),
        socket=None,
    ) -> None:
        super().__init__(person_id, language, send, close, max_queue, session_id, expires_at)
        self._socket = socket
        # Frames held for one write at the end of this turn (hold=True).
        self._held: list[bytes] | None = None
        # Frames written since the socket last had nothing unsent, and since
        # when (monotonic seconds): how far behind its reader is.
        self._behind = 0
        self._behind_since = 0.0

    def push(self, frame: str, wire: bytes | None = None, hold: bool = False) -> bool:
        """Write a frame (``wire``: the same, framed already by :func:`text_frame`)
        now, or with ``hold`` at the end of this event-loop turn together with
        whatever else this socket gets in the turn; order is kept either way.
        False when the socket's unsent bytes are over the bound."""
        if self.state is not ConnectionState.OPEN:
            return True
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
        socket = self._socket
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
            flusher().hold(self)
        else:
            transport.write(wire)
        return True

    async def writable(self) -> None:
        """Wait while the socket holds more than its high-water mark unsent
        (uvicorn's flow control): a replay of hundreds of long messages must
        follow the client's pace, not overrun the slow-consumer bound."""
        socket = self._socket
        if not socket.writable.is_set() and self.state is ConnectionState.OPEN:
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

    def backlog(self) -> str:
        """What waits for this client, for the log: frames and bytes held, bytes
        in the transport and in the kernel, and for how long it has not caught
        up.  Counts only, never content."""
        held = self._held or ()
        text = f"{len(held)} frames ({sum(len(w) for w in held)} bytes) waiting in the hub"
        transport = self._socket.transport
        text += f", {transport.get_write_buffer_size()} bytes unsent in the transport"
        in_kernel = kernel_unsent(transport)
        if in_kernel is not None:
            text += f" and {in_kernel} in the kernel"
        if self._behind:
            text += (f"; behind for {time.monotonic() - self._behind_since:.1f} s, "
                     f"{self._behind} frames written meanwhile")
        return text


def new_connection(person_id: int, language: str, send: Callable[[str], Awaitable[None]],
                   close: Callable[[int, str], Awaitable[None]], max_queue: int, session_id: str,
                   expires_at: float, socket) -> Connection:
    """A direct connection when ``socket`` (from :func:`direct_socket`) is
    given, else one on the public ASGI ``send``."""
    if socket is None:
        return Connection(person_id, language, send, close, max_queue, session_id, expires_at)
    return DirectConnection(person_id, language, send, close, max_queue, session_id, expires_at, socket=socket)
