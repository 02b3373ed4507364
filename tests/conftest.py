"""Fixtures by layer (STYLE.md): pure policies need none; storage and service
tests get a migrated database with the demo directory; end-to-end tests get a
real uvicorn server on port 0 and real WebSocket clients.

Every fixture that touches storage or fan-out is parametrised by ``backend``:

* ``embedded`` — SQLite file + in-process broker (the defaults);
* ``real``     — PostgreSQL + Redis pub/sub (the production pair).

``CHAT_TEST_BACKENDS=embedded`` limits a local run to one of them; CI runs both
(``.ci/run`` starts PostgreSQL and Redis when they are not running).

Migrations run once per session, not once per test: a *template* (an SQLite
file, a PostgreSQL database) is migrated and given the demo directory once,
and each test gets a copy of it (a file copy; ``CREATE DATABASE … TEMPLATE``).
docs/testing.md says more.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import socket
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest
import uvicorn
from sqlalchemy import select, text

from chat import auth, demo, directory
from chat.config import Settings
from chat.app import App
from chat.people import Actor
from chat.storage.db import create_engine, upgrade
from chat.storage.models import Person, SQLModel
from chat.web import create_app
from tests.client import BARRIER, WSClient

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_HOST_URL = PG_ADMIN_URL.rsplit("/", 1)[0]
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKENDS = [b for b in os.environ.get("CHAT_TEST_BACKENDS", "embedded,real").split(",") if b]
SECRET = "test-secret-" + "x" * 40


@pytest.fixture(scope="session")
def pg_database() -> str:
    """A fresh PostgreSQL database for this test session, migrated once."""
    import asyncpg

    name = f"chat_test_{os.getpid()}"

    async def create() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        engine = create_engine(f"postgresql+asyncpg://{PG_HOST_URL.split('://', 1)[1]}/{name}")
        await upgrade(engine)
        await engine.dispose()

    async def drop() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    yield f"postgresql+asyncpg://{PG_HOST_URL.split('://', 1)[1]}/{name}"
    asyncio.run(drop())


def _pg_url(name: str) -> str:
    return f"postgresql+asyncpg://{PG_HOST_URL.split('://', 1)[1]}/{name}"


async def _fill_template(url: str) -> None:
    """Migrate the database at ``url`` and load the demo directory into it, then
    let it go (a PostgreSQL template must have no connection when it is copied)."""
    engine = create_engine(url)
    try:
        await upgrade(engine)
        await directory.load(engine, directory.validate(demo.build()))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """An SQLite file migrated and loaded with the demo directory, once per session."""
    path = tmp_path_factory.mktemp("template") / "chat.db"
    asyncio.run(_fill_template(f"sqlite+aiosqlite:///{path}"))
    with contextlib.closing(sqlite3.connect(path)) as conn:  # all of it into the main file: the copy is that file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


async def _pg_admin(*statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_template() -> str:
    """The name of a PostgreSQL database migrated and loaded with the demo directory,
    once per session; each test's database is created from it."""
    name = f"chat_test_{os.getpid()}_template"
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"'))
    asyncio.run(_fill_template(_pg_url(name)))
    yield name
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


_test_databases = itertools.count()


@pytest.fixture
def pg_test_database(pg_template: str) -> str:
    """A PostgreSQL database of this test's own, a copy of the template (dropped after it)."""
    name = f"chat_test_{os.getpid()}_{next(_test_databases)}"
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}"',
                          f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    yield _pg_url(name)
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


# Runs a server test on both ways frames reach the socket: uvicorn's fast path
# ("auto") and the public ASGI send ("off"), see chat/hub/fastpath.py.
BOTH_PATHS = pytest.mark.parametrize("settings", ["auto", "off"], indirect=True)


@pytest.fixture
def settings(backend: str, tmp_path: Path, request) -> Settings:
    """The test's settings.  On ``real`` its database exists already, a copy of the
    template; on ``embedded`` the file appears when ``engine`` copies it (or when
    the test creates it).  ``request.param`` (indirect parametrization): HUB_FAST_PATH,
    "auto" otherwise."""
    common = dict(secret_key=SECRET, attachments_dir=tmp_path / "attachments", allowed_origins=("http://school.test",),
                  hub_fast_path=getattr(request, "param", "auto"))
    if backend == "embedded":
        return Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}", redis_url="", **common)
    database = request.getfixturevalue("pg_test_database")
    return Settings(database_url=database, redis_url=REDIS_URL, redis_prefix=f"test-{uuid.uuid4().hex[:12]}", **common)


async def _reset(engine, backend: str) -> None:
    """Empty a database that tests share (a module's, a session's) and bring it to the last migration."""
    if backend == "embedded":
        await upgrade(engine)
        return
    tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def demo_database(settings: Settings, backend: str, request) -> str:
    """The URL of the test's database, migrated and holding the demo directory: a copy
    of the session's template (on ``real``, ``settings`` made it already).  A plain
    fixture: the templates are built on event loops of their own."""
    if backend == "embedded":
        shutil.copyfile(request.getfixturevalue("sqlite_template"), settings.database_url.split(":///", 1)[1])
    return settings.database_url


@pytest.fixture
async def engine(demo_database: str):
    engine = create_engine(demo_database)
    yield engine
    await engine.dispose()


@pytest.fixture
async def service(settings: Settings, engine) -> AsyncIterator[App]:
    service = App(settings, engine)
    await service.start()
    yield service
    await service.stop()


@dataclass
class Server:
    url: str
    ws_url: str
    service: App
    settings: Settings

    async def token(self, email: str) -> str:
        """An access token in a new session of this person (R21), as the demo's picker makes one."""
        person = await person_by_email(self.service, email)
        return (await self.service.accounts.open_session(person.id, "test"))["access_token"]

    async def connect(self, email: str, resume: dict[int, int] | None = None, start: bool = True) -> WSClient:
        """A signed-in WebSocket client that has said `resume` (live from now by default)."""
        client = await WSClient.open(self.ws_url, await self.token(email))
        client.barrier = broker_barrier(self.service, client.hello["person"]["id"])
        if start:
            await client.start(resume or {})
        return client


def broker_barrier(service: App, person_id: int) -> Callable[[str], Awaitable[None]]:
    """What :meth:`WSClient.drain` calls to put a marker behind everything already
    published for ``person_id``: a frame on the person's channel, published
    through ``service``'s broker (Redis reaches every worker sharing it)."""

    async def publish(token: str) -> None:
        await service.hub.publish_person(person_id, "frame", json.dumps({"type": BARRIER, "token": token}))

    return publish


async def person_by_email(service: App, email: str) -> Person:
    async with service.sessions() as session:
        return (await session.execute(select(Person).where(Person.email == email))).scalar_one()


async def actor_for(service: App, email: str) -> Actor:
    person = await person_by_email(service, email)
    return Actor(person.id, person.role, person.name, person.language)


def free_socket() -> socket.socket:
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY on accepted connections only
    # when the listening socket says it is TCP; without it every HTTP answer
    # waited ~45 ms on a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    return sock


@contextlib.asynccontextmanager
async def serve_service(service: App) -> AsyncIterator[Server]:
    """A real uvicorn server on a port the OS picked, serving ``service`` until the block ends."""
    settings = service.settings
    config = uvicorn.Config(
        create_app(settings, service=service), log_level="warning", ws_max_size=settings.hard_frame_bytes,
        ws_per_message_deflate=False, lifespan="on", timeout_graceful_shutdown=2,
    )
    srv = uvicorn.Server(config)
    sock = free_socket()
    port = sock.getsockname()[1]
    task = asyncio.create_task(srv.serve(sockets=[sock]))
    while not srv.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield Server(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws", service, settings)
    finally:
        srv.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def server(service: App) -> AsyncIterator[Server]:
    """A real uvicorn server on a port the OS picked, serving the test's service."""
    async with serve_service(service) as running:
        yield running


# The demo people the tests use most (see chat/demo.py).
MARIE = "marie.tremblay@parent.test"      # guardian of Léa (ERA-301) and Noah (FLE-101)
JEAN = "jean.tremblay@parent.test"        # Léa's other guardian, separated (language en)
NADIA = "nadia.chabot@erables.test"       # teacher of ERA-301 (Léa's group)
PAUL = "paul.girard@erables.test"         # teacher of ERA-201 (not Léa's group)
DIRECTION = "direction@erables.test"      # direction of Érables
SECRETARIAT = "secretariat@erables.test"  # staff of Érables
DIRECTION_FLEUVE = "direction@fleuve.test"
TRANSPORT = "transport@autobus.test"


async def child_id(service: App, first_name: str) -> int:
    from chat.storage.models import Student

    async with service.sessions() as session:
        return (await session.execute(select(Student.id).where(Student.first_name == first_name,
                                                               Student.last_name == "Tremblay"))).scalar_one()


async def other_parent_email(service: App) -> str:
    """A guardian with no link to the Tremblay children."""
    async with service.sessions() as session:
        return (await session.execute(select(Person.email).where(
            Person.role == "parent", Person.email.not_like("%tremblay%")).order_by(Person.id))).scalars().first()
