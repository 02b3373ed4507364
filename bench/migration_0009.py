"""Times migration 0009 (64-bit ids) on a filled PostgreSQL database.

    python bench/migration_0009.py [--rows 1000000] [--downgrade]

Creates a database of its own (dropped at the end), migrates it to 0008, fills
it with ``--rows`` messages, events, notifications and announcement recipient
rows (and in proportion conversations, participants, people, children), then
times ``upgrade 0009`` — and ``downgrade 0008`` with ``--downgrade``.  Needs
PostgreSQL on 127.0.0.1:5432 (user ``postgres``, trust auth; ``PG_ADMIN_URL``
to change).  The figure is in docs/operations.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alembic import command  # noqa: E402

from chat.storage.db import alembic_config, create_engine  # noqa: E402

ADMIN = os.environ.get("PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def fill(rows: int) -> list[str]:
    """INSERT … SELECT statements for a database at 0008, ``rows`` in the big tables."""
    people, conversations = max(rows // 50, 2000), max(rows // 10, 100)
    return [
        "INSERT INTO organisation (code, name) VALUES ('ORG', 'Org')",
        "INSERT INTO school (code, organisation_id, name, timezone, working_hours, features, closed_days, notice_fr,"
        " notice_en) SELECT 'S' || i, 1, 'École ' || i, 'America/Toronto', '{}', '[]', '[]', '', ''"
        " FROM generate_series(1, 10) i",
        "INSERT INTO school_group (code, school_id, name) SELECT 'G' || i, 1 + i % 10, 'Groupe ' || i"
        " FROM generate_series(1, 100) i",
        f"INSERT INTO person (email, name, role, language, tokens_valid_after) SELECT 'p' || i || '@x.test', 'P' || i,"
        f" CASE WHEN i <= 1000 THEN 'teacher' ELSE 'parent' END, 'fr', 0 FROM generate_series(1, {people}) i",
        "INSERT INTO staffschool (person_id, school_id) SELECT i, 1 + i % 10 FROM generate_series(1, 1000) i",
        "INSERT INTO teachergroup (person_id, group_id) SELECT i, 1 + i % 100 FROM generate_series(1, 1000) i",
        f"INSERT INTO student (organisation_id, school_id, group_id, first_name, last_name, date_of_birth, fiche,"
        f" code_permanent) SELECT 1, 1 + i % 10, 1 + i % 100, 'F', 'L', date '2015-01-01', lpad(i::text, 7, '0'),"
        f" 'ABCD' || lpad(i::text, 8, '0') FROM generate_series(1, {people}) i",
        f"INSERT INTO guardianship (person_id, student_id) SELECT 1001 + (i % ({people} - 1000)), i"
        f" FROM generate_series(1, {people}) i",
        f"INSERT INTO conversation (school_id, child_id, creator_id, created_at, last_seq) SELECT 1 + i % 10,"
        f" 1 + i % {people}, 1001 + i % ({people} - 1000), now(), 11 FROM generate_series(1, {conversations}) i",
        f"INSERT INTO participant (conversation_id, person_id, active, visible_from_seq, last_read_seq, joined_at)"
        f" SELECT c, p, true, 1, 5, now() FROM generate_series(1, {conversations}) c,"
        f" LATERAL (VALUES (1 + c % 1000), (1001 + c % ({people} - 1000)), (1001 + (c + 7) % ({people} - 1000))) v(p)",
        f"INSERT INTO message (conversation_id, seq, author_id, client_id, text, version, created_at)"
        f" SELECT 1 + (i - 1) / 10, 2 + (i - 1) % 10, 1 + i % 1000, 'c' || i, 'Bonjour, un message de test', 1, now()"
        f" FROM generate_series(1, {rows}) i",
        f"INSERT INTO event (conversation_id, seq, kind, actor_id, message_id, frame, created_at)"
        f" SELECT conversation_id, seq, 'message.new', author_id, id, '{{\"type\":\"event\"}}', created_at FROM message",
        "INSERT INTO event (conversation_id, seq, kind, actor_id, frame, created_at)"
        " SELECT id, 1, 'conversation.created', creator_id, '{}', now() FROM conversation",
        "INSERT INTO reaction (message_id, person_id, emoji, created_at)"
        f" SELECT i * 20, 1001, '👍', now() FROM generate_series(1, {rows // 20}) i",
        "INSERT INTO announcement (organisation_id, school_id, author_id, kind, audience, text, urgent,"
        " recipient_count, created_at) SELECT 1, 1 + i % 10, 1 + i % 1000, 'announcement', '{}', 'Sortie', false,"
        " 1000, now() FROM generate_series(1, 1000) i",
        f"INSERT INTO announcementrecipient (announcement_id, person_id, child_ids)"
        f" SELECT 1 + (i - 1) / 1000, 1001 + (i - 1) % 1000, '[1]' FROM generate_series(1, {rows}) i",
        f"INSERT INTO notification (person_id, child_id, kind, code, fields, link, conversation_id, urgent, created_at,"
        f" deliver_at, held, delivered_at, lease_until) SELECT 1001 + i % ({people} - 1000), 1 + i % {people},"
        f" 'message', 'notification.message', '{{}}', '{{}}', 1 + i % {conversations}, false, now(), now(), false,"
        f" now(), 0 FROM generate_series(1, {rows}) i",
        f"INSERT INTO auditentry (actor_id, school_id, action, target, details, at)"
        f" SELECT 1, 1, 'archive.read', 'conversation:' || i, '{{}}', now() FROM generate_series(1, {rows // 100}) i",
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--downgrade", action="store_true", help="also time the downgrade to 0008")
    args = parser.parse_args()
    name = f"bench_0009_{os.getpid()}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+asyncpg://{ADMIN.split('://', 1)[1].rsplit('/', 1)[0]}/{name}"
    engine = create_engine(url)

    def migrate(connection, step: str, target: str) -> None:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        getattr(command, step)(config, target)

    async def timed(step: str, target: str) -> float:
        started = time.perf_counter()
        async with engine.begin() as connection:
            await connection.run_sync(migrate, step, target)
        await engine.dispose()
        return time.perf_counter() - started

    try:
        await timed("upgrade", "0008")
        data = await asyncpg.connect(url.replace("+asyncpg", ""))
        started = time.perf_counter()
        for statement in fill(args.rows):
            await data.execute(statement)
        await data.execute("VACUUM ANALYZE")
        counts = {t: await data.fetchval(f"SELECT count(*) FROM {t}") for t in
                  ("event", "message", "notification", "announcementrecipient", "participant", "conversation")}
        size = await data.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
        await data.close()
        print(f"filled in {time.perf_counter() - started:.1f} s: {counts}, database {size}")
        print(f"upgrade 0008 -> 0009: {await timed('upgrade', '0009'):.1f} s")
        if args.downgrade:
            print(f"downgrade 0009 -> 0008: {await timed('downgrade', '0008'):.1f} s")
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
