"""Prometheus metrics at ``/metrics`` (per process: scrape every worker, or sum).

Counters that the hub keeps anyway (deliveries, slow consumers, gap fills,
failed publishes) are read at scrape time, costing nothing per frame; the two
latency histograms observe once per send and once per fanned-out event.  Two
more show what holds the whole process up — every connection of a worker
waits while its event loop does: the garbage collector's pauses (by
generation) and how late a timer of the event loop fires.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import TYPE_CHECKING, AsyncContextManager, Callable

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chat.storage.models import Notification
from chat.tasks import cancel_and_wait

if TYPE_CHECKING:
    from chat.hub import Hub

# Buckets from half a millisecond to five seconds: acknowledgements wait for a commit.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# The event loop's lateness is sampled by a timer of this period.
LAG_INTERVAL = 0.1


class HubCollector:
    def __init__(self, hub: "Hub") -> None:
        self.hub = hub

    def collect(self):
        stats = self.hub.stats
        yield GaugeMetricFamily("chat_connections", "Open WebSocket connections in this process",
                                value=self.hub.connection_count())
        for name, key, text in (
            ("chat_deliveries", "delivered", "Frames handed to local connections by fan-out"),
            ("chat_slow_consumers", "slow_consumers", "Connections closed because their outbox overflowed"),
            ("chat_gap_fills", "gap_fills", "Replays from the database to fill a gap or resume"),
            ("chat_publish_failures", "publish_failures", "Broker publishes that failed (recovered by resync)"),
        ):
            yield CounterMetricFamily(name, text, value=stats.get(key, 0))


class Metrics:
    def __init__(self, hub: "Hub") -> None:
        self.registry = CollectorRegistry()
        self.registry.register(HubCollector(hub))
        self.send_to_ack = Histogram("chat_send_ack_seconds", "From a message.send frame to its acknowledgement",
                                     buckets=LATENCY_BUCKETS, registry=self.registry)
        self.fanout = Histogram("chat_fanout_seconds", "Local fan-out of one event to this process's connections",
                                buckets=LATENCY_BUCKETS, registry=self.registry)
        self.held = Gauge("chat_held_notifications", "Notifications held until working hours (R15)",
                          registry=self.registry)
        gc_pause = Histogram("chat_gc_pause_seconds", "Pauses of the cyclic garbage collector, by generation",
                             ["generation"], buckets=PAUSE_BUCKETS, registry=self.registry)
        self._gc_pauses = [gc_pause.labels(str(generation)) for generation in range(3)]
        self.loop_lag = Histogram("chat_event_loop_lag_seconds",
                                  f"How late a {LAG_INTERVAL * 1000:.0f} ms timer of the event loop fires",
                                  buckets=PAUSE_BUCKETS, registry=self.registry)
        self._gc_started = 0.0
        self._lag_task: asyncio.Task | None = None

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._lag_task = asyncio.create_task(self._sample_lag(), name="event-loop-lag")

    async def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        await cancel_and_wait(self._lag_task)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self._gc_pauses[info["generation"]].observe(time.perf_counter() - self._gc_started)

    async def _sample_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_INTERVAL
            await asyncio.sleep(LAG_INTERVAL)
            self.loop_lag.observe(max(0.0, loop.time() - due))

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def held_notifications(sessions: Callable[[], AsyncContextManager[AsyncSession]]) -> int:
    """How many notifications are held until working hours (R15): those not yet
    delivered, counted in the database at scrape time."""
    async with sessions() as session:
        return (await session.execute(select(func.count()).select_from(Notification).where(
            Notification.delivered_at.is_(None)))).scalar_one()
