"""Storage: the migrations build exactly the models' schema, on SQLite and on
PostgreSQL; sequence numbers stay gap-free under concurrent writers."""

from __future__ import annotations

import asyncio

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
