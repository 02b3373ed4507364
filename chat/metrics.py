"""Prometheus metrics at ``/metrics`` (per process: scrape every worker, or sum).

Counters that the hub keeps anyway (deliveries, slow consumers, gap fills,
failed publishes) are read at scrape time, costing nothing per frame; the two
latency histograms observe once per send and once per fanned-out event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from chat.hub import Hub

# Buckets from half a millisecond to five seconds: acknowledgements wait for a commit.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


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

    def render(self) -> bytes:
        return generate_latest(self.registry)
