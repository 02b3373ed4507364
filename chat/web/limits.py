"""Rate limits of the web layer: token buckets per person (per process) and per
WebSocket connection.  The one clock they read is ``time.monotonic`` here."""

from __future__ import annotations

import time
from typing import Any, Protocol

from chat.config import Settings
from chat.errors import RateLimited
from chat.policies.ratelimit import Bucket, take
from chat.people import Actor

# Cheap or ephemeral frames that do not draw from the main rate-limit bucket.
TYPING = "typing"


class Limited(Protocol):
    """What :func:`limit_frame` reads and updates on a WebSocket session."""

    settings: Settings
    websocket: Any
    actor: Actor
    bucket: Bucket | None
    typing_bucket: Bucket | None


def limit_person(state, person_id: int) -> None:
    """The per-person bucket (per process), shared by a person's sockets and HTTP calls."""
    s: Settings = state.settings
    bucket, wait = take(state.person_buckets.get(person_id), time.monotonic(), s.rate_per_second * 2, s.rate_burst * 2)
    state.person_buckets[person_id] = bucket
    if wait:
        raise RateLimited(wait)


def limit_frame(session: Limited, frame_type: str) -> None:
    """Per connection and per person token buckets; raise RateLimited with the wait."""
    now = time.monotonic()
    s = session.settings
    if frame_type == TYPING:
        session.typing_bucket, wait = take(session.typing_bucket, now, s.typing_per_second, s.typing_per_second * 2)
        if wait:
            raise RateLimited(wait)
        return
    session.bucket, wait = take(session.bucket, now, s.rate_per_second, s.rate_burst)
    if wait:
        raise RateLimited(wait)
    limit_person(session.websocket.app.state, session.actor.id)
