"""Statements run on the driver's own connection (chat/storage/direct.py): the
same SQLAlchemy Core statements, compiled once, must store and read exactly
what the ORM stores and reads, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import bindparam, func, insert, select

from chat.storage import direct
from chat.storage.models import AnnouncementRecipient, Conversation, Message, Notification, Person, School
from tests.conftest import MARIE, person_by_email

NOTIFICATIONS = Notification.__table__
AT = datetime(2026, 11, 26, 14, 30, 15, 123456, tzinfo=timezone.utc)


def notification(person_id: int, **changes) -> dict:
    row = {"person_id": person_id, "child_id": None, "kind": "message", "code": "notify.message",
           "fields": "{}", "link": "{}", "conversation_id": None, "urgent": True, "created_at": AT,
           "deliver_at": AT, "held": False, "delivered_at": None, "lease_owner": None, "lease_until": 0.0}
    return row | changes


async def notification_count(engine) -> int:
    async with engine.connect() as connection:
        return (await connection.execute(select(func.count()).select_from(NOTIFICATIONS))).scalar_one()


async def test_rows_written_directly_read_back_through_the_orm_as_written(service):
    marie = await person_by_email(service, MARIE)
    async with direct.transaction(service.engine) as connection:
        await connection.execute(NOTIFICATIONS.insert(), [
            notification(marie.id), notification(marie.id, urgent=False), notification(marie.id, held=True)])
    # The same row through the ORM, to compare what each stores.
    async with service.sessions() as session, session.begin():
        session.add(Notification(**notification(marie.id, code="by the orm")))
    async with service.sessions() as session:
        rows = (await session.execute(select(Notification).order_by(Notification.id))).scalars().all()
        stored = (await session.execute(select(func.cast(NOTIFICATIONS.c.created_at, NOTIFICATIONS.c.code.type))
                                        .order_by(NOTIFICATIONS.c.id))).scalars().all()
    assert [(n.urgent, n.held, n.delivered_at, n.code) for n in rows] == [
        (True, False, None, "notify.message"), (False, False, None, "notify.message"),
        (True, True, None, "notify.message"), (True, False, None, "by the orm")]
    assert all(n.created_at == AT and n.created_at.tzinfo is not None for n in rows)
    assert len(set(stored)) == 1  # the same representation in the database


async def test_many_rows_are_all_written_once_each(service):
    """More rows than one multi-row INSERT takes (PostgreSQL: a full run of
    MULTIROW rows in one statement, the rest in an executemany)."""
    marie = await person_by_email(service, MARIE)
    before = await notification_count(service.engine)
    rows = [notification(marie.id, code=f"row {i}", urgent=i % 2 == 0) for i in range(direct.MULTIROW + 3)]
    async with direct.transaction(service.engine) as connection:
        await connection.execute(NOTIFICATIONS.insert(), rows)
    async with service.sessions() as session:
        written = (await session.execute(select(Notification.code, Notification.urgent).where(
            Notification.code.like("row %")))).all()
    assert await notification_count(service.engine) == before + len(rows)
    assert sorted(written) == sorted((row["code"], row["urgent"]) for row in rows)


def test_rows_go_in_runs_of_powers_of_two():
    assert [len(run) for run in direct.runs(list(range(37)), 16)] == [16, 16, 4, 1]
    assert [len(run) for run in direct.runs(list(range(128)), 128)] == [128]
    assert list(direct.runs([], 64)) == []


async def test_selects_take_in_lists_of_any_length_and_give_named_typed_rows(service):
    marie = await person_by_email(service, MARIE)
    people = select(Person.id, Person.email).where(Person.id.in_(bindparam("ids", expanding=True))).order_by(Person.id)
    async with service.engine.connect() as connection:
        some = (await connection.execute(select(Person.id).order_by(Person.id).limit(3))).scalars().all()
    async with direct.transaction(service.engine) as connection:
        one = await connection.execute(people, {"ids": [marie.id]})
        three = await connection.execute(people, {"ids": some})
        message = insert(Message.__table__).values(
            conversation_id=bindparam("cid"), seq=1, author_id=marie.id, client_id="direct", text="bonjour",
            version=1, created_at=bindparam("at")).returning(Message.__table__.c.id, Message.__table__.c.created_at)
        school_id = (await connection.execute(select(School.id).order_by(School.id).limit(1))).scalar_one_or_none()
        conversation_id = (await connection.execute(insert(Conversation.__table__).values(
            school_id=school_id, creator_id=marie.id, created_at=AT, last_seq=1)
            .returning(Conversation.__table__.c.id))).scalar_one_or_none()
        written = (await connection.execute(message, {"cid": conversation_id, "at": AT})).one()
    assert one.all() == [(marie.id, MARIE)] and one.one().email == MARIE
    assert [row.id for row in three] == list(some)  # three ids, compiled as four (the last repeated)
    dialect = service.engine.dialect
    assert direct.plan(people, dialect, {"ids": [1, 2, 3]}) is direct.plan(people, dialect, {"ids": [1, 2, 3, 4]})
    assert written.created_at == AT  # the column's type read it back as an aware datetime
    async with service.sessions() as session:
        assert (await session.get(Message, written.id)).text == "bonjour"


async def test_a_block_that_raises_writes_nothing(service):
    marie = await person_by_email(service, MARIE)
    before = await notification_count(service.engine)
    with pytest.raises(RuntimeError):
        async with direct.transaction(service.engine) as connection:
            await connection.execute(NOTIFICATIONS.insert(), [notification(marie.id)])
            raise RuntimeError("refused after the write")
    assert await notification_count(service.engine) == before
    # The pooled connection is healthy afterwards (SQLite has only the one).
    async with direct.transaction(service.engine) as connection:
        await connection.execute(NOTIFICATIONS.insert(), [notification(marie.id)])
    assert await notification_count(service.engine) == before + 1


async def test_a_missing_value_or_an_omitted_default_is_an_error_not_a_null(service):
    marie = await person_by_email(service, MARIE)
    before = await notification_count(service.engine)
    row = notification(marie.id)
    del row["lease_until"]  # it has a default (0.0) that only SQLAlchemy's own execute would fill in
    with pytest.raises(ValueError, match="lease_until"):
        async with direct.transaction(service.engine) as connection:
            await connection.execute(NOTIFICATIONS.insert(), [row])
    mark = NOTIFICATIONS.update().where(NOTIFICATIONS.c.person_id == bindparam("pid")).values(
        read_at=bindparam("at"))
    with pytest.raises(KeyError, match="at"):
        async with direct.transaction(service.engine) as connection:
            await connection.execute(mark, {"pid": marie.id})
    assert await notification_count(service.engine) == before


async def test_in_lists_mix_with_other_parameters_in_selects_and_insert_selects(service):
    """An IN list beside required parameters (a school's families and the
    author), and an ``INSERT … SELECT`` over an IN list (an announcement's
    notifications): each parameter lands in its own placeholder."""
    async with service.engine.connect() as connection:
        ids = (await connection.execute(select(Person.id).order_by(Person.id).limit(5))).scalars().all()
    named = select(Person.id, Person.email).where(
        Person.id.in_(bindparam("ids", expanding=True)), Person.id != bindparam("not"),
        Person.role != bindparam("role", "nobody")).order_by(Person.id)
    pairs = select(Person.id, bindparam("code", type_=NOTIFICATIONS.c.code.type)).where(
        Person.id.in_(bindparam("ids", expanding=True)), Person.id != bindparam("not"))
    pairs = pairs.subquery()
    copy = insert(NOTIFICATIONS).from_select(["person_id", "code", "kind", "fields", "link", "urgent", "created_at",
                                              "deliver_at", "held", "lease_until"], select(
        pairs.c[0], pairs.c[1], bindparam("kind", "message"), bindparam("fields", "{}"),
        bindparam("link", "{}"), bindparam("urgent", False), bindparam("at", type_=NOTIFICATIONS.c.created_at.type),
        bindparam("at", type_=NOTIFICATIONS.c.created_at.type), bindparam("held", False), bindparam("lease", 0.0)))
    before = await notification_count(service.engine)
    async with direct.transaction(service.engine) as connection:
        rows = await connection.execute(named, {"ids": ids, "not": ids[0]})
        await connection.execute(copy, {"ids": ids[:3], "not": ids[1], "code": "copied", "at": AT})
        with pytest.raises(KeyError, match="not"):
            await connection.execute(named, {"ids": ids})
    assert [row.id for row in rows] == list(ids[1:])
    async with service.sessions() as session:
        copied = (await session.execute(select(Notification.person_id, Notification.created_at).where(
            Notification.code == "copied"))).all()
    assert sorted(pid for pid, _ in copied) == [ids[0], ids[2]]
    assert all(at == AT for _, at in copied)
    assert await notification_count(service.engine) == before + len(copied)


async def test_a_multi_row_insert_returns_its_rows_and_refuses_an_omitted_default(service):
    marie = await person_by_email(service, MARIE)
    before = await notification_count(service.engine)
    columns = list(notification(marie.id))
    rows = [notification(marie.id, code=f"many {i}") for i in range(5)]
    async with direct.transaction(service.engine) as connection:
        written = await connection.insert_rows(NOTIFICATIONS, columns, rows,
                                               (NOTIFICATIONS.c.id, NOTIFICATIONS.c.code, NOTIFICATIONS.c.created_at))
    assert sorted(row.code for row in written) == [f"many {i}" for i in range(5)]
    assert all(row.created_at == AT for row in written)  # through the column's result processor
    assert await notification_count(service.engine) == before + 5
    without = [c for c in columns if c != "lease_until"]
    with pytest.raises(ValueError, match="lease_until"):
        async with direct.transaction(service.engine) as connection:
            await connection.insert_rows(NOTIFICATIONS, without, rows)
    assert await notification_count(service.engine) == before + 5


async def test_tuples_in_and_out_match_the_named_paths(service):
    """``insert_many`` takes plain tuples (no dict per row) and ``tuples`` gives
    the driver's rows, read by position: the same rows as ``execute`` writes
    and reads, on both backends — including more rows than one multi-row
    INSERT takes, and columns with a bind processor (booleans, times), which
    go the dict path."""
    marie = await person_by_email(service, MARIE)
    columns = ("person_id", "child_id", "kind", "code", "fields", "link", "conversation_id", "urgent",
               "created_at", "deliver_at", "held", "delivered_at", "lease_owner", "lease_until")
    rows = [tuple(notification(marie.id, code=f"tuple {i}", urgent=i % 3 == 0)[c] for c in columns)
            for i in range(direct.MULTIROW + 5)]
    ids = select(Notification.id, Notification.person_id).where(
        Notification.code.like(bindparam("prefix"))).order_by(Notification.id)
    async with direct.transaction(service.engine) as connection:
        await connection.insert_many(NOTIFICATIONS.insert(), columns, rows)
        await connection.insert_many(NOTIFICATIONS.insert(), columns, [])  # nothing to write
        plain = await connection.tuples(ids, {"prefix": "tuple %"})
        named = await connection.execute(ids, {"prefix": "tuple %"})
        with pytest.raises(ValueError):  # a column needing result processing is refused
            await connection.tuples(select(Notification.created_at).limit(1))
    assert [tuple(row) for row in plain] == [tuple(row) for row in named] and len(plain) == len(rows)
    assert all(person == marie.id for _, person in plain)
    async with service.sessions() as session:
        written = (await session.execute(select(Notification.code, Notification.urgent, Notification.created_at)
                                         .where(Notification.code.like("tuple %")).order_by(Notification.id))).all()
    assert [(c, u) for c, u, _ in written] == [(f"tuple {i}", i % 3 == 0) for i in range(len(rows))]
    assert all(at == AT for *_, at in written)


async def test_plain_integer_and_text_rows_go_to_sqlite_as_they_are_and_read_back_the_same(service):
    """The recipient rows of an announcement (integers and text, no bind
    processor) are handed to the driver as the caller's tuples (SQLite's fast
    path in ``insert_many``): what is stored is what the ORM reads back."""
    recipients, columns = AnnouncementRecipient.__table__, ("announcement_id", "person_id", "child_ids")
    statement = recipients.insert()
    rows = [(990_000 + i // 3, 10 + i, f"[{i}]") for i in range(40)]
    async with direct.transaction(service.engine) as connection:
        await connection.insert_many(statement, columns, rows)
    if service.engine.dialect.name == "sqlite":  # the fast path's condition holds for these columns
        slots = direct.plan(statement, service.engine.dialect, dict.fromkeys(columns)).slots
        assert [name for name, *_ in slots] == list(columns) and not any(process for *_, process in slots)
    async with service.sessions() as session:
        stored = (await session.execute(select(AnnouncementRecipient).where(
            AnnouncementRecipient.announcement_id >= 990_000).order_by(AnnouncementRecipient.person_id))).scalars().all()
    assert [(r.announcement_id, r.person_id, r.child_ids, r.read_at) for r in stored] == [(*row, None) for row in rows]
