"""The broker interface: the same test body against the in-process and the Redis
backend (the encode/broadcaster habit), plus what only Redis can do: reach
another process, and recover from a lost connection."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as redis

from chat.broker import MemoryBroker, RedisBroker, create_broker
from tests.client import WAIT
from tests.conftest import REDIS_URL


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.resyncs = 0
        self.arrived = asyncio.Event()

    def __call__(self, channel: str, data: bytes) -> None:
        self.messages.append((channel, data))
        self.arrived.set()

    async def resync(self) -> None:
        self.resyncs += 1

    async def wait(self, count: int, timeout: float = WAIT) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.messages) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), deadline - asyncio.get_running_loop().time())

    async def wait_for_message(self, message: tuple[str, bytes], timeout: float = WAIT) -> None:
        """Until ``message`` has arrived: published last, it is the barrier behind
        which everything published before it has arrived too (or never will)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while message not in self.messages:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), deadline - asyncio.get_running_loop().time())


@pytest.fixture(params=["memory", "redis"])
def broker_url(request) -> str:
    return "memory://" if request.param == "memory" else REDIS_URL


@pytest.fixture
async def connected(broker_url):
    """A connected broker of each backend, with the inbox it delivers to."""
    inbox = Inbox()
    broker = create_broker(broker_url, inbox, prefix=f"t-{uuid.uuid4().hex}")
    await broker.connect()
    yield broker, inbox
    await broker.disconnect()


async def test_create_broker_picks_the_backend_by_url():
    inbox = Inbox()
    assert isinstance(create_broker("memory://", inbox), MemoryBroker)
    assert isinstance(create_broker("", inbox), MemoryBroker)
    assert isinstance(create_broker(REDIS_URL, inbox), RedisBroker)


async def test_publish_many_delivers_a_batch_in_order_to_subscribed_channels_only(connected):
    """A group commit's events go out in one call (one Redis round trip), in order."""
    broker, inbox = connected
    await broker.subscribe("conv:1")
    await broker.subscribe("conv:2")
    batch = [(f"conv:{1 + i % 3}", b"e%d" % i) for i in range(30)]  # conv:3 has no subscriber
    await broker.publish_many(batch)
    await broker.publish("conv:1", b"marker")
    await inbox.wait_for_message(("conv:1", b"marker"))  # so nothing more (conv:3) is on its way
    assert inbox.messages == [(c, d) for c, d in batch if c != "conv:3"] + [("conv:1", b"marker")]


async def test_subscribed_channel_receives_published_bytes_in_order(connected):
    broker, inbox = connected
    await broker.subscribe("conv:1")
    for i in range(20):
        await broker.publish("conv:1", b"m%d" % i)
    await inbox.wait(20)
    assert inbox.messages == [("conv:1", b"m%d" % i) for i in range(20)]


async def test_unsubscribed_and_other_channels_receive_nothing(connected):
    broker, inbox = connected
    await broker.subscribe("conv:1")
    await broker.subscribe("conv:2")
    await broker.unsubscribe("conv:2")
    await broker.publish("conv:2", b"not for us")
    await broker.publish("conv:3", b"never subscribed")
    await broker.publish("conv:1", b"marker")
    await inbox.wait_for_message(("conv:1", b"marker"))  # published last: nothing else is on its way
    assert inbox.messages == [("conv:1", b"marker")]


async def test_redis_delivers_between_two_brokers_like_two_workers():
    prefix = f"t-{uuid.uuid4().hex}"
    inbox_a, inbox_b = Inbox(), Inbox()
    a, b = RedisBroker(REDIS_URL, inbox_a, prefix=prefix), RedisBroker(REDIS_URL, inbox_b, prefix=prefix)
    await a.connect()
    await b.connect()
    try:
        await b.subscribe("conv:7")
        await a.subscribe("conv:8")
        await a.publish("conv:7", b"from worker a")
        await a.publish("conv:8", b"marker")
        await inbox_b.wait(1)
        await inbox_a.wait_for_message(("conv:8", b"marker"))  # a has heard everything published before it
        assert inbox_b.messages == [("conv:7", b"from worker a")]
        assert inbox_a.messages == [("conv:8", b"marker")]
    finally:
        await a.disconnect()
        await b.disconnect()


async def test_redis_broker_resubscribes_and_resyncs_after_its_connection_is_killed():
    prefix = f"t-{uuid.uuid4().hex}"
    inbox = Inbox()
    broker = RedisBroker(REDIS_URL, inbox, inbox.resync, prefix=prefix)
    await broker.connect()
    admin = redis.Redis.from_url(REDIS_URL)
    try:
        await broker.subscribe("conv:3")
        # Kill this broker's pub/sub connection, as a Redis restart or a network cut would.
        killed = 0
        for client in await admin.client_list(_type="pubsub"):
            if client.get("name") == broker.client_name:
                await admin.client_kill_filter(_id=client["id"])
                killed += 1
        assert killed == 1
        deadline = asyncio.get_running_loop().time() + WAIT
        while inbox.resyncs == 0:
            assert asyncio.get_running_loop().time() < deadline, "broker never reconnected"
            await asyncio.sleep(0.05)
        await broker.publish("conv:3", b"after the outage")
        await inbox.wait(1)
        assert inbox.messages == [("conv:3", b"after the outage")]
    finally:
        await broker.disconnect()
        await admin.aclose()
