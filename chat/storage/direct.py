"""Hot statements run on the database driver's own connection.

A batch of sends (:mod:`chat.sending`) is about ten small statements.  Through
SQLAlchemy's async engine each costs 85–400 µs of CPU on the benchmark machine
(the greenlet hop, an execution context, parameter and row processing), while
the sqlite3 call underneath takes under 2 µs: a lone send cost 3.7 ms of CPU,
nearly all of it SQLAlchemy's, and under light load every send is a batch of
one.  Here the same statements — still written once, as SQLAlchemy Core — are
compiled once per dialect (and per length of each ``IN`` list, rounded up to a
power of two) and handed to
the driver: ``sqlite3`` inline on the event loop's thread (as
:class:`chat.storage.db.InlineSQLiteConnection` already runs it), or
``asyncpg``.  Values go through the bind processors SQLAlchemy would apply
(aware UTC datetimes, booleans), rows through the result processors of their
columns' types, so what is stored and read is what the ORM stores and reads.

The connection is the engine's own pooled one (:func:`transaction` checks it
out), so SQLite's single connection still serialises every writer.
"""

from __future__ import annotations

import asyncio
import re
from collections import namedtuple
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncContextManager, AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence

from sqlalchemy import Float, Numeric, bindparam, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Insert, visitors
from sqlalchemy.sql.elements import BindParameter, ClauseElement
from sqlalchemy.util import greenlet_spawn

# Compiled plans kept per (statement, dialect, shape); statements built per call
# (rare: cache misses of slow-changing settings) are compiled again past this.
PLAN_CACHE_ENTRIES = 2048
# Rows per multi-row INSERT on PostgreSQL (a notification row is 14 parameters).
MULTIROW = 128
_EXPANDED = re.compile(r"^(.*)_(\d+)$")
_REQUIRED = object()  # a placeholder whose value the caller must give
_NO_PARAMS: Mapping[str, Any] = {}


@dataclass(frozen=True)
class _Plan:
    """A statement compiled for one dialect and one parameter shape."""

    sql: str
    # Per placeholder, in order: the parameter's name, its index in a list
    # (an expanded IN), the value when the caller gives none (or _REQUIRED), the
    # bind processor.
    slots: tuple[tuple[str, int | None, Any, Callable | None], ...]
    row: type | None  # a named tuple of the result columns (None: no rows)
    results: tuple[Callable | None, ...]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        out = []
        for name, index, default, process in self.slots:
            value = params[name] if default is _REQUIRED else params.get(name, default)
            if index is not None:  # an item of a list, padded with its last (see _shape)
                value = value[index] if index < len(value) else value[-1]
            out.append(process(value) if process is not None else value)
        return out

    def rows(self, raw: Iterable[Sequence[Any]]) -> "Rows":
        row, results = self.row, self.results
        if not any(results):
            return Rows(row._make(r) for r in raw)
        return Rows(row._make([p(v) if p is not None else v for p, v in zip(results, r)]) for r in raw)


_plans: dict[tuple, _Plan] = {}


def _shape(statement: ClauseElement, params: Mapping[str, Any]) -> tuple:
    """What the compiled SQL depends on besides the statement: the length of
    each list parameter (an expanding ``IN``), rounded up to a power of two,
    and, for an INSERT given no values of its own, the columns supplied.
    Compiling costs milliseconds, so a list of 37 ids is compiled as 64
    placeholders, the last id repeated (``IN`` means the same): a busy hub
    compiles each statement a handful of times, not once per list length."""
    lists = tuple(sorted((k, _rounded(len(v))) for k, v in params.items() if isinstance(v, (list, tuple))))
    columns = tuple(params) if _bare_insert(statement) else ()
    return lists, columns


def runs(items: list, largest: int) -> Iterator[list]:
    """``items`` in runs of powers of two, none over ``largest`` (37: 32, 4, 1),
    so that a statement of N rows is compiled for a handful of N only."""
    start = 0
    while start < len(items):
        size = min(largest, 1 << ((len(items) - start).bit_length() - 1))
        yield items[start:start + size]
        start += size


_MULTIROW: dict[tuple, Insert] = {}
# Per multi-row statement and dialect: where each placeholder's value comes from
# (row index, column, bind processor), in placeholder order.
_MULTIROW_SOURCES: dict[tuple, tuple[tuple[int, str, Callable | None], ...]] = {}


def multirow_insert(table, columns: Sequence[str], size: int, returning: Sequence = ()) -> Insert:
    """``INSERT INTO table (columns) VALUES (…), (…) [RETURNING …]`` for ``size``
    rows, whose parameters are each column's name and the row's index
    (``seq0``, ``seq1``, …); built once per shape.  :meth:`DirectConnection.insert_rows`
    runs it."""
    key = (table.name, tuple(columns), size, tuple(returning))
    statement = _MULTIROW.get(key)
    if statement is None:
        statement = insert(table).values(
            [{column: bindparam(f"{column}{i}") for column in columns} for i in range(size)])
        if returning:
            statement = statement.returning(*returning)
        _MULTIROW[key] = statement
    return statement


def _multirow_sources(statement: Insert, compiled: "_Plan", columns: Sequence[str], size: int,
                      dialect: Dialect) -> tuple[tuple[int, str, Callable | None], ...]:
    key = (id(statement), dialect.name)
    sources = _MULTIROW_SOURCES.get(key)
    if sources is None:
        names = {f"{column}{i}": (i, column) for i in range(size) for column in columns}
        unknown = [name for name, *_ in compiled.slots if name not in names]
        if unknown:  # a column SQLAlchemy would fill in (a default): the caller must give it
            raise ValueError(f"{statement.table.name}: give a value for {unknown[0]}")
        sources = _MULTIROW_SOURCES[key] = tuple((*names[name], process)
                                                 for name, _, _, process in compiled.slots)
    return sources


def _rounded(size: int) -> int:
    return 1 << (size - 1).bit_length() if size else 0


def _bare_insert(statement: ClauseElement) -> bool:
    """An ``insert(table)`` with no VALUES or SELECT of its own: its columns are the parameters'."""
    return isinstance(statement, Insert) and not statement._values and not statement._multi_values \
        and statement.select is None


def plan(statement: ClauseElement, dialect: Dialect, params: Mapping[str, Any]) -> _Plan:
    lists, columns = shape = _shape(statement, params)
    key = (statement, dialect.name, shape)
    found = _plans.get(key)
    if found is not None:
        return found
    if len(_plans) >= PLAN_CACHE_ENTRIES:
        _plans.clear()
    required = {b.key for b in visitors.iterate(statement)
                if isinstance(b, BindParameter) and (b.required or b.expanding)}
    if isinstance(statement, Insert) and not statement._returning:
        statement = statement.inline()  # PostgreSQL would otherwise add RETURNING id
    compiled = statement.compile(dialect=dialect, column_keys=list(columns) if columns else None)
    sql, positions = compiled.string, compiled.positiontup
    if lists:  # each list's placeholders, by SQLAlchemy's own expansion for a list of that length
        expanded = compiled._process_parameters_for_postcompile(compiled.construct_params(
            {name: [None] * size for name, size in lists}, _check=False))
        sql, positions = expanded.statement, expanded.positiontup
    if columns:
        _check_defaults(statement, columns)
    binds = compiled.binds
    slots = []
    for name in positions or ():
        bind, index = binds.get(name), None
        if bind is None:  # "ids_3": the third item of the list "ids"
            base, number = _EXPANDED.match(name).groups()
            bind, name, index = binds[base], base, int(number) - 1
        default = _REQUIRED if name in required else bind.value
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        slots.append((name, index, default, process))
    row, results = None, ()
    columns_out = getattr(compiled.statement, "exported_columns", None)  # selected, or RETURNING
    if columns_out:
        cols = list(columns_out)
        row = namedtuple("Row", [getattr(c, "key", None) or f"c{i}" for i, c in enumerate(cols)], rename=True)
        results = tuple(_result_processor(c.type, dialect) for c in cols)
    found = _plans[key] = _Plan(sql, tuple(slots), row, results)
    return found


def _result_processor(column_type, dialect: Dialect) -> Callable | None:
    # asyncpg hands back floats and Decimals itself; SQLAlchemy's processor for them
    # wants the column's type OID from a cursor, which the driver's rows do not carry.
    if dialect.name == "postgresql" and isinstance(column_type, (Float, Numeric)):
        return None
    return column_type.dialect_impl(dialect).result_processor(dialect, None)


def _check_defaults(statement: Insert, columns: Sequence[str]) -> None:
    """SQLAlchemy fills a column's Python-side default when an INSERT omits it;
    the driver would not.  Omitting such a column here is a programming error."""
    for column in statement.table.columns:
        if column.key not in columns and column.default is not None and not column.primary_key:
            raise ValueError(f"{statement.table.name}.{column.key} has a default: give it a value")


class Rows(list):
    """The few result methods the hot paths use, over a list of named tuples."""

    def all(self) -> list:
        return self

    def one(self):
        if len(self) != 1:
            raise LookupError(f"expected one row, got {len(self)}")
        return self[0]

    def scalar_one_or_none(self):
        return self.one()[0] if self else None

    def scalars(self) -> "Rows":
        return Rows(row[0] for row in self)


class DirectConnection:
    """A transaction on the driver's connection, with ``execute`` taking a
    Core statement and its parameters — a dict, or a list of dicts for many rows."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect

    async def execute(self, statement: ClauseElement, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] = None
                      ) -> Rows:
        if isinstance(params, list):
            if params:
                compiled = plan(statement, self.dialect, params[0])
                await self._run_many(compiled.sql, [compiled.args(p) for p in params])
            return Rows()
        compiled = plan(statement, self.dialect, params or {})
        raw = await self._run(compiled.sql, compiled.args(params or {}), compiled.row is not None)
        return compiled.rows(raw) if compiled.row is not None else Rows()

    async def tuples(self, statement: ClauseElement, params: Mapping[str, Any] = _NO_PARAMS) -> Sequence[Sequence[Any]]:
        """The rows as the driver gives them (tuples; asyncpg's records), read by
        position: for a SELECT of thousands of rows whose columns need no result
        processing (integers), a named tuple each cost a quarter of the query."""
        compiled = plan(statement, self.dialect, params)
        if any(compiled.results):
            raise ValueError("these columns need result processing: use execute()")
        return await self._run(compiled.sql, compiled.args(params), True)

    async def insert_many(self, statement: Insert, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """``rows`` — tuples of the values of ``columns``, in that order — through
        the plain ``insert(table)`` ``statement``: one executemany (or multi-row
        VALUES, see :meth:`execute`).  SQLite takes the tuples as they are when
        it can (:meth:`_SQLite.insert_many`); here they become dicts."""
        await self.execute(statement, [dict(zip(columns, row)) for row in rows])

    async def insert_rows(self, table, columns: Sequence[str], rows: Sequence[Mapping[str, Any]],
                          returning: Sequence = ()) -> Rows:
        """``rows`` (each a mapping with at least ``columns``) as one multi-row
        INSERT (:func:`multirow_insert`), its values taken from the rows in
        placeholder order: no dict of ``column0``, ``column1``… names, which cost more than
        the statement itself for a hundred notification rows."""
        statement = multirow_insert(table, columns, len(rows), returning)
        compiled = plan(statement, self.dialect, _NO_PARAMS)
        sources = _multirow_sources(statement, compiled, columns, len(rows), self.dialect)
        args = [rows[i][column] if process is None else process(rows[i][column]) for i, column, process in sources]
        raw = await self._run(compiled.sql, args, compiled.row is not None)
        return compiled.rows(raw) if compiled.row is not None else Rows()

    async def _run(self, sql: str, args: list, returns: bool) -> Sequence[Sequence[Any]]:
        raise NotImplementedError

    async def _run_many(self, sql: str, args: list[list]) -> None:
        raise NotImplementedError


class _SQLite(DirectConnection):
    def __init__(self, dialect: Dialect, connection) -> None:
        super().__init__(dialect)
        self.connection = connection  # sqlite3.Connection, autocommit mode (BEGIN is ours)

    async def _run(self, sql, args, returns):
        cursor = self.connection.execute(sql, args)
        return cursor.fetchall() if returns else ()

    async def _run_many(self, sql, args):
        self.connection.executemany(sql, args)

    async def insert_many(self, statement, columns, rows):
        # The tuples go to sqlite3 as they are when the placeholders are the columns
        # in that order and none has a bind processor (integers, text).
        if rows:
            compiled = plan(statement, self.dialect, dict.fromkeys(columns))
            if any(process for *_, process in compiled.slots) or [name for name, *_ in compiled.slots] != list(columns):
                return await super().insert_many(statement, columns, rows)
            self.connection.executemany(compiled.sql, rows)


class _Asyncpg(DirectConnection):
    def __init__(self, dialect: Dialect, connection) -> None:
        super().__init__(dialect)
        self.connection = connection  # asyncpg.Connection

    async def execute(self, statement, params=None):
        # PostgreSQL binds, plans and runs each row of an executemany as a statement
        # of its own (in one round trip): full runs of MULTIROW rows of a plain
        # INSERT go in multi-row VALUES instead, each a round trip, the rest in
        # one executemany.
        if isinstance(params, list) and len(params) >= MULTIROW and _bare_insert(statement):
            keys = tuple(params[0])
            whole = len(params) - len(params) % MULTIROW
            for start in range(0, whole, MULTIROW):
                await self.insert_rows(statement.table, keys, params[start:start + MULTIROW])
            params = params[whole:]
        return await super().execute(statement, params)

    async def _run(self, sql, args, returns):
        if returns:
            return await self.connection.fetch(sql, *args)
        await self.connection.execute(sql, *args)
        return ()

    async def _run_many(self, sql, args):
        await self.connection.executemany(sql, args)


def transaction(engine: AsyncEngine) -> AsyncContextManager[DirectConnection]:
    """A transaction on one of ``engine``'s pooled connections, committed when
    the block ends, rolled back if it raises.  SQLite: ``BEGIN IMMEDIATE``, as
    the engine's own transactions (chat.storage.db).

    The connection is checked out of the engine's pool and returned to it in
    one step each (:func:`_checkout`, :func:`_checkin`), not through an
    ``AsyncConnection``, whose start, raw-connection look-up and shielded close
    took three greenlet hops and two more turns of the event loop: an empty
    transaction cost 271 µs of CPU on SQLite that way, 92 µs this way."""
    return _on_driver(engine, write=True)


def reading(engine: AsyncEngine) -> AsyncContextManager[DirectConnection]:
    """Reads on one of ``engine``'s pooled connections (what every new connection
    looks up: its person, audiences, positions and conversation list).  SQLite:
    one snapshot (``BEGIN``, deferred: no write lock taken).  PostgreSQL: each
    statement on its own, reading what is committed, as the ORM's sessions do
    under READ COMMITTED — no BEGIN and COMMIT round trips."""
    return _on_driver(engine, write=False)


@asynccontextmanager
async def _on_driver(engine: AsyncEngine, write: bool) -> AsyncIterator[DirectConnection]:
    dialect = engine.dialect
    fairy = await _checkout(engine)
    try:
        driver = fairy.driver_connection
        if dialect.name == "sqlite":
            database = driver.sqlite3_connection  # InlineSQLiteConnection: sqlite3, on this thread
            database.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _SQLite(dialect, database)
            except BaseException:
                database.execute("ROLLBACK")
                raise
            database.execute("COMMIT")
        else:
            try:
                if write:
                    async with driver.transaction():
                        yield _Asyncpg(dialect, driver)
                else:
                    yield _Asyncpg(dialect, driver)
            except BaseException as exc:
                _invalidate_if_closed(engine, fairy, exc)
                raise
    finally:
        await _checkin(fairy, dialect)


def _invalidate_if_closed(engine: AsyncEngine, fairy, exc: BaseException) -> None:
    """The server closed this connection under us (a restart, ``pg_terminate_backend``):
    every pooled connection opened before now is gone too, though asyncpg may not
    have read their end yet, so the pool's check at checkout (chat.storage.db)
    would still hand them out.  As SQLAlchemy's own execution does on a
    disconnect (``invalidate_pool_on_disconnect``), the pool replaces them all;
    the failed batch's sends are then retried one by one on new connections."""
    if fairy.driver_connection.is_closed():
        engine.sync_engine.pool._invalidate(fairy, exc, _checkin=False)
        fairy.invalidate(exc)


async def _checkout(engine: AsyncEngine):
    """The pool's connection (PostgreSQL: one the server closed is replaced, chat.storage.db)."""
    return await greenlet_spawn(engine.sync_engine.raw_connection)


async def _checkin(fairy, dialect: Dialect) -> None:
    """Back to the pool, which resets it (a rollback).  On PostgreSQL that is a
    round trip, shielded as SQLAlchemy shields its own close: a cancellation
    must not leave the connection half returned.  SQLite's runs inline."""
    if dialect.name == "sqlite":
        await greenlet_spawn(fairy.close)
    else:
        await asyncio.shield(greenlet_spawn(fairy.close))
