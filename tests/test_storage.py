"""Storage: the migrations build exactly the models' schema, on SQLite and on
PostgreSQL; sequence numbers stay gap-free under concurrent writers."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from chat.storage.models import Event, SQLModel
from tests.client import WAIT
from tests.conftest import JEAN, MARIE, NADIA, actor_for, child_id


async def test_migrations_and_models_describe_the_same_schema(engine):
    def diff(connection):
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, SQLModel.metadata)

    async with engine.connect() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []


async def test_concurrent_writers_get_gap_free_unique_sequence_numbers(service):
    marie, nadia, jean = [await actor_for(service, e) for e in (MARIE, NADIA, JEAN)]
    conversation = await service.membership.create(marie, [nadia.id, jean.id], await child_id(service, "Léa"))
    cid = conversation["id"]

    async def burst(actor, prefix: str) -> list[int]:
        acks = []
        for i in range(10):
            acks.append((await service.sending.send(actor, cid, f"{prefix}{i}", f"{prefix} {i}"))["seq"])
        return acks

    results = await asyncio.gather(burst(marie, "m"), burst(nadia, "n"), burst(jean, "j"))
    seqs = sorted(s for r in results for s in r)
    assert seqs == list(range(2, 32))
    async with service.sessions() as session:
        stored = (await session.execute(select(Event.seq).where(Event.conversation_id == cid).order_by(Event.seq))).scalars().all()
    assert stored == list(range(1, 32))


async def test_sqlite_s_wal_is_copied_into_the_database_file_by_the_checkpoint_thread(service, backend, tmp_path):
    """SQLite: committed pages sit in the WAL until a checkpoint copies them into
    the database file.  The hub does that from a thread of its own
    (chat.storage.db.Checkpointer), not inline on the event loop.  The file read
    alone (``immutable=1`` ignores the WAL) lacks a new message before the
    checkpoint and has it after."""
    import sqlite3

    from sqlalchemy.engine import make_url

    if backend != "embedded":
        pytest.skip("PostgreSQL has no WAL file to checkpoint from the hub")
    assert service.checkpointer is not None and service.checkpoint_task is not None
    service.checkpoint_task.cancel()  # this test runs the passes itself
    path = make_url(service.settings.database_url).database
    await asyncio.to_thread(service.checkpointer.checkpoint)  # whatever start-up wrote

    def in_file(client_id: str) -> int:
        connection = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        try:
            return connection.execute("SELECT count(*) FROM message WHERE client_id = ?", (client_id,)).fetchone()[0]
        finally:
            connection.close()

    marie, nadia = [await actor_for(service, e) for e in (MARIE, NADIA)]
    cid = (await service.membership.create(marie, [nadia.id], await child_id(service, "Léa")))["id"]
    await service.sending.send(marie, cid, "wal-1", "Bonjour")
    assert in_file("wal-1") == 0
    await asyncio.to_thread(service.checkpointer.checkpoint)
    assert in_file("wal-1") == 1


def test_the_sqlite_checkpoint_interval_is_a_setting():
    from chat.storage.db import CHECKPOINT_INTERVAL, sqlite_checkpointer

    assert sqlite_checkpointer("sqlite+aiosqlite:////tmp/chat.db").interval == CHECKPOINT_INTERVAL == 0.2
    assert sqlite_checkpointer("sqlite+aiosqlite:////tmp/chat.db", 1.0).interval == 1.0
    assert sqlite_checkpointer("postgresql+asyncpg://chat@db/chat", 1.0) is None


async def test_the_checkpointer_closes_only_after_a_pass_still_running(tmp_path):
    """Cancelling the checkpoint task does not stop a pass already in its thread:
    the close waits for it (closing the connection under it crashed the process)."""
    import sqlite3
    import threading

    from chat.storage.db import Checkpointer

    path = tmp_path / "wal.db"
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (x)")
    setup.commit()
    checkpointer = Checkpointer(str(path), interval=0.01)
    checkpointer.checkpoint()
    entered, release = threading.Event(), threading.Event()
    real = checkpointer._connection

    class Slow:
        def execute(self, sql):
            entered.set()
            release.wait(WAIT)
            return real.execute(sql)

        def close(self):
            real.close()

    checkpointer._connection = Slow()
    running = asyncio.create_task(asyncio.to_thread(checkpointer.checkpoint))
    assert await asyncio.to_thread(entered.wait, WAIT)
    closing = asyncio.create_task(asyncio.to_thread(checkpointer.close))
    await asyncio.sleep(0.05)
    assert not closing.done()  # waits for the pass
    release.set()
    await running
    await closing
    assert checkpointer._connection is None and checkpointer.passes == 2
    setup.close()


async def test_migration_0008_rebuilds_the_recipient_rows_without_rowid_and_back_keeping_them(tmp_path):
    """SQLite: 0008 makes the recipient table its key's B-tree (WITHOUT ROWID)
    and widens the guardianship index; its downgrade undoes both.  Rows
    written before either step are all still there after it."""
    from alembic import command
    from sqlalchemy import text

    from chat.storage.db import alembic_config, create_engine, upgrade

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'migrate.db'}")

    async def shape(connection) -> tuple[bool, str, list]:
        sql = (await connection.execute(text(
            "SELECT sql FROM sqlite_master WHERE name = 'announcementrecipient'"))).scalar_one()
        index = (await connection.execute(text(
            "SELECT sql FROM sqlite_master WHERE name = 'ix_guardianship_student_id'"))).scalar_one()
        rows = (await connection.execute(text(
            "SELECT announcement_id, person_id, child_ids FROM announcementrecipient ORDER BY 1, 2"))).all()
        return "WITHOUT ROWID" in sql, index.split("(")[-1], [tuple(r) for r in rows]

    def migrate(connection, step: str, target: str) -> None:
        config = alembic_config(str(engine.url))
        config.attributes["connection"] = connection
        getattr(command, step)(config, target)

    try:
        await upgrade(engine)
        async with engine.begin() as connection:
            await connection.execute(text(
                "INSERT INTO announcementrecipient (announcement_id, person_id, child_ids) VALUES (7, 3, '[5]'), (7, 4, '[6,8]')"))
            assert await shape(connection) == (True, "student_id, person_id)", [(7, 3, "[5]"), (7, 4, "[6,8]")])
            await connection.run_sync(migrate, "downgrade", "0007")
            assert await shape(connection) == (False, "student_id)", [(7, 3, "[5]"), (7, 4, "[6,8]")])
            await connection.execute(text(
                "INSERT INTO announcementrecipient (announcement_id, person_id, child_ids) VALUES (8, 3, '[5]')"))
            await connection.run_sync(migrate, "upgrade", "head")
            assert await shape(connection) == (True, "student_id, person_id)",
                                               [(7, 3, "[5]"), (7, 4, "[6,8]"), (8, 3, "[5]")])
    finally:
        await engine.dispose()


async def test_postgresql_keeps_its_pool_open_and_never_opens_more(settings, backend):
    """DATABASE_POOL_SIZE connections and no overflow: a request arriving while
    all are busy waits for one to come back instead of opening another (which
    the pool would close again on its return), and the connections stay open."""
    if backend == "embedded":
        pytest.skip("SQLite has one connection and no server")
    from sqlalchemy import text

    from chat.storage.db import create_engine

    engine = create_engine(settings.database_url, pool_size=2)

    try:
        async with engine.connect() as first, engine.connect() as second:
            pids = {(await c.execute(text("SELECT pg_backend_pid()"))).scalar_one() for c in (first, second)}
            third = asyncio.ensure_future(engine.connect().__aenter__())
            done, _ = await asyncio.wait([third], timeout=0.3)
            assert not done  # waiting for one of the two, not opening a third
        third_connection = await third
        reused = (await third_connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await third_connection.close()
        assert reused in pids  # one of the two, kept open
        assert engine.sync_engine.pool.checkedin() == 2
    finally:
        await engine.dispose()


async def test_postgresql_connections_cut_under_the_pool_are_replaced_and_no_message_is_lost(service, backend):
    """PostgreSQL restarted, or an administrator's ``pg_terminate_backend``: every
    pooled connection is dead.  The next send (the group-commit path on the
    driver's connection) and the next read (an ORM session) check a connection
    out of the pool, find it dead (the checkout hook in chat.storage.db asks
    asyncpg, no ping), open a new one and
    succeed; the message committed before is still there, and sequence numbers
    go on without a gap."""
    if backend == "embedded":
        pytest.skip("the pool's liveness check is PostgreSQL's (SQLite has no server)")
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    marie, nadia = [await actor_for(service, e) for e in (MARIE, NADIA)]
    conversation = await service.membership.create(marie, [nadia.id], await child_id(service, "Léa"))
    cid = conversation["id"]
    first = await service.sending.send(marie, cid, "before-cut", "avant la coupure")
    # Warm more than one pooled connection, then cut them all from the server's side.
    await asyncio.gather(*[service.sending.send(nadia, cid, f"warm-{i}", "bonjour") for i in range(6)])
    admin = create_async_engine(service.settings.database_url, poolclass=NullPool)
    try:
        async with admin.connect() as connection:
            cut = (await connection.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"))).scalar_one()
    finally:
        await admin.dispose()
    assert cut >= 1
    after = await service.sending.send(marie, cid, "after-cut", "après la coupure")
    assert after["seq"] == first["seq"] + 7
    async with service.sessions() as session:
        seqs = (await session.execute(select(Event.seq).where(Event.conversation_id == cid)
                                      .order_by(Event.seq))).scalars().all()
    assert seqs == list(range(1, after["seq"] + 1))
