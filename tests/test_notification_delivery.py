"""Held notifications (R15) across faults: a push gateway that answers 503 or
hangs, a worker killed mid-pass, a release that dies before its commit, a
crash between a channel's answer and its record.  Every staff member of the
demo directory has notifications held from Friday evening; at the start of
their working time they are released by two workers sharing the database and
the broker, and what people get is counted where they get it: a real SMTP
server (aiosmtpd), a fake push gateway over real HTTP, and each person's own
WebSocket.  Leases run on the notifier's clock, which the tests move; the
channels' timeouts are real but short, and the only time assertion is a
documented bound computed from them (``delivery_bound``)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import orjson
import pytest
from sqlalchemy import event, func, select

from chat.config import load_settings
from chat.errors import ConfigError
from chat.frames import dumps
from chat.notifications import RETRY_MAX_SECONDS, STAFF_ROLES, Notifier, Pending, delivery_bound
from chat.storage.models import Notification, NotificationDelivery, Person, StaffSchool
from tests.mailbox import Mailbox, mailbox  # noqa: F401 - the fixture
from tests.notifiers import install_notifier, notifier_for
from tests.test_notifications import FRIDAY_EVENING, Clock, Recorder

LEASE = 10.0  # the shortest the check allows: twice the frame's 5 s timeout


class PushGateway:
    """A push gateway over HTTP/1.1 that answers 503, hangs (never answers, until
    the client gives up), or accepts (200).  ``on_request`` runs as each request
    arrives."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests: list[dict] = []  # every request received, whatever the answer
        self.accepted: list[dict] = []  # those answered 200
        self.on_request = lambda: None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/push"

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readline():  # the request line; empty at end of stream
                headers = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                payload = orjson.loads(await reader.readexactly(int(headers.get("content-length", "0"))))
                assert headers.get("idempotency-key") == payload["key"]
                self.requests.append(payload)
                self.on_request()
                if self.mode == "hang":
                    await reader.read()  # until the client gives up and closes
                    return
                status = "200 OK" if self.mode == "ok" else "503 Service Unavailable"
                if self.mode == "ok":
                    self.accepted.append(payload)
                writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def gateway():
    push = PushGateway()
    await push.start()
    yield push
    await push.stop()


def advance(clock: Clock, seconds: float) -> None:
    clock.set(clock.now + timedelta(seconds=seconds))


async def hold_for_every_staff_member(service, notifier: Notifier, per_person: int) -> dict[int, str]:
    """``per_person`` notifications for every school staff member, created on
    Friday evening (held, R15); the clock is then set to the last release time.
    Returns person id -> e-mail."""
    async with service.sessions() as session:
        staff = (await session.execute(
            select(Person.id, Person.email, func.min(StaffSchool.school_id))
            .join(StaffSchool, StaffSchool.person_id == Person.id)
            .where(Person.role.in_(STAFF_ROLES)).group_by(Person.id, Person.email).order_by(Person.id))).all()
    notifier.clock.set(FRIDAY_EVENING)
    async with service.sessions() as session, session.begin():
        await notifier.add(session, [
            Pending(person_id=person_id, kind="message", code="notify.message_plain",
                    fields={"sender": "Marie Tremblay"}, link={}, school_id=school_id)
            for person_id, _, school_id in staff for _ in range(per_person)])
    async with service.sessions() as session:
        held, last = (await session.execute(select(func.count(), func.max(Notification.deliver_at)).where(
            Notification.held == True, Notification.delivered_at.is_(None)))).one()  # noqa: E712
    assert held == len(staff) * per_person and len(staff) >= 10
    notifier.clock.set(last)
    return {person_id: email for person_id, email, _ in staff}


async def held_ids(service) -> set[int]:
    async with service.sessions() as session:
        return set((await session.execute(select(Notification.id).where(Notification.held == True))).scalars())  # noqa: E712


async def digests_seen(server, clients: dict) -> dict[int, list[dict]]:
    """Every ``notification.digest`` each person's socket received: a marker is
    published on each person channel after the passes, and read up to."""
    seen = {}
    for person_id, client in clients.items():
        await server.service.hub.publish_person(person_id, "frame", dumps({"type": "test.marker"}))
        await client.next("test.marker")
        seen[person_id] = [f for f in client.frames if f["type"] == "notification.digest"]
    return seen


def workers(service, settings, clock: Clock) -> tuple[Notifier, Notifier]:
    """Two workers' notifiers over one database and broker (each its own lease owner)."""
    return notifier_for(service, settings, clock=clock), notifier_for(service, settings, clock=clock)


async def both(*calls):
    return await asyncio.gather(*calls)


async def test_a_push_gateway_answering_503_delays_no_digest_and_each_goes_out_once_per_channel(
        server, mailbox, gateway):
    """Issue #17 (12): with the gateway answering 503 every person's digest was
    retried inline for ~31 s, the pass outlived its lease and a second worker
    sent it all again.  Now the frame and the e-mail go out in the first pass,
    within the documented bound, whatever the push does; the push is retried
    from the database over passes many leases apart, by two workers at once,
    and accepted once per person when the gateway comes back."""
    service = server.service
    await service.notifier.stop()  # this test's two workers do the passes
    concurrency, timeouts = 2, {"frame": 5.0, "email": 5.0, "push": 2.0}
    settings = service.settings.with_(smtp_url=mailbox.url, notify_webhook_url=gateway.url,
                                      notify_concurrency=concurrency, smtp_timeout_seconds=timeouts["email"],
                                      notify_webhook_timeout_seconds=timeouts["push"], notify_lease_seconds=LEASE)
    clock = Clock(FRIDAY_EVENING)
    a, b = workers(service, settings, clock)
    staff = await hold_for_every_staff_member(service, a, per_person=3)
    clients = {person_id: await server.connect(email) for person_id, email in staff.items()}
    bound = max(delivery_bound(len(staff), concurrency, t) for t in timeouts.values())
    gateway.mode = "503"

    released = await both(a.release_due(), b.release_due())
    assert sum(released) == len(await held_ids(service)) == 3 * len(staff)
    await asyncio.wait_for(both(a.send_due(), b.send_due()), bound)
    # Everyone's frame and e-mail are out; every push was tried once and refused.
    assert mailbox.count() == Counter(staff.values())
    assert sorted(r["person"]["id"] for r in gateway.requests) == sorted(staff)
    assert gateway.accepted == []

    # Passes many leases apart, both workers each time: the gateway still refuses,
    # then comes back.  Nothing is released, e-mailed or framed again.
    for mode in ("503", "ok", "ok"):
        gateway.mode = mode
        advance(clock, RETRY_MAX_SECONDS)
        assert await both(a.release_due(), b.release_due(), a.email_unread(), b.email_unread()) == [0, 0, 0, 0]
        await asyncio.wait_for(both(a.send_due(), b.send_due()), bound)
    assert len(gateway.requests) == 3 * len(staff)
    assert sorted(r["person"]["id"] for r in gateway.accepted) == sorted(staff)  # once each
    assert sorted(i for r in gateway.accepted for i in (n["id"] for n in r["notifications"])) == sorted(
        await held_ids(service))
    assert mailbox.count() == Counter(staff.values())
    seen = await digests_seen(server, clients)
    assert {person_id: len(frames) for person_id, frames in seen.items()} == {person_id: 1 for person_id in staff}
    framed = [n["id"] for frames in seen.values() for frame in frames for n in frame["notifications"]]
    assert sorted(framed) == sorted(await held_ids(service))
    for client in clients.values():
        await client.close()


async def test_a_push_gateway_that_hangs_costs_each_attempt_its_timeout_and_no_one_is_sent_twice(
        server, mailbox, gateway):
    """Issue #17 (12), the gateway hanging (~91 s per person before).  Each push
    attempt is cut off after its timeout, so the push pass ends within its
    documented bound and the frames and e-mails within theirs.  The clock runs
    a fifth of a lease on at every request the gateway receives: the push pass
    outlives its lease twice over while two workers take rows from it, yet no
    attempt is taken over (each holds its own lease, longer than it needs:
    while one hangs, the other worker starts at most two or three) and no one
    gets a push twice."""
    service = server.service
    await service.notifier.stop()
    concurrency, push_timeout = 1, 0.5
    settings = service.settings.with_(smtp_url=mailbox.url, notify_webhook_url=gateway.url,
                                      notify_concurrency=concurrency, smtp_timeout_seconds=5.0,
                                      notify_webhook_timeout_seconds=push_timeout, notify_lease_seconds=LEASE)
    clock = Clock(FRIDAY_EVENING)
    a, b = workers(service, settings, clock)
    staff = await hold_for_every_staff_member(service, a, per_person=2)
    clients = {person_id: await server.connect(email) for person_id, email in staff.items()}
    gateway.mode = "hang"
    started = clock.now

    assert sum(await both(a.release_due(), b.release_due())) == 2 * len(staff)
    # Each channel's pass on its own, as the background tasks run them.  The
    # frames and e-mails go first: the clock below jumps a fifth of a lease at
    # every push request, far faster than any lease is renewed in real time, so
    # an e-mail still in flight on a slow machine would see its lease lapse and
    # be sent again by the other worker, a clock no real machine has.  That the
    # frames and e-mails do not wait for a hanging gateway is the next test's.
    frame_and_email = [worker.send_due(channel)
                       for worker in (a, b) for channel in (worker.frame, *worker.channels) if channel.name != "push"]
    await asyncio.wait_for(both(*frame_and_email), delivery_bound(len(staff), concurrency, 5.0))
    gateway.on_request = lambda: advance(clock, LEASE / 5)
    push = [worker.send_due(channel) for worker in (a, b) for channel in worker.channels if channel.name == "push"]
    await asyncio.wait_for(both(*push), delivery_bound(len(staff), concurrency, push_timeout))
    assert (clock.now - started).total_seconds() >= 2 * LEASE  # the push pass outlived the lease
    assert mailbox.count() == Counter(staff.values())
    assert sorted(r["person"]["id"] for r in gateway.requests) == sorted(staff)  # each once, none taken over

    gateway.mode = "ok"
    gateway.on_request = lambda: None
    for _ in range(2):
        advance(clock, RETRY_MAX_SECONDS)
        await asyncio.wait_for(both(a.send_due(), b.send_due()), delivery_bound(len(staff), concurrency, 5.0))
    assert sorted(r["person"]["id"] for r in gateway.accepted) == sorted(staff)
    assert len({r["key"] for r in gateway.requests}) == len(staff)  # the retry kept its key
    seen = await digests_seen(server, clients)
    assert {person_id: len(frames) for person_id, frames in seen.items()} == {person_id: 1 for person_id in staff}
    assert mailbox.count() == Counter(staff.values())
    for client in clients.values():
        await client.close()


async def test_the_running_notifier_sends_frames_and_e_mails_while_its_push_attempts_hang(server, mailbox, gateway):
    """The background passes as a worker runs them (``start``): the release wakes
    each channel's own send task, so with the push gateway hanging, every staff
    member still gets their frame and their e-mail from the first pass."""
    service = server.service
    await service.notifier.stop()
    settings = service.settings.with_(smtp_url=mailbox.url, notify_webhook_url=gateway.url,
                                      smtp_timeout_seconds=5.0, notify_webhook_timeout_seconds=5.0,
                                      notify_lease_seconds=LEASE)
    clock = Clock(FRIDAY_EVENING)
    notifier = install_notifier(service, notifier_for(service, settings, clock=clock))
    staff = await hold_for_every_staff_member(service, notifier, per_person=1)
    clients = {person_id: await server.connect(email) for person_id, email in staff.items()}
    gateway.mode = "hang"
    notifier.start()  # the first pass runs at once
    for person_id, client in clients.items():
        digest = await client.next("notification.digest")
        assert [n["held"] for n in digest["notifications"]] == [True] and digest["digest_id"]
    await mailbox.wait_for(len(staff))
    assert mailbox.count() == Counter(staff.values())
    for client in clients.values():
        await client.close()


async def test_a_worker_killed_mid_pass_leaves_only_its_attempt_in_flight_and_another_sends_it_after_the_lease(
        service, mailbox):
    """Issue #17 (11): a worker killed while sending held rows for 15 minutes (its
    900 s lease) and the person it was e-mailing got the digest twice.  Now a
    worker holds a lease only on the attempts it has in flight: killed while
    the relay had not answered, the other worker sends everyone else at once,
    and that one person's e-mail once the (120 s by default) lease has passed —
    exactly one e-mail each."""
    await service.notifier.stop()
    settings = service.settings.with_(smtp_url=mailbox.url, notify_concurrency=1, smtp_timeout_seconds=5.0,
                                      notify_lease_seconds=LEASE)
    clock = Clock(FRIDAY_EVENING)
    a, b = workers(service, settings, clock)
    staff = await hold_for_every_staff_member(service, a, per_person=2)
    victim = list(staff.values())[3]  # a's fourth e-mail
    mailbox.hold(victim)

    assert await a.release_due() == 2 * len(staff)
    await a.send_due(a.frame)
    sending = asyncio.create_task(a.send_due(a.channels[0]))
    await asyncio.wait_for(mailbox.holding.wait(), 10)
    sending.cancel()  # killed with the relay still silent: its lease on that one delivery stays
    with pytest.raises(asyncio.CancelledError):
        await sending

    assert await b.release_due() == 0
    await b.send_due()
    assert mailbox.count() == Counter(e for e in staff.values() if e != victim)  # at once, the victim's waits
    advance(clock, LEASE + 1)
    await b.send_due()
    assert mailbox.count() == Counter(staff.values())
    advance(clock, RETRY_MAX_SECONDS)
    assert await b.send_due() == 0 and await a.send_due() == 0
    assert mailbox.count() == Counter(staff.values())


async def test_a_release_that_dies_before_its_commit_releases_nothing_and_the_next_pass_releases_it_all(service):
    """Issue #17 (11): rows claimed by a dead worker waited for its lease.  A
    release is now one transaction: a worker that dies in it (here, its
    statement marking the rows delivered fails) leaves every row held, and the
    other worker's next pass releases them all at once, one digest each."""
    await service.notifier.stop()
    clock = Clock(FRIDAY_EVENING)
    recorder = Recorder()
    a = notifier_for(service, clock=clock, channels=[recorder])
    b = notifier_for(service, clock=clock, channels=[recorder])
    staff = await hold_for_every_staff_member(service, a, per_person=3)

    def die(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().startswith("UPDATE notification SET delivered_at"):
            raise RuntimeError("worker killed")

    engine = service.engine.sync_engine
    event.listen(engine, "before_cursor_execute", die)
    try:
        with pytest.raises(Exception):
            await a.release_due()
    finally:
        event.remove(engine, "before_cursor_execute", die)
    async with service.sessions() as session:
        assert (await session.execute(select(func.count()).select_from(Notification).where(
            Notification.delivered_at.is_not(None)))).scalar_one() == 0
        assert (await session.execute(select(func.count()).select_from(NotificationDelivery))).scalar_one() == 0

    assert await b.release_due() == 3 * len(staff)  # no lease to wait for
    await b.send_due()
    assert sorted(email for email, _, _ in recorder.deliveries) == sorted(staff.values())
    assert sorted(n["id"] for _, _, items in recorder.deliveries for n in items) == sorted(await held_ids(service))


async def test_an_e_mail_sent_again_after_a_crash_before_its_record_keeps_its_message_id(service, mailbox):
    """What is not guaranteed, and how it shows: a worker that dies after the
    relay accepted an e-mail but before recording it leaves the delivery to be
    sent again after the lease — with the same Message-ID, so the copy can be
    recognised — and then never again."""
    await service.notifier.stop()
    settings = service.settings.with_(smtp_url=mailbox.url, smtp_timeout_seconds=5.0, notify_lease_seconds=LEASE)
    clock = Clock(FRIDAY_EVENING)
    a, b = workers(service, settings, clock)
    staff = await hold_for_every_staff_member(service, a, per_person=1)
    assert await a.release_due() == len(staff)

    def die(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().startswith("UPDATE notificationdelivery SET") and "done_at" in statement.split("WHERE")[0]:
            raise RuntimeError("worker killed")

    engine = service.engine.sync_engine
    event.listen(engine, "before_cursor_execute", die)
    try:
        await a.send_due(a.channels[0])  # every e-mail accepted, none recorded
    finally:
        event.remove(engine, "before_cursor_execute", die)
    assert mailbox.count() == Counter(staff.values())
    assert await b.send_due(b.channels[0]) == 0  # within the lease: nothing
    advance(clock, LEASE + 1)
    assert await b.send_due(b.channels[0]) == len(staff)
    assert mailbox.count() == Counter({email: 2 for email in staff.values()})
    ids: dict[str, set[str]] = {}
    for address, message in mailbox.messages:
        ids.setdefault(address, set()).add(message["Message-ID"])
    assert all(len(v) == 1 for v in ids.values()) and len({i for v in ids.values() for i in v}) == len(staff)
    advance(clock, RETRY_MAX_SECONDS)
    assert await b.send_due(b.channels[0]) == 0 and await a.send_due(a.channels[0]) == 0


def test_the_notification_lease_is_120_s_and_must_outlast_every_delivery_timeout_twice(tmp_path):
    env = {"CHAT_SECRET_FILE": str(tmp_path / "secret")}
    settings = load_settings(env)
    assert (settings.notify_lease_seconds, settings.smtp_timeout_seconds, settings.notify_webhook_timeout_seconds,
            settings.notify_concurrency) == (120.0, 30.0, 10.0, 8)
    with pytest.raises(ConfigError) as error:
        load_settings({**env, "NOTIFY_LEASE_SECONDS": "50"})  # under 2 x SMTP_TIMEOUT_SECONDS
    assert error.value.fields["variable"] == "NOTIFY_LEASE_SECONDS"
    assert load_settings({**env, "NOTIFY_LEASE_SECONDS": "50", "SMTP_TIMEOUT_SECONDS": "20"}).notify_lease_seconds == 50
    with pytest.raises(ConfigError):
        load_settings({**env, "NOTIFY_CONCURRENCY": "0"})


async def test_a_send_pass_looks_deliveries_up_in_the_partial_index_of_those_still_to_send(service, backend):
    """The delivery rows of every digest ever sent stay in the table; a send pass
    claims through the partial index of rows not done (migration 0010), by
    channel and due time, without a scan or a sort.  On SQLite's query plan."""
    if backend != "embedded":
        pytest.skip("query plans are checked on SQLite")
    statements: dict[str, tuple] = {}

    def record(_conn, _cursor, statement, parameters, _context, _many) -> None:
        if statement.lstrip().startswith("SELECT notificationdelivery.id") and "ORDER BY" in statement:
            statements[statement] = tuple(parameters)

    await service.notifier.stop()
    engine = service.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        await service.notifier.send_due()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(statements) == 1, statements  # one statement, for every channel
    async with service.engine.connect() as connection:
        for statement, parameters in statements.items():
            plan = [row[-1] for row in (await connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {statement}", parameters)).all()]
            assert any("USING INDEX ix_notificationdelivery_due (channel=?" in step for step in plan), plan
            assert not any("TEMP B-TREE" in step or step.startswith("SCAN") for step in plan), plan
