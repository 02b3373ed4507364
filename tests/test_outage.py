"""A database outage, and a broker outage during one, as clients see them
(issue 17, points 7-9): every request answers the documented, retryable
``service.unavailable`` (HTTP 503 with Retry-After); the log says once that the
database is away and once that it is back, with no traceback; no send is
acknowledged that was not stored, and a retry with the same ``client_id``
stores it once; no connection stays open and deaf afterwards; a ``resume``
refused during the outage works when it is sent again on the same socket.

The outages are real.  The hub under test (worker A) reaches PostgreSQL and
Redis through TCP proxies (tests/proxy.py) that the test cuts and restores,
while a second service (worker B, the ``service`` fixture) uses both
directly, as another worker would.  Those tests run on the ``real`` backend
only: SQLite is a file in the process, with no connection to lose.  Its one
failure of that kind, the write lock held by another process past the busy
timeout, has a test of its own on the ``embedded`` backend.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sqlite3
from typing import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
import websockets
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, make_url, select

from chat.errors import NotFound
from chat.hub import CLOSE_INTERNAL_ERROR, CLOSE_TRY_AGAIN, Connection, Hub
from chat.app import App
from chat.storage.db import create_engine
from chat.storage.health import RETRY_AFTER_SECONDS, is_outage
from chat.storage.models import Message
from tests.conftest import (BOTH_PATHS, JEAN, MARIE, NADIA, REDIS_URL, Server, actor_for, child_id, person_by_email,
                            serve_service)
from tests.proxy import TcpProxy

# Generous bounds on waiting for what must happen (a reconnection backs off up
# to 5 s): never a timing assertion.
SLOW = 30.0

try:
    from asyncpg import exceptions as pg
except ImportError:  # pragma: no cover
    pg = None


# -- what counts as an outage ----------------------------------------------------------------------
def _invalidated() -> sa_exc.DBAPIError:
    return sa_exc.DBAPIError("SELECT 1", {}, Exception("connection was closed in the middle of operation"),
                             connection_invalidated=True)


@pytest.mark.parametrize(("error", "outage"), [
    (ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"), True),
    (ConnectionResetError(104, "Connection reset by peer"), True),
    (OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 5432, 0, 0), "
             "[Errno 111] Connect call failed ('127.0.0.1', 5432)"), True),
    (TimeoutError(), True),  # asyncpg's connect timeout
    (_invalidated(), True),
    (sa_exc.TimeoutError("QueuePool limit of size 20 overflow 0 reached, connection timed out, timeout 30.00"), True),
    (sa_exc.OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked")), True),
    (sqlite3.OperationalError("database is locked"), True),
    # Not outages: a bug, a refused statement, a missing file, a domain refusal.
    (sqlite3.OperationalError("no such table: message"), False),
    (sa_exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")), False),
    (FileNotFoundError(2, "No such file or directory"), False),
    (ValueError("invalid literal"), False),
    (KeyError("conversation_id"), False),
    (NotFound("conversation.not_found", conversation_id=1), False),
])
def test_an_outage_is_told_from_other_failures(error, outage):
    assert is_outage(error) is outage


@pytest.mark.skipif(pg is None, reason="asyncpg is not installed")
@pytest.mark.parametrize(("make", "outage"), [
    (lambda: pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"), True),
    (lambda: pg.CannotConnectNowError("the database system is starting up"), True),
    (lambda: pg.AdminShutdownError("terminating connection due to administrator command"), True),
    (lambda: pg.TooManyConnectionsError("sorry, too many clients already"), True),
    (lambda: pg.InterfaceError("cannot call Transaction.__aexit__(): the underlying connection is closed"), True),
    (lambda: pg.InterfaceError("cannot perform operation: another operation is in progress"), False),
    (lambda: pg.DataError("invalid input for query argument $1: 2147483648 (value out of int32 range)"), False),
    (lambda: pg.ProtocolViolationError("bind message supplies 1 parameters"), False),
    (lambda: pg.UniqueViolationError("duplicate key value"), False),
])
def test_asyncpg_errors_are_outages_only_when_the_connection_is_lost(make, outage):
    error = make()
    assert is_outage(error) is outage
    # As SQLAlchemy's asyncpg adapter raises it: its own error, from the driver's.
    wrapper = RuntimeError("adapter")
    wrapper.__cause__ = error
    assert is_outage(sa_exc.DBAPIError("SELECT 1", {}, wrapper)) is outage


# -- the hub alone: a fill that meets an outage ----------------------------------------------------------
class AwayLog:
    """An event log standing in for the database, which can be away."""

    def __init__(self) -> None:
        self.frames: dict[int, str] = {}
        self.away = False
        self.refused = 0
        self.error: Exception = ConnectionRefusedError(111, "Connect call failed")

    async def replay(self, person_id: int, conversation_id: int, after: int, limit: int):
        if self.away:
            self.refused += 1
            raise self.error
        return [(s, f) for s, f in sorted(self.frames.items()) if s > after][:limit]


class FakeHealth:
    """chat.storage.health.DatabaseHealth's answers, with the test saying when the database is back."""

    def __init__(self) -> None:
        self.back = asyncio.Event()
        self.back.set()

    def outage(self, exc: BaseException) -> bool:
        if is_outage(exc):
            self.back.clear()
            return True
        return False

    async def available(self) -> None:
        await self.back.wait()


def recording_connection(person_id: int) -> tuple[Connection, list[str]]:
    sent: list[str] = []

    async def send(frame: str) -> None:
        sent.append(frame)

    async def close(code: int, reason: str) -> None:
        return None

    return Connection(person_id, "fr", send, close, 100), sent


async def wait_for(predicate, timeout: float = SLOW) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


@pytest.fixture
async def away_hub():
    log, health = AwayLog(), FakeHealth()
    hub = Hub("memory://", log.replay, database=health)
    await hub.start()
    yield hub, log, health
    await hub.stop()


async def test_a_gap_fill_that_meets_a_database_outage_goes_on_once_the_database_is_back(away_hub):
    hub, log, health = away_hub
    conn, sent = recording_connection(3)
    await hub.register(conn, [2])
    hub.track(conn, 2, 0)
    for seq in (1, 2, 3):  # committed while the broker was down: never published
        log.frames[seq] = f"lost-{seq}"
    log.away = True
    await hub._resync()  # the broker is back, the database is not
    await wait_for(lambda: log.refused >= 1)
    log.away = False
    health.back.set()
    await wait_for(lambda: len(sent) == 3)
    log.frames[4] = "live-4"
    await hub.publish_event(2, 4, [3], "live-4")
    await wait_for(lambda: len(sent) == 4)
    assert sent == ["lost-1", "lost-2", "lost-3", "live-4"]


async def test_a_gap_fill_that_fails_for_another_reason_closes_the_connection_so_the_client_resumes(away_hub):
    hub, log, health = away_hub
    conn, sent = recording_connection(3)
    await hub.register(conn, [2])
    hub.track(conn, 2, 0)
    log.frames[1] = "lost-1"
    log.away, log.error = True, RuntimeError("not an outage")
    await hub._resync()
    await wait_for(lambda: conn.close_code is not None)
    assert conn.close_code == CLOSE_INTERNAL_ERROR == 1011


async def test_a_resync_whose_refresh_meets_an_outage_refreshes_once_the_database_is_back(away_hub):
    hub, log, health = away_hub
    calls: list[str] = []

    async def refresh() -> None:
        if log.away:
            calls.append("refused")
            raise ConnectionRefusedError(111, "Connect call failed")
        calls.append("done")

    hub._refresh = refresh
    log.away = True
    resync = asyncio.ensure_future(hub._resync())
    await wait_for(lambda: calls == ["refused"])
    log.away = False
    health.back.set()
    await asyncio.wait_for(resync, SLOW)
    assert calls == ["refused", "done"]


# -- a real outage, end to end -------------------------------------------------------------------------
class LogWatch(logging.Handler):
    """Every log record of the test, to wait on and to count."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, text: str) -> list[str]:
        return [r.getMessage() for r in self.records if text in r.getMessage()]

    async def wait_for(self, text: str, timeout: float = SLOW) -> None:
        await wait_for(lambda: self.lines(text), timeout)

    def tracebacks(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.fixture
def logs() -> LogWatch:
    watch = LogWatch()
    chat_log = logging.getLogger("chat")
    level = chat_log.level
    chat_log.setLevel(logging.INFO)
    logging.getLogger().addHandler(watch)
    yield watch
    logging.getLogger().removeHandler(watch)
    chat_log.setLevel(level)


@dataclasses.dataclass
class Outage:
    server: Server  # worker A, the hub under test, behind the proxies
    database: TcpProxy
    broker: TcpProxy
    other: App  # worker B, on PostgreSQL and Redis directly


@pytest.fixture
async def behind_proxies(backend, settings, service) -> AsyncIterator[Outage]:
    if backend != "real":
        pytest.skip("PostgreSQL-only: the outage is a TCP proxy in front of PostgreSQL that the test cuts; "
                    "SQLite has no connection to lose (see the embedded test of its write lock)")

    url = make_url(settings.database_url)
    redis = urlsplit(REDIS_URL)
    database, broker = TcpProxy(url.port or 5432, url.host), TcpProxy(redis.port or 6379, redis.hostname)
    await database.start()
    await broker.start()
    behind = dataclasses.replace(
        settings, database_url=url.set(host="127.0.0.1", port=database.port).render_as_string(hide_password=False),
        redis_url=f"redis://127.0.0.1:{broker.port}{redis.path}")
    engine = create_engine(behind.database_url)
    worker = App(behind, engine)
    await worker.start()
    try:
        async with serve_service(worker) as server:
            yield Outage(server, database, broker, service)
            # A failed test may leave a proxy cut: the worker stops with both back.
            for proxy in (database, broker):
                if proxy.is_cut:
                    await proxy.restore()
    finally:
        await worker.stop()
        await engine.dispose()
        await database.close()
        await broker.close()


async def closed_code(ws) -> int:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), SLOW)
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code


async def stored_sends(service: App, client_id: str) -> int:
    async with service.sessions() as session:
        return (await session.execute(select(func.count()).select_from(Message).where(
            Message.client_id == client_id))).scalar_one()


async def test_a_database_outage_answers_service_unavailable_and_is_logged_once(behind_proxies, logs):
    o = behind_proxies
    marie = await o.server.connect(MARIE)
    nadia = await person_by_email(o.other, NADIA)
    cid = (await marie.request("conversation.create", child_id=await child_id(o.other, "Léa"),
                               participants=[nadia.id]))["conversation"]["id"]
    token = await o.server.token(MARIE)

    await o.database.cut()
    refused = await marie.refused("message.send", conversation_id=cid, client_id="during-the-outage", text="Allô")
    assert refused["code"] == "service.unavailable"
    assert refused["fields"] == {"retry_after": RETRY_AFTER_SECONDS}
    for frame_type, fields in [("conversation.list", {}), ("conversation.history", {"conversation_id": cid}),
                               ("read", {"conversation_id": cid, "seq": 1}), ("typing", {"conversation_id": cid}),
                               ("notification.list", {})]:
        assert (await marie.refused(frame_type, **fields))["code"] == "service.unavailable", frame_type
    assert (await marie.request("ping"))["pong"] is True  # the socket itself is fine

    async with httpx.AsyncClient(base_url=o.server.url) as http:
        for path in ("/api/conversations", f"/api/conversations/{cid}/events", "/api/me", "/healthz"):
            response = await http.get(path, headers={"Authorization": f"Bearer {token}",
                                                     "Accept-Language": "en"})
            assert response.status_code == 503, path
            assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
            assert response.json()["error"] == {
                "code": "service.unavailable", "fields": {"retry_after": RETRY_AFTER_SECONDS},
                "message": f"The service is temporarily unavailable. Retry in {RETRY_AFTER_SECONDS} s."}

    # A device connecting now is told so, and to come back (1013: try again later).
    late = await websockets.connect(o.server.ws_url, additional_headers={"Authorization": f"Bearer {token}"})
    assert json.loads(await asyncio.wait_for(late.recv(), SLOW))["code"] == "service.unavailable"
    assert await closed_code(late) == CLOSE_TRY_AGAIN == 1013

    await o.database.restore()
    await logs.wait_for("database reachable again")
    sent = await marie.request("message.send", conversation_id=cid, client_id="during-the-outage", text="Allô")
    again = await marie.request("message.send", conversation_id=cid, client_id="during-the-outage", text="Allô")
    assert (sent["duplicate"], again["duplicate"]) == (False, True)
    assert again["message_id"] == sent["message_id"]
    assert await stored_sends(o.other, "during-the-outage") == 1

    assert len(logs.lines("database unreachable")) == 1
    assert len(logs.lines("database reachable again")) == 1
    assert logs.tracebacks() == []
    await marie.close()


@BOTH_PATHS
async def test_clients_hear_what_they_missed_when_redis_returns_before_the_database(behind_proxies, logs):
    """Redis comes back while PostgreSQL is still away: the resync waits for the
    database, then every connected client gets what it missed, and lives on."""
    o = behind_proxies
    marie = await actor_for(o.other, MARIE)
    nadia_id, jean_id = (await person_by_email(o.other, NADIA)).id, (await person_by_email(o.other, JEAN)).id
    nadia, jean = await o.server.connect(NADIA), await o.server.connect(JEAN)
    cid = (await o.other.membership.create(marie, [nadia_id], child_id=await child_id(o.other, "Léa")))["id"]
    assert (await nadia.event("conversation.created", timeout=SLOW))["seq"] == 1

    # Synchronisation only: the test restores the database once the hub has met its outage.
    hub = o.server.service.hub
    failures = {"refresh": 0, "replay": 0}

    def counting(name, call):
        async def wrapper(*args):
            try:
                return await call(*args)
            except Exception:
                failures[name] += 1
                raise
        return wrapper

    hub._refresh, hub._replay = counting("refresh", hub._refresh), counting("replay", hub._replay)

    await o.broker.cut()
    await logs.wait_for("redis connection lost")
    for text in ("un", "deux", "trois"):  # seq 2-4, published while worker A hears nothing
        await o.other.sending.send(marie, cid, f"missed-{text}", text)
    await o.other.membership.add(marie, cid, [jean_id], share_history=False)  # seq 5, and Jean's join
    await o.database.cut()
    await o.broker.restore()
    await wait_for(lambda: failures["refresh"] >= 1 and (failures["replay"] or logs.lines("database unreachable")))
    await o.other.sending.send(marie, cid, "while-the-database-is-away", "quatre")  # seq 6, live: a gap
    await o.database.restore()

    assert [(await nadia.event(timeout=SLOW))["seq"] for _ in range(5)] == [2, 3, 4, 5, 6]
    joined = await jean.next("conversation.joined", timeout=SLOW)
    assert joined["conversation"]["id"] == cid
    await o.other.sending.send(marie, cid, "after", "cinq")  # seq 7: both live again
    assert (await nadia.event(timeout=SLOW))["seq"] == 7
    assert (await jean.event(timeout=SLOW))["seq"] == 7

    assert len(logs.lines("database unreachable")) == 1
    assert len(logs.lines("database reachable again")) == 1
    assert logs.tracebacks() == []
    await nadia.close()
    await jean.close()


async def test_a_resume_refused_during_an_outage_works_when_sent_again_on_the_same_socket(behind_proxies, logs):
    o = behind_proxies
    marie = await actor_for(o.other, MARIE)
    nadia_id = (await person_by_email(o.other, NADIA)).id
    cid = (await o.other.membership.create(marie, [nadia_id], child_id=await child_id(o.other, "Léa")))["id"]
    await o.other.sending.send(marie, cid, "before", "avant")  # seq 2
    nadia = await o.server.connect(NADIA, start=False)  # hello: signed in, not started

    await o.database.cut()
    refused = await nadia.refused("resume", positions={str(cid): 1})
    assert refused["code"] == "service.unavailable"
    hub = o.server.service.hub
    (conn,) = hub.by_person[nadia_id]
    assert not any(conn in listeners for listeners in hub.audiences.values())  # nothing half done
    await o.other.sending.send(marie, cid, "during", "pendant")  # seq 3, by the other worker

    await o.database.restore()
    await logs.wait_for("database reachable again")
    answer = await nadia.request("resume", positions={str(cid): 1})
    assert answer["resumed"] == [cid]
    assert [(await nadia.event(timeout=SLOW))["seq"] for _ in range(2)] == [2, 3]
    await o.other.sending.send(marie, cid, "after", "après")
    assert (await nadia.event(timeout=SLOW))["seq"] == 4
    assert logs.tracebacks() == []
    await nadia.close()


# -- on both backends --------------------------------------------------------------------------------
async def test_a_resume_that_fails_after_listening_to_announcements_leaves_nothing_behind(server, logs, monkeypatch):
    """The start's one change before its reads (the announcement channels, so that
    none slips between the replay and live ones) is undone when a read fails."""
    nadia = await server.connect(NADIA, start=False)
    nadia_id = nadia.hello["person"]["id"]
    hub = server.service.hub
    positions = server.service.reading.positions
    failures = []

    async def refused_once(person_id: int) -> dict[int, int]:
        if not failures:
            failures.append(person_id)
            raise ConnectionRefusedError(111, "Connect call failed")
        return await positions(person_id)

    monkeypatch.setattr(server.service.reading, "positions", refused_once)
    assert (await nadia.refused("resume", positions={}))["code"] == "service.unavailable"
    (conn,) = hub.by_person[nadia_id]
    assert not any(conn in listeners for listeners in hub.audiences.values())
    assert (await nadia.request("resume", positions={}))["type"] == "ok"
    assert any(conn in listeners for listeners in hub.audiences.values())
    assert logs.tracebacks() == []
    await nadia.close()


async def test_sqlite_locked_past_its_busy_timeout_answers_service_unavailable(backend, server, logs):
    """SQLite's outage: another process held the write lock past the busy timeout.
    Nothing was written; the same send works once the lock is released."""
    if backend != "embedded":
        pytest.skip("SQLite only")
    marie = await server.connect(MARIE)
    nadia = await person_by_email(server.service, NADIA)
    cid = (await marie.request("conversation.create", child_id=await child_id(server.service, "Léa"),
                               participants=[nadia.id]))["conversation"]["id"]
    # A short busy timeout on the hub's one connection, so that the test does not wait 10 s.
    async with server.service.engine.connect() as connection:
        await connection.exec_driver_sql("PRAGMA busy_timeout=100")
        await connection.commit()
    other = sqlite3.connect(make_url(server.settings.database_url).database, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process writing (a directory load)
        refused = await marie.refused("message.send", conversation_id=cid, client_id="locked", text="Allô")
        assert refused["code"] == "service.unavailable"
        other.execute("ROLLBACK")
    finally:
        other.close()
    await logs.wait_for("database reachable again")
    sent = await marie.request("message.send", conversation_id=cid, client_id="locked", text="Allô")
    assert sent["duplicate"] is False
    assert await stored_sends(server.service, "locked") == 1
    assert len(logs.lines("database unreachable")) == 1
    assert logs.tracebacks() == []
    await marie.close()


async def test_a_collective_send_stopped_by_an_outage_leaves_one_line_and_no_traceback(service, logs, monkeypatch):
    """A job that meets the outage stops (it stays running in the database and is
    taken up again by the next look-up); the log has the outage's line only."""

    async def refused(send_id: int, stop_after: int | None = None) -> None:
        raise ConnectionRefusedError(111, "Connect call failed")

    monkeypatch.setattr(service.collective, "run", refused)
    service.collective._spawn(1)
    await logs.wait_for("database unreachable")
    await logs.wait_for("database reachable again")
    assert logs.tracebacks() == []
