"""A small protocol client for the tests, over a real WebSocket (``websockets``).

"Nothing more arrives" is never a quiet spell: :meth:`WSClient.drain` reads up
to a positive barrier (see there), so a busy machine cannot make it miss a
frame that was on its way, nor fail a test by being slow.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from typing import Any, Awaitable, Callable

import websockets

# Seconds: a bound on waiting for an expected frame, never a timing assertion.  Long
# enough for a CI machine whose cores are busy elsewhere; a passing test never waits it.
WAIT = 30.0
# The marker frame a test server publishes through its broker for drain()'s barrier.
BARRIER = "test.barrier"


class WSClient:
    _ids = itertools.count(1)

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []  # everything received that no request took
        self.hello: dict[str, Any] | None = None
        # Publishes a BARRIER frame with the given token to this client's person through
        # the server's broker (set by the test server, tests.conftest.broker_barrier).
        self.barrier: Callable[[str], Awaitable[None]] | None = None
        self.barriers_seen: set[str] = set()

    @classmethod
    async def open(cls, url: str, token: str | None, **kwargs: Any) -> "WSClient":
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kwargs.setdefault("open_timeout", WAIT)
        ws = await websockets.connect(url, additional_headers=headers, max_size=None, **kwargs)
        client = cls(ws)
        client.hello = await client.next("hello")
        return client

    async def close(self) -> None:
        await self.ws.close()

    async def __aenter__(self) -> "WSClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, positions: dict[int, int]) -> dict[str, Any]:
        return await self.request("resume", positions={str(k): v for k, v in positions.items()})

    async def _receive_any(self, timeout: float) -> dict[str, Any]:
        """The next frame, barrier markers included (their token is noted)."""
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        if frame.get("type") == BARRIER:
            self.barriers_seen.add(frame["token"])
        return frame

    async def _receive(self, timeout: float) -> dict[str, Any]:
        """The next frame the server sent of its own (barrier markers are skipped)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            frame = await self._receive_any(deadline - asyncio.get_running_loop().time())
            if frame.get("type") != BARRIER:
                return frame

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def send(self, frame_type: str, **fields: Any) -> int:
        request_id = next(self._ids)
        await self.ws.send(json.dumps({"type": frame_type, "id": request_id, **fields}))
        return request_id

    async def reply(self, request_id: Any, timeout: float = WAIT) -> dict[str, Any]:
        """The ok/error frame answering ``request_id``; other frames are kept."""
        for i, frame in enumerate(self.frames):
            if frame.get("type") in ("ok", "error") and frame.get("id") == request_id:
                return self.frames.pop(i)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            frame = await self._receive(deadline - asyncio.get_running_loop().time())
            if frame.get("type") in ("ok", "error") and frame.get("id") == request_id:
                return frame
            self.frames.append(frame)

    async def request(self, frame_type: str, **fields: Any) -> dict[str, Any]:
        """Send and wait for the answer; raise if it is an error."""
        answer = await self.reply(await self.send(frame_type, **fields))
        if answer["type"] == "error":
            raise AssertionError(f"{frame_type} refused: {answer}")
        return answer

    async def refused(self, frame_type: str, **fields: Any) -> dict[str, Any]:
        """Send and wait for the answer; it must be an error frame."""
        answer = await self.reply(await self.send(frame_type, **fields))
        assert answer["type"] == "error", f"{frame_type} should have been refused: {answer}"
        return answer

    async def next(self, frame_type: str | None = None, kind: str | None = None, timeout: float = WAIT) -> dict[str, Any]:
        """The next frame of that type (and event kind), waiting for it if needed."""

        def matches(frame: dict[str, Any]) -> bool:
            return (frame_type is None or frame.get("type") == frame_type) and (kind is None or frame.get("kind") == kind)

        for i, frame in enumerate(self.frames):
            if matches(frame):
                return self.frames.pop(i)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            frame = await self._receive(deadline - asyncio.get_running_loop().time())
            if matches(frame):
                return frame
            self.frames.append(frame)

    async def event(self, kind: str | None = None, timeout: float = WAIT) -> dict[str, Any]:
        return await self.next("event", kind, timeout)

    async def drain(self) -> list[dict[str, Any]]:
        """Every frame received up to a positive barrier, on a started connection.

        The barrier is two frames the client waits for: the answer to a
        ``ping`` sent now (a connection's frames are handled in order, so every
        reply, and whatever was pushed while handling the frames before, comes
        first) and, when the test server set :attr:`barrier`, a marker published
        now on the person's broker channel (the broker hands a worker its
        messages in the order it took the publishes, and every event is
        published before its request is answered: whatever was published for
        this client before comes first).  A gap fill or replay runs on its own:
        wait for its last expected event before draining."""
        token = uuid.uuid4().hex
        if self.barrier is not None:
            await self.barrier(token)
        else:
            self.barriers_seen.add(token)
        request_id = await self.send("ping")
        frames, self.frames = self.frames, []
        answered = False
        deadline = asyncio.get_running_loop().time() + WAIT
        while not (answered and token in self.barriers_seen):
            frame = await self._receive_any(deadline - asyncio.get_running_loop().time())
            if frame.get("type") == BARRIER:
                continue
            if frame.get("type") in ("ok", "error") and frame.get("id") == request_id:
                answered = True
                continue
            frames.append(frame)
        self.barriers_seen.discard(token)
        return frames

    async def events(self) -> list[dict[str, Any]]:
        """The events among :meth:`drain`'s frames."""
        return [f for f in await self.drain() if f.get("type") == "event"]
