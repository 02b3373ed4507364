"""WebSocket close codes and reasons the hub uses (docs/protocol.md).

After 4008 and 1012 the client reconnects and resumes; after 4401 it must
sign in again first.
"""

from __future__ import annotations

CLOSE_UNAUTHENTICATED = 4401
CLOSE_SLOW_CONSUMER = 4008
CLOSE_SHUTDOWN = 1012  # service restart: reconnect and resume
SHUTDOWN_REASON = "server restarting"
SLOW_CONSUMER_REASON = "slow consumer: resume from your last seq"
CLOSE_POLICY = 1008
# The database is unreachable while the connection is being set up: reconnect
# with backoff (RFC 6455's "try again later").
CLOSE_TRY_AGAIN = 1013
# A gap fill failed for a reason other than an outage or a lost membership: the
# connection cannot keep its promise of every event in order, so it ends and
# the client resumes (RFC 6455's "internal error").
CLOSE_INTERNAL_ERROR = 1011
