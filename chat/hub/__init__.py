"""The async hub: local connections, their subscriptions, and fan-out.

- :mod:`chat.hub.router`: :class:`Hub`, the routing of broker messages to
  this process's connections (the flow is drawn in its docstring).
- :mod:`chat.hub.connection`: one connection, its bounded outbox and its
  overflow rule, on the public ASGI ``send``.
- :mod:`chat.hub.fastpath`: the uvicorn fast path, the only place that
  touches uvicorn's and websockets' private state, with its version check.
- :mod:`chat.hub.envelope`: the broker envelope and the channel names.
- :mod:`chat.hub.codes`: WebSocket close codes.
"""

from __future__ import annotations

from chat.hub.codes import (CLOSE_INTERNAL_ERROR, CLOSE_POLICY, CLOSE_SHUTDOWN, CLOSE_SLOW_CONSUMER,
                            CLOSE_TRY_AGAIN, CLOSE_UNAUTHENTICATED, SHUTDOWN_REASON, SLOW_CONSUMER_REASON)
from chat.hub.connection import NO_OUTBOX, NOT_FILLING, Connection, ConnectionState
from chat.hub.envelope import conversation_channel, person_channel
from chat.hub.fastpath import (BYTES_PER_QUEUED_FRAME, KERNEL_UNSENT_BYTES, MAX_HELD_FRAMES, DirectConnection,
                               kernel_unsent, limit_kernel_unsent, text_frame)
from chat.hub.router import EXPIRY_SWEEP_SECONDS, REPLAY_BATCH, Database, Hub, ReplayFn

__all__ = [
    "BYTES_PER_QUEUED_FRAME", "CLOSE_INTERNAL_ERROR", "CLOSE_POLICY", "CLOSE_SHUTDOWN", "CLOSE_SLOW_CONSUMER",
    "CLOSE_TRY_AGAIN", "CLOSE_UNAUTHENTICATED", "EXPIRY_SWEEP_SECONDS", "KERNEL_UNSENT_BYTES", "MAX_HELD_FRAMES",
    "NO_OUTBOX", "NOT_FILLING", "REPLAY_BATCH", "SHUTDOWN_REASON", "SLOW_CONSUMER_REASON", "Connection",
    "ConnectionState", "Database", "DirectConnection", "Hub", "ReplayFn", "conversation_channel",
    "kernel_unsent", "limit_kernel_unsent", "person_channel", "text_frame",
]
