"""How connections end, seen from a client on the wire: a client that stops
reading gets 4008 once it reads again (and the log says what waited for it);
a stopped server closes with 1012 `server restarting`; frames the WebSocket
layer cannot accept close with 1002, 1007 or 1009, and leave at most one
warning line, without traceback, in the log.  The raw client here speaks
RFC 6455 itself, so that it can stop reading, keep its buffers small, and send
frames no library would."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import signal
import socket
import struct
from pathlib import Path

import pytest
import websockets

from chat import logsafety
from tests.client import WAIT, WSClient
from tests.conftest import JEAN, MARIE, NADIA, actor_for, child_id, person_by_email

OP_TEXT, OP_CLOSE = 0x1, 0x8
# Small enough to reach with a few hundred kilobytes of messages (the default is 1 MiB), and
# well above the transport's high-water mark (64 KiB), up to which a replay fills the socket.
SEND_QUEUE_KIB = 256


@pytest.fixture
def settings(settings, request):
    # A test may shorten how long a closed connection's client has to read up to the close frame.
    grace = getattr(request.function, "close_grace", settings.ping_timeout)
    return settings.with_(send_queue_frames=SEND_QUEUE_KIB, ping_timeout=grace)


class RawClient:
    """A bare WebSocket client on an asyncio stream with small buffers: it reads
    only when told to, so a client that stops reading is one that is not told."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, ws_url: str, token: str) -> "RawClient":
        host, port = ws_url.split("/")[2].split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window stays small
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock, limit=8192)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                      f"Authorization: Bearer {token}\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"HTTP/1.1 101"), head
        client = cls(reader, writer)
        opcode, hello = await client.read_frame()
        assert opcode == OP_TEXT and json.loads(hello)["type"] == "hello"
        return client

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False) -> None:
        mask = b"\0\0\0\0"  # a valid masking key that leaves the payload as it is
        first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
        size = len(payload)
        if size < 126:
            head = bytes((first, 0x80 | size))
        elif size < 65536:
            head = struct.pack("!BBH", first, 0x80 | 126, size)
        else:
            head = struct.pack("!BBQ", first, 0x80 | 127, size)
        self.writer.write(head + mask + payload)

    def send_json(self, frame: dict) -> None:
        self.send_frame(OP_TEXT, json.dumps(frame).encode())

    async def read_frame(self) -> tuple[int, bytes]:
        first, second = await asyncio.wait_for(self.reader.readexactly(2), WAIT)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await asyncio.wait_for(self.reader.readexactly(size), WAIT)

    async def read_until_close(self) -> tuple[list[dict], int, str]:
        """Every text frame up to the close frame, and the close's code and reason."""
        frames = []
        while True:
            opcode, payload = await self.read_frame()
            if opcode == OP_TEXT:
                frames.append(json.loads(payload))
            elif opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.send_frame(OP_CLOSE, payload[:2])
                return frames, code, payload[2:].decode()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


# -- 4008: a client that stops reading ----------------------------------------------------------------------
async def test_a_client_that_stops_reading_gets_4008_when_it_reads_again_and_the_log_says_what_waited(
        server, caplog):
    """Jean's client stops reading while Marie writes long messages.  Once more
    than the bound waits for him in the server, he is closed with 4008: he sees
    it, after what was sent before it, when he reads again; the log line counts
    what waited; Nadia gets every message; Jean resumes without loss."""
    caplog.set_level(logging.INFO, logger="chat.hub")
    marie = await actor_for(server.service, MARIE)
    jean_id = (await person_by_email(server.service, JEAN)).id
    nadia_id = (await person_by_email(server.service, NADIA)).id
    cid = (await server.service.membership.create(marie, [nadia_id, jean_id],
                                                    await child_id(server.service, "Léa")))["id"]
    nadia = await server.connect(NADIA)
    jean = await RawClient.open(server.ws_url, await server.token(JEAN))
    jean.send_json({"type": "resume", "id": 1, "positions": {}})
    while (frame := json.loads((await jean.read_frame())[1])).get("id") != 1:
        pass
    assert frame["type"] == "ok"
    # Jean reads nothing more from here.  150 messages of ~4 KB: more than twice
    # the bound, a sixth of what the kernel's send buffer alone would take in.
    count, text = 150, "x" * 3900
    for i in range(count):
        await server.service.sending.send(marie, cid, f"m{i}", f"{i}:{text}")
        # Nadia reads each message as it comes: the others are not held up.
        assert (await nadia.event("message.new"))["message"]["text"] == f"{i}:{text}"
    await nadia.close()

    frames, code, reason = await jean.read_until_close()
    assert (code, reason) == (4008, "slow consumer: resume from your last seq")
    received = [int(f["message"]["text"].split(":")[0]) for f in frames if f.get("kind") == "message.new"]
    assert received == list(range(len(received))) and len(received) < count  # in order, then the close
    await jean.close()

    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("closing slow consumer")]
    assert len(lines) == 1 and f"(person {jean_id})" in lines[0]
    unsent = int(re.search(r"(\d+) bytes unsent in the transport", lines[0]).group(1))
    written = int(re.search(r"(\d+) frames written meanwhile", lines[0]).group(1))
    assert unsent > SEND_QUEUE_KIB * 1024 and written > 0, lines[0]

    last = next(f["seq"] for f in reversed(frames) if f.get("type") == "event")
    again = await server.connect(JEAN, resume={cid: last})
    rest = [(await again.event("message.new"))["message"]["text"] for _ in range(count - len(received))]
    assert received + [int(t.split(":")[0]) for t in rest] == list(range(count))
    await again.close()


async def test_a_client_that_never_reads_its_close_frame_is_dropped_with_what_waited_for_it(server):
    """After a 4008 the server keeps the bytes sent before the close frame only
    for the keepalive's time to answer (shortened here): then the connection is
    reset, and a client that reads at last finds it ended without a close frame."""
    from tests.test_delivery import wait_for

    marie = await actor_for(server.service, MARIE)
    jean_id = (await person_by_email(server.service, JEAN)).id
    nadia_id = (await person_by_email(server.service, NADIA)).id
    cid = (await server.service.membership.create(marie, [nadia_id, jean_id],
                                                    await child_id(server.service, "Léa")))["id"]
    jean = await RawClient.open(server.ws_url, await server.token(JEAN))
    (conn,) = server.service.hub.by_person[jean_id]
    socket_protocol = conn._socket  # uvicorn's protocol object: it knows when the connection is gone
    jean.send_json({"type": "resume", "id": 1, "positions": {}})
    while json.loads((await jean.read_frame())[1]).get("id") != 1:
        pass
    text = "x" * 3900
    for i in range(300):
        if conn.close_code is not None:
            break
        await server.service.sending.send(marie, cid, f"m{i}", text)
    assert conn.close_code == 4008
    await wait_for(lambda: socket_protocol.disconnected)
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await jean.read_until_close()
    await jean.close()


test_a_client_that_never_reads_its_close_frame_is_dropped_with_what_waited_for_it.close_grace = 0.2


# -- 1012: the server stops ---------------------------------------------------------------------------------
async def test_a_stopped_server_closes_every_connection_with_1012_server_restarting(settings, engine, service,
                                                                                  tmp_path, monkeypatch):
    """`python -m chat serve` stopped (SIGTERM) while a client is connected: the
    client gets 1012 with the reason docs/protocol.md promises."""
    import chat
    from tests.test_workers import connect, start_worker

    # The server process runs this tree's code, whatever `pip install -e` points at.
    tree = str(Path(chat.__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tree, os.environ.get("PYTHONPATH")])))
    worker = await start_worker(settings, tmp_path)
    try:
        client = await connect(service, worker, MARIE)
        worker.process.send_signal(signal.SIGTERM)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(client.ws.recv(), WAIT)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1012, "server restarting")
        await asyncio.get_running_loop().run_in_executor(None, worker.process.wait, 20)
    finally:
        if worker.process.poll() is None:
            worker.kill()


# -- what the WebSocket layer refuses -----------------------------------------------------------------------
@pytest.fixture
def server_log():
    """Every record uvicorn's loggers emit (they do not propagate to the root)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


async def test_text_frames_that_are_not_utf8_close_with_1007_and_log_one_line_without_traceback(
        server, server_log, monkeypatch):
    limiter = getattr(logsafety, "BAD_INPUT", None)
    if limiter is not None:  # as if no earlier test had sent any
        monkeypatch.setattr(limiter, "last", float("-inf"))
        monkeypatch.setattr(limiter, "left_out", 0)
    token = await server.token(MARIE)
    for _ in range(3):
        client = await RawClient.open(server.ws_url, token)
        client.send_frame(OP_TEXT, b'{"type":"ping","id":1,"x":"\xff\xfe"}')
        frames, code, _reason = await client.read_until_close()
        assert code == 1007 and frames == []
        await client.close()
    async with await server.connect(MARIE) as marie:
        assert (await marie.request("ping"))["pong"] is True
    assert not [r for r in server_log if r.levelno >= logging.ERROR or r.exc_info or r.exc_text]
    warnings = [r.getMessage() for r in server_log if r.levelno == logging.WARNING]
    assert warnings == ["a client sent a text frame that is not UTF-8: closed with 1007"]


async def test_a_compressed_frame_without_negotiation_closes_with_1002(server, server_log):
    client = await RawClient.open(server.ws_url, await server.token(MARIE))
    client.send_frame(OP_TEXT, b'{"type":"ping","id":1}', rsv1=True)  # permessage-deflate is never negotiated
    frames, code, reason = await client.read_until_close()
    assert (frames, code, reason) == ([], 1002, "reserved bits must be 0")
    await client.close()
    assert not [r for r in server_log if r.levelno >= logging.WARNING]


async def test_the_1_mib_limit_applies_to_the_whole_message_not_to_each_frame(server):
    """Two fragments of 600 KiB, each under the hard limit, make a message above it."""
    client = await server.connect(MARIE)
    part = "a" * (600 * 1024)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await client.ws.send([part, part])  # one message in two frames
        while True:
            await client._receive(WAIT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_a_fragmented_message_is_one_frame_for_the_64_kib_limit(server):
    client = await RawClient.open(server.ws_url, await server.token(MARIE))
    body = json.dumps({"type": "ping", "id": 7, "pad": "a" * (80 * 1024)}).encode()
    client.send_frame(OP_TEXT, body[:len(body) // 2], fin=False)
    client.send_frame(0x0, body[len(body) // 2:], fin=True)
    opcode, payload = await client.read_frame()
    answer = json.loads(payload)
    assert (answer["type"], answer["code"], answer["id"]) == ("error", "request.too_large", None)
    assert answer["fields"]["size"] == len(body)
    client.send_json({"type": "ping", "id": 8})  # the connection stays open
    assert json.loads((await client.read_frame())[1]) == {"type": "ok", "id": 8, "pong": True}
    await client.close()


async def test_unknown_keys_in_a_client_frame_are_ignored(server):
    async with await server.connect(MARIE) as marie:
        answer = await marie.request("ping", colour="blue", nested={"a": [1, 2]})
        assert answer == {"type": "ok", "id": answer["id"], "pong": True}


async def test_retry_after_is_a_field_of_the_error_in_fractional_seconds(server):
    async with await server.connect(MARIE) as marie:
        ids = [await marie.send("ping") for _ in range(int(server.settings.rate_burst) * 2)]
        answers = [await marie.reply(i) for i in ids]
    limited = [a for a in answers if a["type"] == "error"]
    assert limited and {a["code"] for a in limited} == {"rate_limited"}
    retry_after = limited[0]["fields"]["retry_after"]
    assert isinstance(retry_after, float) and 0 < retry_after < 1  # 20 frames/s: a twentieth of a second or so
