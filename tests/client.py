"""A small protocol client for the tests, over a real WebSocket (``websockets``)."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import websockets

WAIT = 5.0  # seconds: a bound on waiting for an expected frame, never a timing assertion
QUIET = 0.3  # seconds: how long "nothing more arrives" is watched


class WSClient:
    _ids = itertools.count(1)

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []  # everything received that no request took
        self.hello: dict[str, Any] | None = None

    @classmethod
    async def open(cls, url: str, token: str | None, **kwargs: Any) -> "WSClient":
        headers = {"Authorization": f"Bearer {token}"} if token else {}
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

    async def _receive(self, timeout: float) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        return json.loads(raw)

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

    async def drain(self, quiet: float = QUIET) -> list[dict[str, Any]]:
        """Everything that arrives until the line stays quiet for ``quiet`` seconds."""
        frames, self.frames = self.frames, []
        while True:
            try:
                frames.append(await self._receive(quiet))
            except asyncio.TimeoutError:
                return frames

    async def events(self, quiet: float = QUIET) -> list[dict[str, Any]]:
        return [f for f in await self.drain(quiet) if f.get("type") == "event"]
