"""Notifications (R15–R17) with a controllable clock: held outside staff working
hours, released once as a digest (live frame + real SMTP e-mail), a feed per
person and child, preferences that stop both the feed entry and the e-mail."""

from __future__ import annotations

import asyncio
import socket
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import orjson
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from chat import clock as chat_clock
from chat.app import App
from chat.notifications import EMAIL_AFTER_SECONDS
from chat.storage.models import Notification, School
from tests.conftest import DIRECTION, JEAN, MARIE, NADIA, actor_for, child_id
from tests.notifiers import install_notifier, notifier_for

MONTREAL = ZoneInfo("America/Toronto")
FRIDAY_EVENING = datetime(2026, 10, 9, 21, 40, tzinfo=MONTREAL)  # Monday 12 is Thanksgiving (QC holiday)
TUESDAY_8AM = datetime(2026, 10, 13, 8, 0, tzinfo=MONTREAL)


class Clock(chat_clock.Clock):
    """The notifier's wall clock stands at ``now`` until the test sets it; its
    monotonic clock and its sleeping are the real ones."""

    def __init__(self, now: datetime) -> None:
        self.now = now.astimezone(timezone.utc)

    def time(self) -> float:
        return self.now.timestamp()

    def utcnow(self) -> datetime:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment.astimezone(timezone.utc)


class Recorder:
    """A delivery channel (in the e-mail's place) that keeps what it was given."""

    name = "email"
    timeout = 5.0

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, bool, list[dict]]] = []

    async def deliver(self, person, items, digest, key) -> None:
        self.deliveries.append((person.email, digest, items))


async def attach(service: App, clock: Clock, channels=None) -> Recorder:
    """The test's notifier in place of the service's, whose passes (on the real
    clock, later than the tests' dates) are stopped first."""
    await service.notifier.stop()
    recorder = Recorder()
    install_notifier(service, notifier_for(service, clock=clock, channels=channels or [recorder]))
    return recorder


async def lea_conversation(service: App, *emails: str) -> int:
    marie = await actor_for(service, MARIE)
    people = [(await actor_for(service, e)).id for e in emails or (NADIA,)]
    return (await service.membership.create(marie, people, await child_id(service, "Léa")))["id"]


async def count(service: App, *where) -> int:
    async with service.sessions() as session:
        return (await session.execute(select(func.count()).select_from(Notification).where(*where))).scalar_one()


async def test_r15_held_at_2140_friday_released_tuesday_8am_after_thanksgiving_as_one_digest(service):
    clock = Clock(FRIDAY_EVENING)
    recorder = await attach(service, clock)
    marie, nadia = await actor_for(service, MARIE), await actor_for(service, NADIA)
    cid = await lea_conversation(service)
    await service.sending.send(marie, cid, "fri", "Léa a oublié son sac.")
    clock.set(datetime(2026, 10, 10, 9, 15, tzinfo=MONTREAL))  # Saturday
    await service.sending.send(marie, cid, "sat", "Il est retrouvé!")
    async with service.sessions() as session:
        held = (await session.execute(select(Notification).where(Notification.person_id == nadia.id))).scalars().all()
    assert [(n.held, n.deliver_at) for n in held] == [(True, TUESDAY_8AM.astimezone(timezone.utc))] * 2
    assert (await service.notifier.feed(nadia))["notifications"] == []  # the bell stays silent

    for moment in (datetime(2026, 10, 11, 12, 0, tzinfo=MONTREAL),   # Sunday
                   datetime(2026, 10, 12, 10, 0, tzinfo=MONTREAL),   # Thanksgiving Monday
                   datetime(2026, 10, 13, 7, 59, tzinfo=MONTREAL)):  # Tuesday, a minute early
        clock.set(moment)
        assert await service.notifier.release_due() == 0
    assert recorder.deliveries == []

    clock.set(TUESDAY_8AM)
    assert await service.notifier.release_due() == 2
    await service.notifier.send_due()
    assert [(email, digest, len(items)) for email, digest, items in recorder.deliveries] == [
        ("nadia.chabot@erables.test", True, 2)]
    feed = await service.notifier.feed(nadia)
    assert feed["unread"] == 2 and [n["held"] for n in feed["notifications"]] == [True, True]
    assert await service.notifier.release_due() == 0  # released once
    assert await service.notifier.send_due() == 0 and len(recorder.deliveries) == 1  # and sent once


async def test_r15_messages_are_live_at_once_only_the_notification_waits(server):
    clock = Clock(FRIDAY_EVENING)
    await attach(server.service, clock)
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        cid = await lea_conversation(server.service)
        await marie.request("message.send", conversation_id=cid, client_id="late", text="Bonsoir")
        assert (await nadia.event("message.new"))["message"]["text"] == "Bonsoir"
        nadia_id = nadia.hello["person"]["id"]
        assert await count(server.service, Notification.person_id == nadia_id, Notification.held == True) == 1  # noqa: E712
        clock.set(TUESDAY_8AM)
        await server.service.notifier.release_due()
        await server.service.notifier.send_due()
        digest = await nadia.next("notification.digest")
        assert len(digest["notifications"]) == 1 and digest["unread"] == 1
        assert digest["notifications"][0]["text"]["fr"].startswith("Marie Tremblay vous a écrit")


async def test_r15_held_notifications_survive_a_restart(settings, engine):
    clock = Clock(FRIDAY_EVENING)
    first = App(settings, engine)
    await attach(first, clock)
    marie = await actor_for(first, MARIE)
    cid = await lea_conversation(first)
    await first.sending.send(marie, cid, "before-restart", "Message du vendredi soir")
    del first  # the server goes down for the weekend

    clock.set(TUESDAY_8AM + timedelta(minutes=1))
    second = App(settings, engine)
    recorder = await attach(second, clock)
    assert await second.notifier.release_due() == 1
    await second.notifier.send_due()
    assert recorder.deliveries[0][0] == "nadia.chabot@erables.test"


async def test_r15_two_workers_release_each_notification_once(settings, engine):
    clock = Clock(FRIDAY_EVENING)
    a, b = App(settings, engine), App(settings, engine)
    recorder_a, recorder_b = await attach(a, clock), await attach(b, clock)
    marie = await actor_for(a, MARIE)
    cid = await lea_conversation(a)
    for i in range(20):
        await a.sending.send(marie, cid, f"m{i}", f"Message {i}")
    clock.set(TUESDAY_8AM)
    released = await asyncio.gather(a.notifier.release_due(), b.notifier.release_due())
    assert sum(released) == 20
    await asyncio.gather(a.notifier.send_due(), b.notifier.send_due())
    items = [n["id"] for r in (recorder_a, recorder_b) for _, _, batch in r.deliveries for n in batch]
    assert len(items) == len(set(items)) == 20


# -- real SMTP ------------------------------------------------------------------------------------------
class Mailbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):
        from email import message_from_bytes, policy

        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content, policy=policy.default)))
        return "250 OK"


@pytest.fixture
def smtp_server():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, f"smtp://127.0.0.1:{port}"
    controller.stop()


async def test_the_digest_e_mail_goes_through_smtp_in_the_recipients_language(settings, engine, smtp_server):
    mailbox, url = smtp_server
    service = App(settings.with_(smtp_url=url), engine)
    clock = Clock(FRIDAY_EVENING)
    install_notifier(service, notifier_for(service, clock=clock))  # the real e-mail channel
    marie, nadia = await actor_for(service, MARIE), await actor_for(service, NADIA)
    cid = await lea_conversation(service, NADIA, JEAN)
    await service.sending.send(marie, cid, "a", "Texte privé qui ne doit pas partir par courriel")
    await service.sending.send(marie, cid, "b", "Deuxième message")
    clock.set(TUESDAY_8AM)
    assert await service.notifier.release_due() == 2
    await service.notifier.send_due()
    (recipients, message), = [m for m in mailbox.messages if m[0] == ["nadia.chabot@erables.test"]]
    assert message["Subject"] == "Clic : 2 notification(s) pendant votre absence"
    body = message.get_content()
    assert body.startswith("Bonjour Nadia Chabot,") and body.count("Marie Tremblay vous a écrit") == 2
    assert "Texte privé" not in body  # e-mails never carry message text

    # Jean (English) was notified at once as a parent; unread after the delay, he is e-mailed.
    await service.sending.send(nadia, cid, "n", "Réponse de l'enseignante")
    clock.set(TUESDAY_8AM + timedelta(seconds=EMAIL_AFTER_SECONDS + 1))
    assert await service.notifier.email_unread() >= 1
    await service.notifier.send_due()
    jean_mail = [m for r, m in mailbox.messages if r == ["jean.tremblay@parent.test"]]
    assert jean_mail and jean_mail[-1]["Subject"].startswith("Clic: ") and "Hello Jean Tremblay," in jean_mail[-1].get_content()
    assert "Nadia Chabot wrote to you" in jean_mail[-1].get_content()


# -- feed (R16) and preferences (R17) ---------------------------------------------------------------------
async def test_r16_feed_is_newest_first_per_child_with_unread_counts_and_marking_read(service):
    clock = Clock(TUESDAY_8AM + timedelta(hours=2))
    await attach(service, clock)
    marie, nadia = await actor_for(service, MARIE), await actor_for(service, NADIA)
    cid = await lea_conversation(service)
    for i in range(3):
        clock.set(clock.now + timedelta(minutes=1))
        await service.sending.send(nadia, cid, f"n{i}", f"Nouvelle {i}")
    lea = await child_id(service, "Léa")
    feed = await service.notifier.feed(marie, child_id=lea)
    ids = [n["id"] for n in feed["notifications"]]
    assert ids == sorted(ids, reverse=True) and feed["unread"] == 3
    assert (await service.notifier.feed(marie, child_id=await child_id(service, "Noah")))["notifications"] == []
    opened = await service.notifier.open(marie, ids[0])
    assert opened["read"] is True and opened["child"]["name"] == "Léa Tremblay"
    assert opened["link"]["conversation_id"] == cid
    assert (await service.notifier.feed(marie))["unread"] == 2
    assert (await service.notifier.mark_all_read(marie))["unread"] == 0
    page = await service.notifier.feed(marie, before=ids[0], limit=1)
    assert [n["id"] for n in page["notifications"]] == [ids[1]]


async def test_reading_the_conversation_reads_its_notifications_so_no_e_mail_follows(service):
    clock = Clock(TUESDAY_8AM + timedelta(hours=2))
    recorder = await attach(service, clock)
    marie, nadia = await actor_for(service, MARIE), await actor_for(service, NADIA)
    cid = await lea_conversation(service)
    ack = await service.sending.send(nadia, cid, "n", "Bonjour")
    await service.messages.mark_read(marie, cid, ack["seq"])
    clock.set(clock.now + timedelta(seconds=EMAIL_AFTER_SECONDS + 1))
    await service.notifier.email_unread()
    await service.notifier.send_due()
    assert [d for d in recorder.deliveries if d[0] == "marie.tremblay@parent.test"] == []


async def test_r17_a_switched_off_kind_for_one_child_creates_no_notification_and_no_e_mail(service):
    clock = Clock(TUESDAY_8AM + timedelta(hours=2))
    recorder = await attach(service, clock)
    marie, nadia = await actor_for(service, MARIE), await actor_for(service, NADIA)
    lea = await child_id(service, "Léa")
    await service.notifier.set_preference(marie, lea, "message", False)
    assert (await service.notifier.preferences(marie))["preferences"] == [
        {"child_id": lea, "kind": "message", "enabled": False}]
    cid = await lea_conversation(service)
    await service.sending.send(nadia, cid, "quiet", "Pas de cloche pour ceci")
    assert await count(service, Notification.person_id == marie.id) == 0
    clock.set(clock.now + timedelta(seconds=EMAIL_AFTER_SECONDS + 1))
    await service.notifier.email_unread()
    await service.notifier.send_due()
    assert [d for d in recorder.deliveries if d[0] == "marie.tremblay@parent.test"] == []
    # The other kinds, and the same kind for the other guardian, still notify.
    await service.messages.react(nadia, (await service.sending.send(marie, cid, "mine", "Merci"))["message_id"], "👍", True)
    assert await count(service, Notification.person_id == marie.id, Notification.kind == "reaction") == 1


async def test_r17_unknown_kind_and_someone_elses_child_are_refused(service):
    from chat.errors import ChatError

    marie, jean = await actor_for(service, MARIE), await actor_for(service, JEAN)
    with pytest.raises(ChatError) as error:
        await service.notifier.set_preference(marie, None, "gossip", False)
    assert error.value.code == "notification.unknown_kind"
    with pytest.raises(ChatError) as error:
        await service.notifier.set_preference(jean, await child_id(service, "Noah"), "message", False)
    assert error.value.code == "child.not_found"


async def test_a_school_with_no_working_hours_notifies_at_once_instead_of_never(service):
    from sqlalchemy import update

    from chat.storage.models import School

    async with service.sessions() as session, session.begin():
        await session.execute(update(School).where(School.code == "ERABLES").values(working_hours="{}"))
    clock = Clock(FRIDAY_EVENING)
    await attach(service, clock)
    marie, nadia = await actor_for(service, MARIE), await actor_for(service, NADIA)
    cid = await lea_conversation(service)
    await service.sending.send(marie, cid, "x", "Bonsoir")
    assert (await service.notifier.feed(nadia))["unread"] == 1


async def test_r17_an_announcement_switched_off_for_one_child_creates_no_notification(service):
    from chat.storage.models import Group

    clock = Clock(TUESDAY_8AM + timedelta(hours=2))
    await attach(service, clock)
    marie, jean, nadia = [await actor_for(service, e) for e in (MARIE, JEAN, NADIA)]
    await service.notifier.set_preference(marie, await child_id(service, "Léa"), "announcement", False)
    async with service.sessions() as session:
        group = (await session.execute(select(Group.id).where(Group.code == "ERA-301"))).scalar_one()
    await service.announcements.post(nadia, {"groups": [group]}, "Sortie au musée")
    assert await count(service, Notification.person_id == marie.id, Notification.kind == "announcement") == 0
    assert await count(service, Notification.person_id == jean.id, Notification.kind == "announcement") == 1


async def test_an_integration_notice_notifies_each_guardian_once_for_the_child_unless_switched_off(service):
    """R12 notices go to the feed like announcements (R16, labelled with the
    child), and R17's per-kind switch stops them; guardians are never held."""
    from chat.storage.models import Student

    clock = Clock(TUESDAY_8AM - timedelta(hours=10))  # night: staff would be held, guardians are not
    await attach(service, clock)
    marie, jean = await actor_for(service, MARIE), await actor_for(service, JEAN)
    lea = await child_id(service, "Léa")
    await service.notifier.set_preference(jean, lea, "transport", False)
    async with service.sessions() as session:
        fiche = (await session.execute(select(Student.fiche).where(Student.id == lea))).scalar_one()
    _key_id, raw = await service.announcements.create_key("ERABLES", "Autobus", ["transport"])
    key = await service.announcements.authenticate_key(raw)
    answer = await service.announcements.notice(key, "transport", "Autobus 12 en retard", [fiche])
    async with service.sessions() as session:
        rows = (await session.execute(select(Notification).where(Notification.kind == "transport"))).scalars().all()
    assert [(n.person_id, n.child_id, n.held) for n in rows] == [(marie.id, lea, False)]
    assert orjson.loads(rows[0].link) == {"announcement_id": answer["notice"]["id"]}


async def test_r17_an_announcement_switched_off_for_all_children_creates_none_for_any_child(service):
    """Off for all children (child 0): no notification for Marie, while the
    others (Jean, Léa's other guardian, too) still get theirs."""
    clock = Clock(TUESDAY_8AM + timedelta(hours=2))
    await attach(service, clock)
    marie, jean, direction = [await actor_for(service, e) for e in (MARIE, JEAN, DIRECTION)]
    await service.notifier.set_preference(marie, None, "announcement", False)
    async with service.sessions() as session:
        school = (await session.execute(select(School.id).where(School.code == "ERABLES"))).scalar_one()
    answer = await service.announcements.post(direction, {"school": school}, "Journée pédagogique")
    recipients = answer["announcement"]["recipient_count"]
    assert recipients > 2
    assert await count(service, Notification.person_id == marie.id, Notification.kind == "announcement") == 0
    assert await count(service, Notification.person_id == jean.id, Notification.kind == "announcement") == 1
    # Everyone else got theirs (one per child in the school, so at least one each).
    assert await count(service, Notification.kind == "announcement") >= recipients - 1


async def test_the_release_and_e_mail_passes_look_rows_up_in_their_partial_indexes(service, backend):
    """Each pass claims its rows through a partial index (migration 0005) that
    holds only the rows it can want — held ones for R15's release, unread and
    un-e-mailed ones for the e-mail pass — rather than walking the whole
    table, which holds every notification ever made.  Checked on SQLite's own
    query plan for the statements the passes really run.  (PostgreSQL's plan
    depends on statistics: it scans a test-sized table whatever the query.)"""
    if backend != "embedded":
        pytest.skip("query plans are checked on SQLite")
    from sqlalchemy import event

    statements: dict[str, tuple] = {}  # the service's own background passes may run them too

    def record(_conn, _cursor, statement, parameters, _context, _many) -> None:
        if statement.lstrip().startswith("SELECT notification.id") and "ORDER BY" in statement:
            statements[statement] = tuple(parameters)

    engine = service.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        await service.notifier.release_due()
        await service.notifier.email_unread()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(statements) == 2, statements
    plans = []
    async with service.engine.connect() as connection:
        for statement, parameters in statements.items():
            plans.append([row[-1] for row in (await connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {statement}", parameters)).all()])
    release, e_mail = sorted(plans, key=lambda plan: "unmailed" in str(plan))
    assert any("USING INDEX ix_notification_due" in step for step in release), release
    assert any("USING INDEX ix_notification_unmailed" in step for step in e_mail), e_mail
    assert not any(step.startswith("SCAN notification") for plan in plans for step in plan), plans


async def test_a_feed_page_walks_one_persons_index_entries_newest_first_without_sorting(service, backend):
    """R16's feed is read newest first by id: the index is (person, id)
    (migration 0007), so a page is a walk back along one person's entries
    that stops at its limit — no sort of all their notifications, no scan."""
    if backend != "embedded":
        pytest.skip("query plans are checked on SQLite")
    from sqlalchemy import event

    marie = await actor_for(service, MARIE)
    statements: dict[str, tuple] = {}

    def record(_conn, _cursor, statement, parameters, _context, _many) -> None:
        if "FROM notification" in statement and "ORDER BY notification.id DESC" in statement:
            statements[statement] = tuple(parameters)

    engine = service.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        await service.notifier.feed(marie, limit=5)
        await service.notifier.feed(marie, child_id=await child_id(service, "Léa"), before=10**9, limit=5)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(statements) == 2, statements
    async with service.engine.connect() as connection:
        for statement, parameters in statements.items():
            plan = [row[-1] for row in (await connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {statement}", parameters)).all()]
            assert any("USING INDEX ix_notification_feed (person_id=?" in step for step in plan), plan
            assert not any("TEMP B-TREE" in step or step.startswith("SCAN notification") for step in plan), plan


async def test_the_fan_out_tables_name_only_existing_people_children_and_announcements(service):
    """Recipient and notification rows carry no foreign keys (migration 0006):
    they are derived, in the event's own transaction, from rows that have them.
    After an announcement to a school, a notice about a child and a message,
    every row still names a person, a child and an announcement that exist —
    and there are rows to check."""
    from sqlalchemy import and_, or_

    from chat.storage.models import Announcement, AnnouncementRecipient, Person, Student

    marie, nadia, direction = [await actor_for(service, e) for e in (MARIE, NADIA, DIRECTION)]
    async with service.sessions() as session:
        school, fiche = (await session.execute(
            select(School.id, Student.fiche).join(Student, Student.school_id == School.id)
            .where(School.code == "ERABLES").limit(1))).one()
    await service.announcements.post(direction, {"school": school}, "Journée pédagogique")
    _key_id, raw = await service.announcements.create_key("ERABLES", "Autobus", ["transport"])
    await service.announcements.notice(await service.announcements.authenticate_key(raw), "transport",
                                       "Autobus 12 en retard", [fiche])
    cid = await lea_conversation(service)
    await service.sending.send(marie, cid, "c-1", "Bonjour")
    await service.sending.send(nadia, cid, "c-2", "Bonjour Marie")

    async with service.sessions() as session:
        async def orphans(model, condition) -> int:
            return (await session.execute(select(func.count()).select_from(model).where(condition))).scalar_one()

        people, students = select(Person.id), select(Student.id)
        assert await count(service, Notification.kind == "announcement") > 0
        assert await count(service, Notification.kind == "transport") > 0
        assert await count(service, Notification.kind == "message") > 0
        assert (await session.execute(select(func.count()).select_from(AnnouncementRecipient))).scalar_one() > 0
        assert await orphans(Notification, Notification.person_id.not_in(people)) == 0
        assert await orphans(Notification, and_(Notification.child_id.is_not(None),
                                                Notification.child_id.not_in(students))) == 0
        assert await orphans(AnnouncementRecipient, or_(
            AnnouncementRecipient.person_id.not_in(people),
            AnnouncementRecipient.announcement_id.not_in(select(Announcement.id)))) == 0
