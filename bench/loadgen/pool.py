"""A pool of client connections in one process, and what they record.

Three dialects, one per kind of server in the benchmark:

* ``hub``      — the chat hub (docs/protocol.md): ``Authorization: Bearer`` on the
  handshake, ``hello``, then ``resume`` as the first frame; ready on its ``ok``.
* ``socketio`` — Engine.IO 4 over a raw WebSocket (``/socket.io/?EIO=4&transport=websocket``):
  open packet ``0{…}``, namespace connect ``40`` / ``40{…}``; pings ``2`` answered ``3``.
* ``plain``    — the minimal broadcast protocol of the peers in bench/peers/
  (``{"type":"ping"}`` → ``{"type":"pong"}`` proves the server registered us).

Receivers never decode what they do not measure: frames are matched by prefix
and only the measured ones go through orjson.  Timestamps are
``time.monotonic_ns()`` (CLOCK_MONOTONIC, one clock for every process on the
machine), so a sender in one process and a receiver in another subtract
directly.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import Counter
from typing import Any

import orjson

from loadgen.wsclient import WSClient, connect

now_ns = time.monotonic_ns

# What one broadcast looks like on the wire, per dialect (the frame is matched by prefix).
BROADCAST_PREFIX = {
    "hub": b'{"type":"announcement"',
    "socketio": b'42["announcement"',
    "plain": b'{"type":"bcast"',
}
PATHS = {"hub": "/ws", "socketio": "/socket.io/?EIO=4&transport=websocket", "plain": "/"}
MESSAGE_NEW = b'{"type":"event","kind":"message.new"'
OK = b'{"type":"ok"'
ERROR = b'{"type":"error"'
# Bench message texts start with this marker and the send time: "t<ns> …".
MARK = "t"


class ConnState:
    __slots__ = ("dialect", "ready", "conversations", "want_conversations")

    def __init__(self, dialect: str, want_conversations: bool) -> None:
        self.dialect = dialect
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.conversations: list[Any] | None = None
        self.want_conversations = want_conversations


class Pool:
    """Connections keyed by the caller's key (a person id for the hub)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.clients: dict[Any, WSClient] = {}
        self.ids = itertools.count(1000)
        self.requests: dict[int, asyncio.Future] = {}
        # Called with the sender's key when one of its message.send is answered (closed loop).
        self.on_ack = None
        self.reset()

    # -- recording ------------------------------------------------------------------------
    def reset(self, mode: str = "idle", window_start: int = 0) -> None:
        """Start a new recording: ``fanout`` (arrival times of broadcasts), ``traffic``
        (message.new deliveries, send→receive and send→ack latencies), ``events``
        (arrival times of any message.new)."""
        self.mode = mode
        self.window_start = window_start
        self.window_end = 1 << 62
        self.arrivals: list[int] = []
        self.deliveries = 0
        self.latencies: list[int] = []
        self.ack_latencies: list[int] = []
        self.acks = 0
        # Throughput is counted by arrival time inside the window (what the server
        # achieved); latencies by send time inside the window.
        self.acks_rx = 0
        self.deliveries_rx = 0
        self.pending: dict[int, int] = {}
        self.errors: Counter = Counter()
        self.other = 0
        self.closes: Counter = Counter()  # close codes of connections that ended during this recording

    def snapshot(self) -> dict[str, Any]:
        return {"arrivals": self.arrivals, "deliveries": self.deliveries, "latencies": self.latencies,
                "ack_latencies": self.ack_latencies, "acks": self.acks, "acks_rx": self.acks_rx,
                "deliveries_rx": self.deliveries_rx, "errors": dict(self.errors),
                "other": self.other, "open": sum(1 for c in self.clients.values() if not c.closed),
                "closes": dict(self.closes)}

    # -- connecting ------------------------------------------------------------------------
    async def open(self, key: Any, port: int, dialect: str, token: str | None = None,
                   want_conversations: bool = False, timeout: float = 60.0) -> WSClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        state = ConnState(dialect, want_conversations)
        client = await connect(self.host, port, PATHS[dialect], headers, self._on_message, self._on_close,
                               key=key, user=state, timeout=timeout)
        if dialect == "plain":
            client.send_text(b'{"type":"ping"}')
        await asyncio.wait_for(state.ready, timeout)
        self.clients[key] = client
        return client

    async def open_many(self, items: list[tuple[Any, int, str | None]], dialect: str, concurrency: int,
                        want_conversations: bool = False, deadline_s: float = 600.0) -> dict[str, Any]:
        """Open ``(key, port, token)`` connections, at most ``concurrency`` at a time."""
        started = time.monotonic()
        sem = asyncio.Semaphore(concurrency)
        errors: Counter = Counter()
        conversations: dict[Any, Any] = {}

        async def one(key: Any, port: int, token: str | None) -> None:
            async with sem:
                if time.monotonic() - started > deadline_s:
                    errors["deadline"] += 1
                    return
                for attempt in range(3):
                    try:
                        client = await self.open(key, port, dialect, token, want_conversations)
                        if want_conversations:
                            conversations[key] = client.user.conversations
                        return
                    except (OSError, asyncio.TimeoutError, Exception) as exc:  # noqa: BLE001 - counted
                        if attempt == 2:
                            errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
                        else:
                            await asyncio.sleep(0.2 * (attempt + 1))

        await asyncio.gather(*(one(*item) for item in items))
        return {"opened": len(items) - sum(errors.values()), "failed": sum(errors.values()),
                "errors": dict(errors.most_common(5)), "seconds": time.monotonic() - started,
                "conversations": conversations}

    async def close_all(self, keys: list[Any] | None = None) -> int:
        keys = list(self.clients) if keys is None else keys
        n = 0
        for key in keys:
            client = self.clients.pop(key, None)
            if client is not None:
                client.close()
                n += 1
        await asyncio.sleep(0.05)
        return n

    def _on_close(self, client: WSClient) -> None:
        self.closes[client.close_code or 1006] += 1

    # -- requests (hub dialect) ----------------------------------------------------------------
    async def request(self, key: Any, frame: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        """Send a hub request and wait for its ``ok`` or ``error``."""
        rid = next(self.ids)
        frame = {**frame, "id": rid}
        future = asyncio.get_running_loop().create_future()
        self.requests[rid] = future
        self.clients[key].send_text(orjson.dumps(frame))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self.requests.pop(rid, None)

    def send_message(self, key: Any, conversation_id: int, pad: str) -> int:
        """Fire a ``message.send`` whose text carries the send time; returns the request id."""
        rid = next(self.ids)
        t0 = now_ns()
        self.pending[rid] = t0
        self.clients[key].send_text(orjson.dumps({
            "type": "message.send", "id": rid, "conversation_id": conversation_id,
            "client_id": f"{os.getpid()}-{rid}", "text": f"{MARK}{t0} {pad}"}))
        return rid

    # -- receiving -----------------------------------------------------------------------------
    def _on_message(self, client: WSClient, payload: bytes) -> None:
        state: ConnState = client.user
        if not state.ready.done():
            self._handshake(client, state, payload)
            return
        if state.dialect == "socketio" and payload == b"2":
            client.send_text(b"3")
            return
        mode = self.mode
        if mode == "fanout" and payload.startswith(BROADCAST_PREFIX[state.dialect]):
            self.arrivals.append(now_ns())
            return
        if payload.startswith(MESSAGE_NEW):
            now = now_ns()
            if mode == "events":
                self.arrivals.append(now)
                return
            if mode == "traffic":
                message = orjson.loads(payload)["message"]
                text = message["text"]
                if text.startswith(MARK):
                    if self.window_start <= now < self.window_end:
                        self.deliveries_rx += 1
                    t0 = int(text[1:text.index(" ")])
                    if self.window_start <= t0 < self.window_end:
                        self.deliveries += 1
                        if message["author"] != client.key:
                            self.latencies.append(now - t0)
            return
        if payload.startswith(OK) or payload.startswith(ERROR):
            now = now_ns()
            data = orjson.loads(payload)
            rid = data.get("id")
            if data["type"] == "error":
                self.errors[data.get("code")] += 1
            future = self.requests.get(rid)
            if future is not None and not future.done():
                future.set_result(data)
                return
            t0 = self.pending.pop(rid, None)
            if t0 is not None:
                if data["type"] == "ok" and self.window_start <= now < self.window_end:
                    self.acks_rx += 1
                if data["type"] == "ok" and self.window_start <= t0 < self.window_end:
                    self.acks += 1
                    self.ack_latencies.append(now - t0)
                if self.on_ack is not None:
                    self.on_ack(client.key)
            return
        self.other += 1

    def _handshake(self, client: WSClient, state: ConnState, payload: bytes) -> None:
        dialect = state.dialect
        if dialect == "hub":
            if payload.startswith(b'{"type":"hello"'):
                client.send_text(b'{"type":"resume","id":0,"positions":{}}')
            elif payload.startswith(OK):
                data = orjson.loads(payload)
                if data.get("id") == 0:
                    if state.want_conversations:
                        state.conversations = [[c["id"], [m["id"] for m in c["members"]]]
                                               for c in data.get("conversations", [])]
                    state.ready.set_result(True)
            elif payload.startswith(ERROR):
                state.ready.set_exception(RuntimeError(payload[:200].decode(errors="replace")))
        elif dialect == "socketio":
            if payload[:1] == b"0":
                client.send_text(b"40")
            elif payload.startswith(b"40"):
                state.ready.set_result(True)
            elif payload.startswith(b"44"):
                state.ready.set_exception(RuntimeError(payload[:200].decode(errors="replace")))
            elif payload == b"2":
                client.send_text(b"3")
        else:
            if payload.startswith(b'{"type":"pong"'):
                state.ready.set_result(True)
