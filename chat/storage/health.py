"""A database outage: telling it from other failures, and noticing when it ends.

PostgreSQL stopped or restarting, the network to it cut, every pooled
connection busy past the pool's timeout, SQLite's write lock held by another
process past the busy timeout: the request did nothing it can be blamed for,
and the same request will work later.  That is an expected condition, not a
bug.  The client gets ``service.unavailable`` with ``retry_after`` (HTTP 503
with ``Retry-After``), and the log says once that the database is unreachable
and once that it is back (docs/operations.md), instead of a traceback for
every frame.

:func:`is_outage` recognises such a failure from the exception alone and what
it wraps; anything else (a refused statement, a constraint, a bug) is not an
outage and keeps its traceback.  :class:`DatabaseHealth` holds one process's
view: the first outage failure logs the line and starts a probe that reads
``SELECT 1`` with backoff until it works, then logs the recovery and wakes
whatever waits for it (the hub's gap fills and its resync after a broker
outage, chat.hub).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import sqlite3
import time
from typing import Iterator

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from chat.errors import ServiceUnavailable
from chat.storage import direct
from chat.tasks import cancel_and_wait

try:
    from asyncpg import exceptions as pg
except ImportError:  # pragma: no cover - a SQLite-only installation
    pg = None

log = logging.getLogger("chat.storage")

# What a client is told to wait before sending the same request again
# (``retry_after``, and HTTP's Retry-After): the probe below notices that the
# database is back within PROBE_MAX_SECONDS, and clients that wait as long do
# not flood a PostgreSQL that is starting up.
RETRY_AFTER_SECONDS = 2
# The probe looks a quarter of a second after the first failure (after a
# restart the pool's connections are replaced at once), then at doubling
# intervals up to PROBE_MAX_SECONDS: one connection attempt per process at most
# that often while the database is away.
PROBE_FIRST_SECONDS = 0.25
PROBE_MAX_SECONDS = 2.0

# Socket errors that mean the peer cannot be reached or dropped the connection
# (not a file that is missing: attachments raise OSError too).
_NETWORK_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE,
                             errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN,
                             errno.EHOSTDOWN})
# SQLITE_BUSY, SQLITE_LOCKED: another connection held the lock past the busy timeout.
_SQLITE_BUSY = frozenset({5, 6})
_PROBE = text("SELECT 1")
# The families of exceptions an outage can come as (for the web layer's handlers;
# :func:`is_outage` decides for each instance).
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, sa_exc.SQLAlchemyError, sqlite3.Error) + (
    (pg.PostgresError, pg.InterfaceError) if pg is not None else ())


def is_outage(exc: BaseException) -> bool:
    """True when ``exc``, or the driver error it wraps, says that the database
    could not be reached or dropped the connection; False for every other
    failure (a refused statement, a constraint, a bug)."""
    return any(_connection_level(link) for link in _chain(exc))


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc``, then what it wraps: SQLAlchemy's ``orig`` (the driver's error)
    and ``raise … from`` causes (SQLAlchemy's asyncpg adapter raises from the
    asyncpg error).  Not ``__context__``: an error raised while handling an
    outage is not one."""
    seen = 0
    while exc is not None and seen < 8:
        yield exc
        seen += 1
        exc = getattr(exc, "orig", None) or exc.__cause__


def _connection_level(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
        return True  # refused, reset, aborted, broken pipe; a connect timeout; the host's name unknown
    if isinstance(exc, OSError):
        # asyncio's "Multiple exceptions: …" when every address of the host refused.
        return exc.errno in _NETWORK_ERRNOS or str(exc).startswith("Multiple exceptions: ")
    if isinstance(exc, (sa_exc.TimeoutError, sa_exc.DisconnectionError)):
        return True  # no pooled connection free within the pool's timeout; a dead connection at checkout
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) in _SQLITE_BUSY or str(exc).startswith("database is locked")
    if pg is not None:
        if isinstance(exc, pg.PostgresConnectionError):
            # Class 08 (connection exception), except a protocol violation: that one is a bug.
            return not isinstance(exc, pg.ProtocolViolationError)
        if isinstance(exc, (pg.CannotConnectNowError, pg.AdminShutdownError, pg.CrashShutdownError,
                            pg.TooManyConnectionsError)):
            return True  # starting up or shutting down, terminated, crashed, no connection slot left
        if isinstance(exc, pg.InterfaceError):
            return "connection is closed" in str(exc)
    return False


def _cause_name(exc: BaseException) -> str:
    """The name of the error that showed the outage, the driver's rather than a
    wrapper's, for the log: never its text, which may carry SQL parameters."""
    names = [type(link).__name__ for link in _chain(exc) if _connection_level(link)]
    return names[-1] if names else type(exc).__name__


class DatabaseHealth:
    """One process's view of the database: reachable, or down since when.

    :meth:`outage` is asked about every failure a request or a background task
    did not expect; the first outage failure logs one line and starts the probe,
    which logs one more when the database answers again and wakes the tasks
    waiting in :meth:`available`.  Requests are never held back: each one tries
    the database, so service resumes with the first request after the outage."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.down_since: float | None = None  # monotonic time of this outage's first failure
        self.refused = 0  # requests answered service.unavailable in this outage
        self._back = asyncio.Event()
        self._back.set()
        self._probe: asyncio.Task | None = None

    @property
    def reachable(self) -> bool:
        return self.down_since is None

    def outage(self, exc: BaseException) -> bool:
        """True if ``exc`` is a database outage (the caller answers
        :meth:`unavailable` instead of ``internal.error``); the outage's first
        failure is logged, as one line."""
        if not is_outage(exc):
            return False
        if self.down_since is None:
            self.down_since = time.monotonic()
            self._back.clear()
            log.warning("database unreachable (%s): requests are answered service.unavailable until it is back",
                        _cause_name(exc))
            self._probe = asyncio.ensure_future(self._watch())
        return True

    def unavailable(self) -> ServiceUnavailable:
        """The refusal to send for a request that met the outage (counted for the log)."""
        self.refused += 1
        return ServiceUnavailable(RETRY_AFTER_SECONDS)

    async def available(self) -> None:
        """Return once the database is reachable: at once unless an outage is known."""
        await self._back.wait()

    async def _watch(self) -> None:
        delay = PROBE_FIRST_SECONDS
        while True:
            await asyncio.sleep(delay)
            try:
                async with direct.reading(self.engine) as connection:
                    await connection.tuples(_PROBE)
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = min(delay * 2, PROBE_MAX_SECONDS)
                continue
            break
        log.info("database reachable again after %.1f s; %d requests were answered service.unavailable",
                 time.monotonic() - self.down_since, self.refused)
        self.down_since, self.refused, self._probe = None, 0, None
        self._back.set()

    async def stop(self) -> None:
        await cancel_and_wait(self._probe)
