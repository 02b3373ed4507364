"""Token buckets as pure values: (bucket, now) → (bucket, wait)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    updated: float  # monotonic seconds


def take(bucket: Bucket | None, now: float, rate: float, burst: float, cost: float = 1.0) -> tuple[Bucket, float]:
    """Take ``cost`` tokens.  Returns the new bucket and 0.0 when allowed, or the
    unchanged bucket and the seconds to wait before the same call would pass."""
    if bucket is None:
        bucket = Bucket(tokens=burst, updated=now)
    tokens = min(burst, bucket.tokens + max(0.0, now - bucket.updated) * rate)
    if tokens >= cost:
        return Bucket(tokens - cost, now), 0.0
    return Bucket(tokens, now), (cost - tokens) / rate
