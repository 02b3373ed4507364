"""Storage: the migrations build exactly the models' schema, on SQLite and on
PostgreSQL; sequence numbers stay gap-free under concurrent writers."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from chat.storage.models import Event, SQLModel
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
    conversation = await service.create_conversation(marie, [nadia.id, jean.id], await child_id(service, "Léa"))
    cid = conversation["id"]

    async def burst(actor, prefix: str) -> list[int]:
        acks = []
        for i in range(10):
            acks.append((await service.send_message(actor, cid, f"{prefix}{i}", f"{prefix} {i}"))["seq"])
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
    assert service.checkpointer is not None and service._checkpoint_task is not None
    service._checkpoint_task.cancel()  # this test runs the passes itself
    path = make_url(service.settings.database_url).database
    await asyncio.to_thread(service.checkpointer.checkpoint)  # whatever start-up wrote

    def in_file(client_id: str) -> int:
        connection = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        try:
            return connection.execute("SELECT count(*) FROM message WHERE client_id = ?", (client_id,)).fetchone()[0]
        finally:
            connection.close()

    marie, nadia = [await actor_for(service, e) for e in (MARIE, NADIA)]
    cid = (await service.create_conversation(marie, [nadia.id], await child_id(service, "Léa")))["id"]
    await service.send_message(marie, cid, "wal-1", "Bonjour")
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
            release.wait(5)
            return real.execute(sql)

        def close(self):
            real.close()

    checkpointer._connection = Slow()
    running = asyncio.create_task(asyncio.to_thread(checkpointer.checkpoint))
    assert await asyncio.to_thread(entered.wait, 5)
    closing = asyncio.create_task(asyncio.to_thread(checkpointer.close))
    await asyncio.sleep(0.05)
    assert not closing.done()  # waits for the pass
    release.set()
    await running
    await closing
    assert checkpointer._connection is None and checkpointer.passes == 2
    setup.close()
