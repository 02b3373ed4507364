"""The database engine, chosen by URL, and the schema migrations.

SQLite (``sqlite+aiosqlite``) is the embedded default: WAL mode, one pooled
connection per process and ``BEGIN IMMEDIATE`` transactions, so that writers
queue on the busy timeout instead of failing on a lock upgrade.  With
``synchronous=NORMAL`` in WAL mode a committed transaction survives a crash of
the process (not a power cut); use PostgreSQL in production.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from functools import partial
from pathlib import Path

import aiosqlite
from alembic import command
from alembic.config import Config
from sqlalchemy import event, exc, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


MIGRATIONS = Path(__file__).with_name("migrations")
log = logging.getLogger("chat.storage")
# SQLite's page cache (2 MiB by default) is smaller than a busy hub's working set
# (the newest messages and events, their indexes, the notification feed): the
# pages of a batch's transaction were spilled to the WAL mid-statement and read
# back with pread().  64 MiB is a ceiling, not an allocation.
SQLITE_CACHE_KIB = 64 * 1024
# The WAL is copied back into the database file by a thread of its own
# (:class:`Checkpointer`) every CHECKPOINT_INTERVAL seconds, off the event loop:
# run inline, a checkpoint of a busy hub's WAL stalled every connection for tens
# of milliseconds.  A checkpoint copies each page once however often it changed
# since the last one, so a busy hub's rewrites of the same index and table tail
# pages cost one copy per pass.  SQLite's own automatic checkpoint (inline, at
# the commit that crosses it) stays as a backstop at SQLITE_CHECKPOINT_PAGES
# (about 40 MiB of WAL), should the thread fall behind.
#
# The interval is a setting (SQLITE_CHECKPOINT_SECONDS; 0.2 s by default).
# Under steady writes a pass never finds the whole WAL copied (the hub commits
# meanwhile), and SQLite starts a WAL over only then.  So the WAL grows to
# SQLITE_CHECKPOINT_PAGES, and SQLite's automatic checkpoint, at the commit that
# crosses it, copies what the thread has not, syncs the WAL and the database
# file, and the next commit syncs the new WAL header: 5-40 ms of syncs on the
# event loop's thread (a watcher sampling the loop's stack whenever it had not
# turned for 8 ms found 112 of 121 samples inside COMMIT, at 25 % of capacity).
# Frequent passes leave that inline checkpoint little to copy, while they copy
# often-changed pages more often.  Running those commits in a worker thread
# instead removed the loop stalls but not the latency tail (the batches wait
# for the syncs either way; p99 at 25-35 % of capacity within the runs' noise,
# and capacity fell by a tenth when the WAL was started over every 8 MiB), so
# it was not kept.  Measured under conversation
# traffic on SQLite (bench/, one machine): p99 send -> receive at 10 % of
# capacity 20-56 ms in four runs with a pass every second, 80-240 ms every 10 s,
# 9.5-11 ms in two runs every 0.2 s (10 ms with no checkpoint at all); at 25 %,
# 71-98 ms against 41-46 ms.  The price: about a tenth more CPU per message at
# light load, and closed-loop throughput 2,200 and 2,160 acknowledged messages/s
# against 2,424 and 2,172 every second (A/B/A/B on a fresh database); in two
# full benchmark runs, at the same slow phase of the machine, 1,739 (0.2 s) and
# 1,764 (1 s).
SQLITE_CHECKPOINT_PAGES = 10_000
CHECKPOINT_INTERVAL = 0.2


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


class InlineSQLiteConnection(aiosqlite.Connection):
    """aiosqlite's interface, run on the event loop's own thread.

    aiosqlite hands every call (execute, fetch, commit) to a thread of its own
    and back: on the hub's profile that hop cost 150–250 µs of CPU per
    statement, more than SQLite itself, and a batch of sends is a dozen
    statements.  SQLite calls on an indexed database take microseconds, so
    here they run inline.  This is safe because each hub process has one
    engine with one pooled connection, and a transaction never waits on
    anything else while it is open: no other task of the process can hold
    SQLite's lock meanwhile.  Another *process* writing (a directory load)
    makes ``BEGIN IMMEDIATE`` wait on the busy timeout, which then pauses this
    process's loop for as long (docs/operations.md).
    """

    def __await__(self):
        return self._connect().__await__()

    @property
    def sqlite3_connection(self) -> sqlite3.Connection:
        """The sqlite3 connection underneath, for :mod:`chat.storage.direct`'s statements."""
        return self._connection

    async def _connect(self) -> "InlineSQLiteConnection":
        if self._connection is None:
            self._connection = self._connector()
        return self

    async def _execute(self, fn, *args, **kwargs):
        if not self._running or self._connection is None:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    def stop(self) -> None:
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        return None


def _inline_creator(database: str):
    async def connect(*_args, **_kwargs) -> InlineSQLiteConnection:
        # Only this thread uses it; SQLAlchemy's dialect may set attributes from another frame.
        return await InlineSQLiteConnection(
            partial(sqlite3.connect, database, isolation_level=None, check_same_thread=False), 64)

    return connect


class Checkpointer:
    """Copies a SQLite database's WAL into its file from a worker thread, on a
    connection of its own: ``PRAGMA wal_checkpoint(PASSIVE)`` neither waits for
    nor blocks the hub's writer and readers.  SQLite releases the GIL while it
    copies and syncs, so the event loop keeps serving meanwhile."""

    def __init__(self, database: str, interval: float = CHECKPOINT_INTERVAL) -> None:
        self.database = database
        self.interval = interval
        self._connection: sqlite3.Connection | None = None
        # A pass and the close never overlap: cancelling run() does not stop a pass
        # already running in its thread, and closing the connection under it crashed
        # the process (a segmentation fault in sqlite3).
        self._lock = threading.Lock()
        self.passes = 0

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.interval)
                try:
                    await asyncio.to_thread(self.checkpoint)
                except sqlite3.Error:
                    log.exception("WAL checkpoint failed (SQLite's automatic checkpoint still applies)")
        finally:
            await asyncio.to_thread(self.close)

    def checkpoint(self) -> None:
        with self._lock:
            if self._connection is None:
                self._connection = sqlite3.connect(self.database, isolation_level=None, check_same_thread=False)
                self._connection.execute("PRAGMA busy_timeout=1000")
            self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.passes += 1

    def close(self) -> None:
        """Close the connection once any pass still running has finished."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


def sqlite_checkpointer(url: str, interval: float = CHECKPOINT_INTERVAL) -> Checkpointer | None:
    """The WAL checkpointer for a SQLite file database (None for PostgreSQL or in-memory)."""
    if not is_sqlite(url):
        return None
    database = make_url(url).database
    return Checkpointer(database, interval) if database and database != ":memory:" else None


def create_engine(url: str, pool_size: int = 20) -> AsyncEngine:
    """An async engine for ``url`` with the settings that make it safe to share.
    PostgreSQL: ``pool_size`` connections, kept open, and no overflow
    (``Settings.database_pool_size``); SQLite: one connection."""
    if is_sqlite(url):
        database = make_url(url).database or ":memory:"
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60,
                                     async_creator=_inline_creator(database))

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection, _record) -> None:  # pragma: no cover - driver hook
            # isolation_level=None (we emit BEGIN ourselves) is set by _inline_creator:
            # the adapter's setter would queue to aiosqlite's thread, which is not used.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            # Temporary B-trees (a sort, a DISTINCT, an INSERT … SELECT's rows) in
            # memory, not in files under /var/tmp: an announcement to a school of
            # 1,000 families wrote 1.7 MB to such files (strace).  In-process, on
            # the benchmark's directory, a post to 5,000 or 10,000 families took
            # 15-16 µs of CPU per family with it, 23-26 without.
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_PAGES}")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn) -> None:  # pragma: no cover - driver hook
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # No overflow: connections opened past the pool under a burst (a reconnect
    # storm) were closed again as soon as they were returned, and each new one
    # cost a backend start and its statements prepared again.
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=0)

    @event.listens_for(engine.sync_engine, "checkout")
    def _alive(_dbapi_connection, record, _proxy) -> None:
        # A connection the server closed (a restart, pg_terminate_backend) is
        # known to asyncpg without a round trip: the pool replaces it (up to
        # three tries).  SQLAlchemy's pool_pre_ping asked the server instead, a
        # round trip at every checkout: 200 of the 550 µs of CPU of a
        # one-statement transaction (in one process, interleaved with and
        # without), paid by every lone send and every request.
        if record.driver_connection.is_closed():
            raise exc.DisconnectionError("the server closed this connection")

    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the schema to the newest migration (idempotent; safe at every start)."""

    def run(sync_connection) -> None:
        cfg = alembic_config(str(engine.url))
        cfg.attributes["connection"] = sync_connection
        command.upgrade(cfg, "head")

    async with engine.begin() as conn:
        await conn.run_sync(run)
