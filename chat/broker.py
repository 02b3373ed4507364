"""Fan-out between hub processes: one small interface, two backends chosen by URL.

``connect / disconnect / subscribe / unsubscribe / publish`` (the
encode/broadcaster shape).  ``memory://`` delivers inside the process and is
the embedded default; ``redis://`` uses Redis pub/sub so that every worker
sharing the Redis receives what any worker publishes.  The same test body runs
against both (tests/test_broker.py).

Messages are opaque bytes; the hub decides what they mean.  A backend calls
``on_message(channel, data)`` for each message on a subscribed channel, and
``on_resync()`` after it recovered from an outage, so that the hub can fetch
from the database whatever it may have missed meanwhile (nothing is lost: every
event is committed before it is published).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Awaitable, Callable, Protocol

from chat.tasks import cancel_and_wait

log = logging.getLogger("chat.broker")

MessageHandler = Callable[[str, bytes], None]
ResyncHandler = Callable[[], Awaitable[None]]


class Broker(Protocol):
    async def connect(self) -> None: ...
    async def disconnect(self) -> None: ...
    async def subscribe(self, channel: str) -> None: ...
    async def unsubscribe(self, channel: str) -> None: ...
    async def publish(self, channel: str, data: bytes) -> None: ...
    async def publish_many(self, items: list[tuple[str, bytes]]) -> None: ...


class MemoryBroker:
    """In-process delivery: ``publish`` hands the bytes straight to the handler."""

    def __init__(self, on_message: MessageHandler, on_resync: ResyncHandler | None = None) -> None:
        self._on_message = on_message
        self._channels: set[str] = set()

    async def connect(self) -> None:
        return None

    async def disconnect(self) -> None:
        self._channels.clear()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def publish(self, channel: str, data: bytes) -> None:
        if channel in self._channels:
            self._on_message(channel, data)

    async def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        for channel, data in items:
            await self.publish(channel, data)


class RedisBroker:
    """Redis pub/sub.  One connection listens; publishes use the client's pool.

    If Redis goes away the listener retries with backoff (0.1 s doubling to
    5 s), re-subscribes every channel and calls ``on_resync``; publishes made
    during the outage raise, are logged by the hub and recovered by the resync.
    """

    def __init__(
        self,
        url: str,
        on_message: MessageHandler,
        on_resync: ResyncHandler | None = None,
        prefix: str = "chat",
    ) -> None:
        import redis.asyncio as redis

        self._redis_module = redis
        self._url = url
        self._on_message = on_message
        self._on_resync = on_resync
        self._prefix = prefix + ":"
        self._channels: set[str] = set()
        # Named so that operators (and tests) can tell each worker's connections apart.
        self.client_name = f"{prefix}:{os.getpid()}:{id(self):x}"
        self._client = redis.Redis.from_url(url, health_check_interval=15, client_name=self.client_name)
        self._pubsub = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._control = self._prefix + "_control"
        self._background: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        await self._client.ping()
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        # Always one subscription, so the listener has a connection to read from.
        await self._pubsub.subscribe(self._control)
        self._ready.set()
        self._task = asyncio.create_task(self._listen(), name="redis-broker-listener")

    async def disconnect(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._pubsub is not None:
            try:
                await self._pubsub.aclose()
            except Exception:  # pragma: no cover - closing a broken connection
                pass
        await self._client.aclose()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        if self._pubsub is not None and self._ready.is_set():
            try:
                await self._pubsub.subscribe(self._prefix + channel)
            except self._redis_module.ConnectionError:
                log.warning("redis unavailable while subscribing; will resubscribe on reconnect")

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        if self._pubsub is not None and self._ready.is_set():
            try:
                await self._pubsub.unsubscribe(self._prefix + channel)
            except self._redis_module.ConnectionError:
                pass

    async def publish(self, channel: str, data: bytes) -> None:
        await self._client.publish(self._prefix + channel, data)

    async def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        """One round trip for a batch (a group commit's events), in order."""
        async with self._client.pipeline(transaction=False) as pipe:
            for channel, data in items:
                pipe.publish(self._prefix + channel, data)
            await pipe.execute()

    async def _listen(self) -> None:
        strip = len(self._prefix)
        delay = 0.1
        while True:
            try:
                async for message in self._pubsub.listen():
                    if message["type"] != "message":
                        continue
                    channel = message["channel"]
                    if isinstance(channel, bytes):
                        channel = channel.decode()
                    if channel == self._control:
                        continue
                    try:
                        self._on_message(channel[strip:], message["data"])
                    except Exception:
                        log.exception("hub failed to handle a broker message")
                    delay = 0.1
                # listen() ends when nothing is subscribed any more: treat as a lost link.
                raise self._redis_module.ConnectionError("pub/sub connection closed")
            except asyncio.CancelledError:
                raise
            except (self._redis_module.ConnectionError, self._redis_module.TimeoutError, OSError) as exc:
                self._ready.clear()
                log.warning("redis connection lost (%s); retrying in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                await self._reconnect()

    async def _reconnect(self) -> None:
        try:
            await self._pubsub.aclose()
        except Exception:
            pass
        try:
            self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            await self._pubsub.subscribe(self._control, *(self._prefix + c for c in self._channels))
        except (self._redis_module.ConnectionError, self._redis_module.TimeoutError, OSError):
            return  # the listen loop will fail again and back off
        self._ready.set()
        log.info("redis connection restored; resubscribed %d channels", len(self._channels))
        if self._on_resync is not None:
            task = asyncio.create_task(self._on_resync())
            self._background.add(task)
            task.add_done_callback(self._background.discard)


def create_broker(
    url: str, on_message: MessageHandler, on_resync: ResyncHandler | None = None, prefix: str = "chat"
) -> Broker:
    """``memory://`` (or empty) → MemoryBroker; ``redis://…`` → RedisBroker."""
    if not url or url.startswith("memory://"):
        return MemoryBroker(on_message, on_resync)
    return RedisBroker(url, on_message, on_resync, prefix=prefix)
