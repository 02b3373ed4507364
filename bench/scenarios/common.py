"""What every scenario shares: the run's context, figures and small statistics."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.fixtures import People
from harness.procstat import Group
from harness.servers import Server
from loadgen.control import Workers


@dataclass
class Context:
    quick: bool
    tmp: Path
    workers: Workers
    people: People | None
    secret: str
    tokens: dict[int, str]
    log: Callable[[str], None]
    profiles_dir: Path
    profile: bool
    results: dict[str, Any] = field(default_factory=dict)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(q / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def ms(ns: float | None) -> float | None:
    return None if ns is None else round(ns / 1e6, 3)


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def split(items: list, parts: int) -> list[list]:
    """Round-robin split (client i goes to load generator i % parts)."""
    return [items[i::parts] for i in range(parts)]


async def connect(ctx: Context, items: list[tuple[Any, int, str | None]], dialect: str, group: Group | None = None,
                  want_conversations: bool = False, concurrency: int = 40) -> dict[str, Any]:
    """Open ``(key, port, token)`` connections spread over the load generators; with a
    server ``group``, also the server CPU it took (connect + sign-in + resume)."""
    if not items:
        return {"opened": 0, "failed": 0, "seconds": 0.0, "per_worker": [0] * len(ctx.workers), "conversations": {}}
    cpu0 = group.cpu() if group else 0.0
    started = time.monotonic()
    parts = split(items, len(ctx.workers))
    results = await ctx.workers.all("connect", per_worker=[{"items": p} for p in parts], dialect=dialect,
                                    concurrency=concurrency, want_conversations=want_conversations, timeout=1800)
    seconds = time.monotonic() - started
    cpu = (group.cpu() - cpu0) if group else None
    opened = sum(r["opened"] for r in results)
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    conversations: dict[Any, Any] = {}
    for r in results:
        conversations.update(r.get("conversations") or {})
    return {"opened": opened, "failed": sum(r["failed"] for r in results), "errors": errors,
            "seconds": round(seconds, 2), "per_second": round(opened / seconds, 1) if seconds else None,
            "server_cpu_ms_per_connection": round(cpu / max(opened, 1) * 1e3, 2) if cpu is not None else None,
            "per_worker": [r["opened"] for r in results], "conversations": conversations}


async def idle_cpu_rate(group: Group, seconds: float = 2.0) -> float:
    """The server's CPU seconds per second while nothing is asked of it (keepalive pings,
    timers): subtracted from a burst's CPU so that a figure is the burst's own."""
    cpu0, t0 = group.cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    return (group.cpu() - cpu0) / (time.monotonic() - t0)


def figure(deliveries_per_s: float | None, cpu_us_per_frame: float | None, p50_ms: float | None,
           p99_ms: float | None, peak_rss_mib: float | None, **extra: Any) -> dict[str, Any]:
    """The four numbers every scenario reports (the issue's list), plus its own."""
    return {"deliveries_per_s": None if deliveries_per_s is None else round(deliveries_per_s, 1),
            "cpu_us_per_frame": None if cpu_us_per_frame is None else round(cpu_us_per_frame, 2),
            "p50_ms": p50_ms, "p99_ms": p99_ms,
            "peak_rss_mib": None if peak_rss_mib is None else round(peak_rss_mib, 1), **extra}
