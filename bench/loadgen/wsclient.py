"""A lean RFC 6455 WebSocket client on ``asyncio.Protocol``, for load generation.

Why not the ``websockets`` client: a load generator on a 2-core machine shares
the CPU with the server it measures.  Every microsecond the client spends per
received frame is a microsecond the server does not get, so the receive path
here is a plain ``data_received`` callback that cuts frames out of a buffer
and hands the payload (bytes, undecoded) to a callback — no task, no queue,
no coroutine per frame.  Sending masks frames as the RFC requires (a random
4-byte key per frame).

What it implements: the HTTP/1.1 upgrade with ``Sec-WebSocket-Accept``
verification, text/binary/continuation frames from the server (unmasked, 7/16/64-bit
lengths), pings answered with pongs, the close handshake.  What it does not:
extensions (no permessage-deflate is offered), TLS.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from typing import Callable

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# A handshake response larger than this is not a WebSocket server talking.
MAX_HANDSHAKE_BYTES = 16 * 1024


class HandshakeError(Exception):
    """The server did not answer the upgrade with a valid 101."""


def frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (FIN set)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    if n:
        key = (mask * (n // 4 + 1))[:n]
        payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + payload


class WSClient(asyncio.Protocol):
    """One client connection.  ``on_message(client, payload: bytes)`` is called for
    every complete text or binary message; ``on_close(client)`` once at the end."""

    __slots__ = ("host", "port", "path", "headers", "on_message", "on_close", "transport", "handshake",
                 "_key", "_buf", "_open", "_fragments", "closed", "key", "user", "close_code")

    def __init__(self, host: str, port: int, path: str, headers: dict[str, str],
                 on_message: Callable[["WSClient", bytes], None], on_close: Callable[["WSClient"], None] | None = None,
                 key: object = None, user: object = None) -> None:
        self.host, self.port, self.path, self.headers = host, port, path, headers
        self.on_message = on_message
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future = asyncio.get_running_loop().create_future()
        self._key = base64.b64encode(os.urandom(16))
        self._buf = bytearray()
        self._open = False
        self._fragments: list[bytes] | None = None
        self.closed = False
        self.close_code: int | None = None
        self.key = key  # who this client is, for the owner
        self.user = user  # the owner's per-connection state

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        lines = [f"GET {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {self._key.decode()}", "Sec-WebSocket-Version: 13"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HANDSHAKE_BYTES:
                    self._fail(HandshakeError("handshake response too large"))
                return
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            status = head[0].split(" ", 2)
            if len(status) < 2 or status[1] != "101":
                self._fail(HandshakeError(f"expected 101, got {head[0]!r}"))
                return
            fields = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            accept = base64.b64encode(hashlib.sha1(self._key + GUID).digest()).decode()
            if fields.get("sec-websocket-accept") != accept:
                self._fail(HandshakeError("bad Sec-WebSocket-Accept"))
                return
            self._open = True
            if not self.handshake.done():
                self.handshake.set_result(True)
        self._parse()

    def _parse(self) -> None:
        buf = self._buf
        pos = 0
        end = len(buf)
        on_message = self.on_message
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            n = b1 & 0x7F
            i = pos + 2
            if n == 126:
                if end - i < 2:
                    break
                n = int.from_bytes(buf[i:i + 2], "big")
                i += 2
            elif n == 127:
                if end - i < 8:
                    break
                n = int.from_bytes(buf[i:i + 8], "big")
                i += 8
            if b1 & 0x80:  # servers never mask; tolerate it anyway
                if end - i < 4:
                    break
                mask = bytes(buf[i:i + 4])
                i += 4
            else:
                mask = None
            if end - i < n:
                break
            payload = bytes(buf[i:i + n])
            pos = i + n
            if mask is not None and n:
                key = (mask * (n // 4 + 1))[:n]
                payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode in (OP_TEXT, OP_BINARY):
                if fin:
                    on_message(self, payload)
                else:
                    self._fragments = [payload]
            elif opcode == OP_CONT:
                if self._fragments is not None:
                    self._fragments.append(payload)
                    if fin:
                        whole = b"".join(self._fragments)
                        self._fragments = None
                        on_message(self, whole)
            elif opcode == OP_PING:
                self._write(frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self._write(frame(OP_CLOSE, payload[:2]))
                if self.transport is not None:
                    self.transport.close()
                break
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.handshake.done():
            self.handshake.set_exception(exc or HandshakeError("connection closed during the handshake"))
        if self.on_close is not None:
            self.on_close(self)

    # -- sending ---------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def send_text(self, payload: bytes | str) -> None:
        if isinstance(payload, str):
            payload = payload.encode()
        self._write(frame(OP_TEXT, payload))

    def close(self, code: int = 1000) -> None:
        if self.transport is None or self.closed:
            return
        self._write(frame(OP_CLOSE, code.to_bytes(2, "big")))
        self.close_code = code  # closed from this side: counted as such, not as 1006 (lost)
        # Do not wait for the server's close frame: the transport goes now.
        self.transport.close()

    def _fail(self, exc: Exception) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


async def connect(host: str, port: int, path: str, headers: dict[str, str],
                  on_message: Callable[[WSClient, bytes], None], on_close: Callable[[WSClient], None] | None = None,
                  key: object = None, user: object = None, timeout: float = 30.0) -> WSClient:
    """Open a connection and complete the upgrade, or raise."""
    loop = asyncio.get_running_loop()
    client = WSClient(host, port, path, headers, on_message, on_close, key, user)
    await asyncio.wait_for(loop.create_connection(lambda: client, host, port), timeout)
    await asyncio.wait_for(client.handshake, timeout)
    return client
