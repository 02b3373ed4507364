"""Property-based fuzzing of every client frame type and every HTTP route that
takes an id (issue 17), on both backends.

Hypothesis builds frames from the right field names with arbitrary JSON
values (integers at and around every width boundary, floats, booleans, null,
strings with NUL, C0 controls, bidirectional controls and any other non-surrogate
code point, long strings, nested arrays and objects), plausible values taken
from a real scene (real conversation, message, person, child ids…), missing
fields and extra fields.  Whatever comes, the contract of docs/protocol.md holds:

* the answer is a success or an error whose code is documented in section 10,
  never ``internal.error`` (over HTTP: the documented status, never a 500);
* the connection stays usable: a ``ping`` (HTTP: ``GET /api/me``) answers after
  every case;
* the server's log takes no traceback and no ERROR record.

How it runs.  A server costs about half a second to build, and every frame type
needs a hundred cases, so one server per backend serves the whole module (a
module-scoped fixture) and each test builds its own scene in it.  Hypothesis'
engine runs in a worker thread: each example hands its coroutine to the
server's event loop and waits for it (``run_coroutine_threadsafe``), so the
examples share the server on purpose and no function-scoped fixture is reused
behind hypothesis' back.  A fixed seed per test and backend, and no example
database, make every run try the same cases; the two backends get different
ones, so each frame type and route meets twice ``EXAMPLES`` cases in all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import traceback
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio
import websockets
from websockets.protocol import State
from hypothesis import HealthCheck, given, seed, settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import select

from chat import demo, directory
from chat.config import Settings
from chat.app import App
from chat.storage.db import create_engine
from chat.storage.models import Group, Notification, Organisation, School, Student
from chat.web import HANDLERS, create_app
from tests import files
from tests.client import WSClient
from tests.conftest import (
    BACKENDS, DIRECTION, JEAN, MARIE, NADIA, PAUL, REDIS_URL, SECRET, SECRETARIAT, Server, _reset,
    person_by_email, serve_service,
)

# The async tests run on the module's event loop, where the shared server lives.
on_the_server_loop = pytest.mark.asyncio(loop_scope="module")
pytestmark = [
    # The server runs in this process while hypothesis draws in another thread:
    # its own use of `random` (jitter, ids) lands inside a draw now and then.
    pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies"),
    # A falsifying example may hold a 70,000-character string.
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = 60  # per frame type and route, per backend: about a second of CPU each
WAIT = 15.0  # seconds: a bound on waiting for an answer (never a timing assertion)


# -- the contract: docs/protocol.md section 10 ---------------------------------------------------
def documented_errors() -> dict[str, set[int]]:
    """Every code of the section 10 table with the HTTP statuses it may have
    (empty for WebSocket-only codes); codes never sent on their own are left out."""
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    table = text.split("## 10. Error codes", 1)[1].split("\n## 11.", 1)[0]
    codes: dict[str, set[int]] = {}
    for code, status in re.findall(r"^\| `([a-z0-9_.]+)` \| ([^|]+) \|", table, flags=re.MULTILINE):
        status = status.strip()
        if status in ("—", "CLI"):
            continue
        codes[code] = {int(s) for s in re.findall(r"\d{3}", status)}
    return codes


DOCUMENTED = documented_errors()
# The only code a client can never act on: the contract says it means "unexpected".
FORBIDDEN_CODES = {"internal.error"}


def frame_types_in_the_doc() -> set[str]:
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    section = text.split("## 5. Client → server frames", 1)[1]
    table = section[section.index("| `type` |") + 1:].split("\n\n", 1)[0]  # the first table, below its header
    return set(re.findall(r"^\| `([a-z_.]+)` \|", table, flags=re.MULTILINE))


# -- the log: no traceback, no ERROR ----------------------------------------------------------------
class Records(logging.Handler):
    """Keeps every WARNING-or-above record and every record carrying a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING or record.exc_info:
            self.records.append(record)

    def bad_since(self, start: int) -> list[str]:
        """ERROR records and tracebacks logged since ``start``, each with the
        last line of its traceback (what a log reader would see first)."""
        found = []
        for record in self.records[start:]:
            if record.levelno < logging.ERROR and not record.exc_info:
                continue
            line = f"{record.levelname} {record.name}: {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                last = traceback.format_exception_only(record.exc_info[1])[-1].strip()
                line += " | " + last.splitlines()[0]  # SQLAlchemy adds the statement on further lines
            found.append(_short_text(line))
        return found


def _short_text(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


# -- one server per backend for the module -----------------------------------------------------------
@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_backend(request) -> str:
    return request.param


@dataclass
class Hub:
    backend: str
    server: Server
    records: Records
    integration_key: str


@pytest.fixture(scope="module")
def fuzz_settings(fuzz_backend: str, tmp_path_factory, request) -> Settings:
    """As ``tests.conftest.settings``, with the rate limits raised: the fuzz sends
    hundreds of frames a second, and a ``rate_limited`` answer would test nothing.
    (A plain fixture: ``pg_database`` runs its own event loop.)"""
    tmp = tmp_path_factory.mktemp(f"fuzz-{fuzz_backend}")
    common = dict(secret_key=SECRET, attachments_dir=tmp / "attachments", allowed_origins=("http://school.test",),
                  rate_per_second=100_000.0, rate_burst=100_000.0, typing_per_second=100_000.0, demo=True)
    if fuzz_backend == "embedded":
        return Settings(database_url=f"sqlite+aiosqlite:///{tmp / 'chat.db'}", redis_url="", **common)
    return Settings(database_url=request.getfixturevalue("pg_database"), redis_url=REDIS_URL,
                    redis_prefix=f"test-{uuid.uuid4().hex[:12]}", **common)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(fuzz_backend: str, fuzz_settings: Settings):
    """A real server (as ``tests.conftest.server``), shared by the module's tests."""
    settings = fuzz_settings
    engine = create_engine(settings.database_url)
    await _reset(engine, fuzz_backend)
    await directory.load(engine, directory.validate(demo.build()))
    service = App(settings, engine)
    await service.start()
    # After the start: uvicorn's logging configuration replaces the handlers of "uvicorn".
    records = Records()
    watched = [logging.getLogger(), logging.getLogger("uvicorn")]
    _, key = await service.announcements.create_key("ERABLES", "Fuzz", ["transport", "observation", "absence"])
    try:
        async with serve_service(service) as server:
            for logger in watched:
                logger.addHandler(records)
            yield Hub(fuzz_backend, server, records, key)
    finally:
        for logger in watched:
            logger.removeHandler(records)
        await service.stop()
        await engine.dispose()


# -- the scene each test starts from -----------------------------------------------------------------
@dataclass
class Scene:
    people: dict[str, int]
    conversations: list[int]
    messages: list[int]
    last_seq: int
    children: list[int]
    groups: list[int]
    schools: list[int]
    organisations: list[int]
    announcements: list[int]
    notifications: list[int]
    sends: list[int]
    uploads: list[str]
    fiches: list[str]
    sessions: list[str]  # a spare session of each speaker, not the one its token is in (R21)
    tokens: list[str]  # an access token in each of those spare sessions


async def build_scene(server: Server) -> Scene:
    """Marie, Jean and Nadia talk about Léa; Nadia and the direction talk alone; a
    staff group; an announcement, a collective send, an upload, notifications."""
    people = {email: (await person_by_email(server.service, email)).id
              for email in (MARIE, JEAN, NADIA, PAUL, DIRECTION, SECRETARIAT)}
    async with server.service.sessions() as session:
        # Léa (Marie's, Jean's, in Nadia's group), Noah (Marie's, at Fleuve), a child of nobody here.
        children = list((await session.execute(select(Student.id).where(Student.last_name == "Tremblay")
                                               .order_by(Student.first_name))).scalars())
        children.append((await session.execute(select(Student.id).where(Student.last_name != "Tremblay")
                                               .order_by(Student.id))).scalars().first())
        fiches = list((await session.execute(select(Student.fiche).order_by(Student.id).limit(3))).scalars())
        groups = list((await session.execute(select(Group.id).order_by(Group.code == "ERA-301", Group.id))).scalars())
        schools = list((await session.execute(select(School.id).order_by(School.id))).scalars())
        organisations = list((await session.execute(select(Organisation.id))).scalars())
    lea = children[0]
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        mine = (await marie.request("conversation.create", child_id=lea,
                                    participants=[people[NADIA], people[JEAN]]))["conversation"]["id"]
        own = await marie.request("message.send", conversation_id=mine, client_id=uuid.uuid4().hex, text="Bonjour")
        theirs_message = await nadia.request("message.send", conversation_id=mine, client_id=uuid.uuid4().hex,
                                             text="Bonjour Marie")
        theirs = (await nadia.request("conversation.create", participants=[people[DIRECTION]]))["conversation"]["id"]
        team = (await nadia.request("conversation.create", name="Équipe",
                                    participants=[people[PAUL], people[SECRETARIAT]]))["conversation"]["id"]
        group = groups[-1]  # ERA-301, Nadia's
        announcement = (await nadia.request("announcement.post", audience={"groups": [group]},
                                            text="Sortie vendredi"))["announcement"]["id"]
        send = (await nadia.request("collective.send", client_id=uuid.uuid4().hex, text="Réunion jeudi",
                                    students=[lea]))["send"]["id"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        uploaded = await http.post("/api/uploads", params={"name": "photo.png"}, content=files.png_with_text(),
                                   headers={"Authorization": f"Bearer {await server.token(MARIE)}"})
        uploads = [uploaded.json()["upload"]["id"]]
    spare = [await server.service.accounts.open_session(people[email], "spare") for email in SPEAKERS]
    async with server.service.sessions() as session:
        notifications = list((await session.execute(select(Notification.id).where(
            Notification.person_id == people[MARIE]).order_by(Notification.id))).scalars())
    return Scene(people=people, conversations=[mine, theirs, team], messages=[own["message_id"],
                 theirs_message["message_id"]], last_seq=theirs_message["seq"],
                 children=children, groups=groups, schools=schools,
                 organisations=organisations, announcements=[announcement], notifications=notifications or [1],
                 sends=[send], uploads=uploads, fiches=fiches,
                 sessions=[opened["session_id"] for opened in spare],
                 tokens=[opened["access_token"] for opened in spare])


# -- values -----------------------------------------------------------------------------------------
BOUNDARY_INTS = (
    0, 1, -1, 2**15, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**32, 2**53, 2**53 + 1, 2**62, 2**63 - 1, 2**63,
    -(2**63) + 1, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, -(2**64), 10**30,
)
# Code points that break storage, terminals, logs or display: NUL, the other C0
# controls, DEL, C1, zero-width and bidirectional controls, BOM, non-characters.
SPECIAL_CHARS = ("\x00\x01\x07\x08\x0b\x0c\x0e\x1b\x1f\x7f\x80\x85\x9f\u200b\u200c\u200d\u200e\u200f"
                 "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff\ufffe\uffff\U0010ffff"
                 "\t\n\r é€🙂")
chars = st.one_of(st.sampled_from(SPECIAL_CHARS), st.characters(exclude_categories=("Cs",)))
# Long strings: at and over the limits (names 100, lock reasons 500, texts 4,000
# characters, frames 64 KiB); kept for the text fields, the rest gets short ones.
long_strings = st.builds(lambda c, n: c * n, st.sampled_from(["a", "é", "🙂", "\x00", "\u202e", "9", " "]),
                         st.sampled_from([64, 101, 501, 4000, 4001, 16 * 1024, 70 * 1024]))
strings = st.one_of(st.text(chars, max_size=20), st.sampled_from(["", "9" * 30, "a" * 101, "\x00" * 65]))
ints = st.one_of(st.sampled_from(BOUNDARY_INTS), st.integers())
floats = st.one_of(st.sampled_from([0.0, -0.0, 0.5, 1.0, 2.0**31, 2.0**63, 1e308, -1e308, 5e-324]),
                   st.floats(allow_nan=False, allow_infinity=False))
scalars = st.one_of(st.none(), st.booleans(), ints, floats, strings)
# Nested arrays and objects; small, because generating deep values is what costs most here.
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(chars, max_size=8), inner, max_size=4)), max_leaves=6)

class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()  # a field left out of the frame


def ids(values: list[int]) -> st.SearchStrategy[int]:
    """A real id of the scene or an integer at a width boundary."""
    return st.one_of(st.sampled_from(values), st.sampled_from(BOUNDARY_INTS))


def plausible(kind: str, scene: Scene) -> st.SearchStrategy[Any]:
    """Values of the right shape for a field: real ids of the scene, ids at every
    width boundary, texts with every kind of control character."""
    people = list(scene.people.values())
    short = st.text(chars, min_size=1, max_size=30)
    texts = st.one_of(short, short, short, long_strings)  # one in four long
    return {
        "conversation": ids(scene.conversations),
        "message": ids(scene.messages),
        "person": ids(people),
        "people": st.lists(ids(people), max_size=4),
        "child": ids(scene.children),
        "students": st.lists(ids(scene.children), max_size=3),
        "groups": st.lists(ids(scene.groups), max_size=3),
        "announcement": ids(scene.announcements),
        "notification": ids(scene.notifications),
        "send": ids(scene.sends),
        "seq": st.one_of(st.integers(-1, scene.last_seq + 2), st.sampled_from(BOUNDARY_INTS)),
        "limit": st.one_of(st.integers(-1, 250), st.sampled_from(BOUNDARY_INTS)),
        "bool": st.booleans(),
        "text": texts,
        "client_id": st.one_of(st.uuids().map(str), texts),
        "emoji": st.one_of(st.sampled_from(["👍", "❤️", "🙂", "👍🏽", "👨‍👩‍👧", "🇨🇦"]), texts),
        "attachments": st.lists(st.one_of(st.sampled_from(scene.uploads), texts), max_size=12),
        "audience": st.one_of(
            st.fixed_dictionaries({"groups": st.lists(ids(scene.groups), max_size=3)}),
            st.fixed_dictionaries({"school": ids(scene.schools)}),
            st.fixed_dictionaries({"organisation": ids(scene.organisations)}),
            st.dictionaries(st.sampled_from(["groups", "school", "organisation"]), json_values, max_size=3)),
        "kind": st.one_of(st.sampled_from(["message", "added", "announcement", "reaction", "transport",
                                           "observation", "absence"]), texts),
        "positions": st.dictionaries(
            st.one_of(ids(scene.conversations).map(str), st.text(chars, max_size=25)),
            st.one_of(st.integers(0, scene.last_seq + 2), st.sampled_from(BOUNDARY_INTS), json_values), max_size=5),
        "fiches": st.lists(st.one_of(st.sampled_from(scene.fiches), texts), max_size=3),
        "date": st.one_of(st.sampled_from(["2026-11-26", "2026-11-26T08:00:00-05:00", "2026-11-26T13:00:00Z",
                                           "0001-01-01", "9999-12-31T23:59:59", "0001-01-01T00:00:00+14:00",
                                           "9999-12-31T23:59:59-14:00", "2026-02-30"]), texts),
        "format": st.one_of(st.sampled_from(["json", "html"]), texts),
        "session": st.one_of(st.sampled_from(scene.sessions), texts),
        "token": st.one_of(st.sampled_from(scene.tokens), texts),
        "language": st.one_of(st.sampled_from(["fr", "en", "EN", "en-CA", "de", ""]), texts),
        "any": json_values,
    }[kind]


def field_value(kind: str, scene: Scene) -> st.SearchStrategy[Any]:
    """Mostly a plausible value (so that the other fields reach storage), else any
    JSON value, else left out.  Shrinks towards the plausible."""
    right = plausible(kind, scene)
    return st.one_of(right, right, right, json_values, st.just(MISSING))


def fields_object(spec: dict[str, str], scene: Scene) -> st.SearchStrategy[dict[str, Any]]:
    """The spec's fields (each plausible, arbitrary or missing) plus a few extra ones."""
    extra_names = st.text(chars, max_size=12).filter(lambda k: k not in spec and k not in ("type", "id"))
    return st.builds(
        lambda known, extra: {**extra, **{k: v for k, v in known.items() if v is not MISSING}},
        st.fixed_dictionaries({name: field_value(kind, scene) for name, kind in spec.items()}),
        st.one_of(st.just({}), st.just({}), st.dictionaries(extra_names, json_values, min_size=1, max_size=2)),
    )


# -- every client frame type (docs/protocol.md section 5; chat.web.HANDLERS) -------------------------
FRAMES: dict[str, dict[str, str]] = {
    "resume": {"positions": "positions", "announcements_after": "announcement"},
    "conversation.create": {"participants": "people", "child_id": "child", "name": "text"},
    "conversation.rename": {"conversation_id": "conversation", "name": "text"},
    "conversation.add": {"conversation_id": "conversation", "participants": "people", "share_history": "bool"},
    "conversation.remove": {"conversation_id": "conversation", "person_id": "person"},
    "conversation.leave": {"conversation_id": "conversation"},
    "conversation.list": {},
    "conversation.lock": {"conversation_id": "conversation", "reason": "text"},
    "conversation.unlock": {"conversation_id": "conversation"},
    "conversation.history": {"conversation_id": "conversation", "after": "seq", "before": "seq", "limit": "limit"},
    "message.send": {"conversation_id": "conversation", "client_id": "client_id", "text": "text",
                     "attachments": "attachments"},
    "message.edit": {"message_id": "message", "text": "text"},
    "message.retract": {"message_id": "message"},
    "reaction.add": {"message_id": "message", "emoji": "emoji"},
    "reaction.remove": {"message_id": "message", "emoji": "emoji"},
    "read": {"conversation_id": "conversation", "seq": "seq"},
    "typing": {"conversation_id": "conversation"},
    "announcement.post": {"audience": "audience", "text": "text", "urgent": "bool"},
    "announcement.list": {"before": "announcement", "after": "announcement", "limit": "limit"},
    "announcement.read": {"announcement_id": "announcement"},
    "announcement.react": {"announcement_id": "announcement", "emoji": "emoji"},
    "announcement.unreact": {"announcement_id": "announcement", "emoji": "emoji"},
    "announcement.reply": {"announcement_id": "announcement", "text": "text"},
    "collective.send": {"client_id": "client_id", "text": "text", "students": "students", "groups": "groups"},
    "collective.status": {"send_id": "send"},
    "notification.list": {"child_id": "child", "before": "notification", "limit": "limit"},
    "notification.open": {"notification_id": "notification"},
    "notification.read_all": {"child_id": "child"},
    "preferences.get": {},
    "preferences.set": {"child_id": "child", "kind": "kind", "enabled": "bool"},
    "ping": {},
    "signout": {},
    "token.renew": {"token": "token"},
    "language.set": {"language": "language"},
}
# Who speaks: a parent, a teacher and the direction reach different rules.
SPEAKERS = (MARIE, NADIA, DIRECTION)
PING_ID = "ping-after-the-case"
AUTO_ID = "the-case"


def frame_strategy(frame_type: str, scene: Scene) -> st.SearchStrategy[dict[str, Any]]:
    auto = st.just(AUTO_ID)
    request_ids = st.one_of(auto, auto, auto, st.just(MISSING), json_values)
    return st.builds(
        lambda fields, request_id: {"type": frame_type, **fields,
                                    **({} if request_id is MISSING else {"id": request_id})},
        fields_object(FRAMES[frame_type], scene), request_ids)


@dataclass
class Outcome:
    problems: list[str] = field(default_factory=list)

    def check(self, condition: bool, problem: str) -> None:
        if not condition:
            self.problems.append(problem)


def _short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def check_ws_answer(outcome: Outcome, frame: dict[str, Any], answer: dict[str, Any]) -> None:
    if answer["type"] == "ok":
        return
    code = answer.get("code")
    outcome.check(code not in FORBIDDEN_CODES and code in DOCUMENTED,
                  f"answered {code!r}, not a documented refusal: {_short(answer)}")
    if answer.get("id") is not None:
        outcome.check(answer["id"] == frame.get("id"), f"answered another id: {_short(answer)}")


class Speakers:
    """One started connection per speaker for a test, opened again if a case closed it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.open: dict[str, WSClient] = {}

    async def get(self, email: str) -> WSClient:
        client = self.open.get(email)
        if client is None or client.ws.state is not State.OPEN:
            client = self.open[email] = await self.server.connect(email)
        return client

    async def close(self) -> None:
        for client in self.open.values():
            await client.close()


async def answers_until_ping(client: WSClient, ping_id: str) -> list[dict[str, Any]]:
    """The ``ok`` and ``error`` frames that arrive before the ping's answer (events are skipped)."""
    await client.send_raw(json.dumps({"type": "ping", "id": ping_id}))
    answers = []
    while True:
        frame = await client._receive(WAIT)
        if frame.get("type") not in ("ok", "error"):
            continue
        if frame.get("id") == ping_id:
            if frame["type"] != "ok" or frame.get("pong") is not True:
                answers.append(frame)  # the ping itself was refused: one answer too many
            return answers
        answers.append(frame)


async def run_frame(hub: Hub, speakers: Speakers, speaker: str, frame: dict[str, Any]) -> list[str]:
    """Send one case on the speaker's connection (a fresh one for ``resume``),
    then a ping; the problems seen, if any."""
    outcome = Outcome()
    start = len(hub.records.records)
    fresh = frame["type"] == "resume"
    client = await WSClient.open(hub.server.ws_url, await hub.server.token(speaker)) if fresh \
        else await speakers.get(speaker)
    ping_id = PING_ID if frame.get("id") != PING_ID else PING_ID + "-2"
    try:
        await client.send_raw(json.dumps(frame, ensure_ascii=False))
        answers = await answers_until_ping(client, ping_id)
    except (websockets.ConnectionClosed, asyncio.TimeoutError) as exc:
        outcome.problems.append(f"the connection did not answer a ping after the case: {exc!r}")
        answers = []
    finally:
        if fresh:
            await client.close()
    silent_ok = frame["type"] == "typing" and frame.get("id") is None
    outcome.check(len(answers) == 1 or (silent_ok and not answers),
                  f"{len(answers)} answers where one was due: {_short(answers)}")
    for answer in answers:
        check_ws_answer(outcome, frame, answer)
    for line in hub.records.bad_since(start):
        outcome.problems.append(f"logged: {line}")
    return outcome.problems


def explore(loop: asyncio.AbstractEventLoop, name: str, strategy: st.SearchStrategy[Any],
            case: Callable[[Any], Awaitable[list[str]]], examples: int = EXAMPLES) -> None:
    """Hypothesis' loop, in a worker thread: each example runs on the server's loop."""

    @seed(zlib.crc32(name.encode()))
    # too_slow measures drawing time, which a busy machine stretches: not a failure of the hub.
    @hypothesis_settings(max_examples=examples, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow])
    @given(strategy)
    def one_case(value: Any) -> None:
        problems = asyncio.run_coroutine_threadsafe(case(value), loop).result(timeout=120)
        assert not problems, "\n".join(problems)

    one_case()


async def fuzz(name: str, strategy: st.SearchStrategy[Any], case: Callable[[Any], Awaitable[list[str]]]) -> None:
    await asyncio.to_thread(explore, asyncio.get_running_loop(), name, strategy, case)


# -- the tests: frames --------------------------------------------------------------------------------
def test_every_client_frame_type_is_fuzzed():
    # These three are read by the session itself: they start it or change it.
    assert set(FRAMES) == set(HANDLERS) | {"resume", "token.renew", "language.set"}
    assert set(FRAMES) == frame_types_in_the_doc()


@on_the_server_loop
@pytest.mark.parametrize("frame_type", [t for t in FRAMES if t != "signout"])
async def test_any_json_in_a_frame_answers_a_documented_code_and_logs_no_traceback(hub, frame_type):
    scene = await build_scene(hub.server)
    speakers = Speakers(hub.server)
    try:
        cases = st.tuples(st.sampled_from(SPEAKERS), frame_strategy(frame_type, scene))
        await fuzz(f"{hub.backend} {frame_type}", cases, lambda drawn: run_frame(hub, speakers, *drawn))
    finally:
        await speakers.close()


async def run_signout(hub: Hub, frame: dict[str, Any]) -> list[str]:
    """``signout`` ends the session: either a documented refusal and a usable
    connection, or ``signed_out`` and close 4401 (the ``ok`` and the ping's
    answer race with that close), after which a new token works."""
    outcome = Outcome()
    start = len(hub.records.records)
    client = await hub.server.connect(SECRETARIAT)
    received: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []
    close_code: int | None = None
    try:
        await client.send_raw(json.dumps(frame, ensure_ascii=False))
        await client.send_raw(json.dumps({"type": "ping", "id": PING_ID}))
        while True:
            received.append(await client._receive(WAIT))
            if received[-1].get("id") == PING_ID and received[-1].get("type") == "ok":
                if any(answer["type"] == "error" for answer in answers):
                    break  # refused, and the connection still answers
            elif received[-1].get("type") in ("ok", "error"):
                answers.append(received[-1])
    except websockets.ConnectionClosed as closed:
        close_code = closed.rcvd.code if closed.rcvd is not None else None
    except asyncio.TimeoutError:
        outcome.problems.append(f"neither refused nor closed: {_short(received)}")
    finally:
        await client.close()
    outcome.check(len(answers) <= 1, f"{len(answers)} answers where one was due: {_short(answers)}")
    for answer in answers:
        check_ws_answer(outcome, frame, answer)
    if any(answer["type"] == "error" for answer in answers):
        outcome.check(close_code is None, f"refused, yet closed with {close_code}")
    else:
        outcome.check(close_code == 4401 and {"type": "signed_out"} in received,
                      f"signed out, yet closed with {close_code} after {_short(received)}")
    async with await hub.server.connect(SECRETARIAT) as again:
        pong = await again.request("ping")
        outcome.check(pong.get("pong") is True, f"a new connection answers the ping with {_short(pong)}")
    for line in hub.records.bad_since(start):
        outcome.problems.append(f"logged: {line}")
    return outcome.problems


@on_the_server_loop
async def test_any_json_in_a_signout_frame_signs_out_or_answers_a_documented_code(hub):
    scene = await build_scene(hub.server)
    await fuzz(f"{hub.backend} signout", frame_strategy("signout", scene), lambda frame: run_signout(hub, frame))


# -- the tests: HTTP routes that take an id --------------------------------------------------------------
@dataclass(frozen=True)
class HttpRoute:
    method: str
    path: str  # {name:kind:convertor}: a path parameter
    query: dict[str, str] = field(default_factory=dict)  # name → kind
    body: dict[str, str] | None = None  # JSON body fields, name → kind
    auth: str = "person"  # or "integration", "none"

    @property
    def params(self) -> list[tuple[str, str, str]]:
        return re.findall(r"\{(\w+):(\w+):(\w+)\}", self.path)

    @property
    def route_path(self) -> str:
        """The path as chat.web declares it."""
        return re.sub(r"\{(\w+):\w+:(\w+)\}", r"{\1:\2}", self.path)

    @property
    def shape(self) -> str:
        """The path with its parameters' names only (whatever their convertors)."""
        return _shape(self.path)


def _shape(path: str) -> str:
    return re.sub(r"\{(\w+)(:[\w:]+)?\}", r"{\1}", path)


PAGE = {"limit": "limit", "offset": "limit"}
HTTP_ROUTES = [
    HttpRoute("GET", "/api/conversations/{conversation_id:conversation:int}"),
    HttpRoute("GET", "/api/conversations/{conversation_id:conversation:int}/events",
              {"after": "seq", "before": "seq", "limit": "limit"}),
    HttpRoute("POST", "/api/conversations/{conversation_id:conversation:int}/messages",
              body={"client_id": "client_id", "text": "text", "attachments": "attachments"}),
    HttpRoute("GET", "/api/announcements/{announcement_id:announcement:int}"),
    HttpRoute("GET", "/api/notifications/{notification_id:notification:int}"),
    HttpRoute("GET", "/api/collective/{send_id:send:int}"),
    HttpRoute("GET", "/api/attachments/{upload_id:upload:str}"),
    HttpRoute("GET", "/api/archive/schools/{school_id:school:int}/conversations",
              {"participant": "person", "child": "child", "since": "date", "until": "date", "q": "text", **PAGE}),
    HttpRoute("GET", "/api/archive/schools/{school_id:school:int}/audit", PAGE),
    HttpRoute("GET", "/api/archive/conversations/{conversation_id:conversation:int}"),
    HttpRoute("GET", "/api/archive/conversations/{conversation_id:conversation:int}/export", {"format": "format"}),
    HttpRoute("GET", "/api/archive/attachments/{upload_id:upload:str}"),
    HttpRoute("DELETE", "/api/sessions/{session_id:session:str}"),
    # Ids in the query string or the body.
    HttpRoute("GET", "/api/contacts", {"child_id": "child"}),
    HttpRoute("GET", "/api/notifications", {"child_id": "child", "before": "notification", "limit": "limit"}),
    HttpRoute("GET", "/api/announcements", {"before": "announcement", "after": "announcement", "limit": "limit"}),
    HttpRoute("POST", "/api/conversations", body={"participants": "people", "child_id": "child", "name": "text"}),
    HttpRoute("POST", "/api/announcements", body={"audience": "audience", "text": "text", "urgent": "bool"}),
    HttpRoute("POST", "/api/collective", body={"client_id": "client_id", "text": "text", "students": "students",
                                               "groups": "groups"}),
    HttpRoute("POST", "/api/notifications/read", body={"child_id": "child"}),
    HttpRoute("PUT", "/api/preferences", body={"child_id": "child", "kind": "kind", "enabled": "bool"}),
    HttpRoute("POST", "/api/integrations/notices", body={"kind": "kind", "text": "text", "students": "fiches"},
              auth="integration"),
    HttpRoute("POST", "/api/demo/people", body={"person_id": "person"}, auth="none"),
]
INT_SEGMENT = re.compile(r"[0-9]+")


def segment_strategy(kind: str, scene: Scene) -> st.SearchStrategy[str]:
    """A path segment: a real id, a boundary id, digits beyond any width, or any text."""
    if kind == "upload":
        real = st.sampled_from(scene.uploads)
    elif kind == "session":
        real = st.sampled_from(scene.sessions)
    elif kind == "school":
        real = st.sampled_from([str(s) for s in scene.schools])
    else:
        real = plausible(kind, scene).map(str)
    digits = st.one_of(st.sampled_from([str(n) for n in BOUNDARY_INTS if n >= 0]),
                       st.sampled_from(["0" * 40 + "7", "9" * 4300, "9" * 4301, "1" * 20000]))
    return st.one_of(real, digits, st.text(chars, min_size=1, max_size=30))


def query_strategy(kind: str, scene: Scene) -> st.SearchStrategy[str]:
    """A query parameter; at most 2,000 characters, as a URL holds 64 KiB at most
    (httpx refuses longer) and every limit on a parameter is far below."""
    return st.one_of(plausible(kind, scene).map(lambda v: (v if isinstance(v, str) else json.dumps(v))[:2000]),
                     st.sampled_from([str(n) for n in BOUNDARY_INTS] + ["9" * 4301, " 12 ", "1_0", "+3", "١٢"]),
                     st.text(chars, max_size=30))


def http_strategy(route: HttpRoute, scene: Scene) -> st.SearchStrategy[dict[str, Any]]:
    path = st.fixed_dictionaries({name: segment_strategy(kind, scene) for name, kind, _ in route.params})
    query = st.fixed_dictionaries({}, optional={name: query_strategy(kind, scene)
                                                for name, kind in route.query.items()})
    if route.body is None:
        body = st.just(None)
    else:
        body = st.one_of(fields_object(route.body, scene).map(json.dumps), json_values.map(json.dumps),
                         st.binary(max_size=40))
    return st.fixed_dictionaries({"speaker": st.sampled_from(SPEAKERS), "path": path, "query": query, "body": body})


def http_matches(route: HttpRoute, segments: dict[str, str]) -> bool:
    """Whether the router takes this path to the route (else it is an unknown path)."""
    for name, _, convertor in route.params:
        value = segments[name]
        if convertor == "int" and not INT_SEGMENT.fullmatch(value):
            return False
        if convertor == "str" and ("/" in value or value in (".", "..") or not value):
            return False
    return True


async def run_http(hub: Hub, http: httpx.AsyncClient, tokens: dict[str, str], route: HttpRoute,
                   case: dict[str, Any]) -> list[str]:
    outcome = Outcome()
    start = len(hub.records.records)
    path = route.path
    for name, _, _ in route.params:
        path = re.sub(r"\{" + name + r":\w+:\w+\}", quote(case["path"][name], safe=""), path)
    headers = {}
    if route.auth == "person":
        headers["Authorization"] = f"Bearer {tokens[case['speaker']]}"
    elif route.auth == "integration":
        headers["Authorization"] = f"Bearer {hub.integration_key}"
    body = case["body"]
    response = await http.request(route.method, path, params=case["query"], headers=headers,
                                  content=body.encode() if isinstance(body, str) else body)
    described = f"{route.method} {_short(path, 120)} {_short(case['query'], 200)} → {response.status_code}"
    if response.status_code >= 300:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            error = None
        if error is None:
            # Unknown paths: the widget's static files answer 404 (405 to a method other than GET).
            outcome.check(response.status_code in (404, 405) and not http_matches(route, case["path"]),
                          f"{described}: not a JSON error: {_short(response.text, 200)}")
        else:
            code = error.get("code")
            outcome.check(code not in FORBIDDEN_CODES and response.status_code in DOCUMENTED.get(code, ()),
                          f"{described}: {code!r} is not a documented refusal with this status: {_short(error)}")
    me = await http.get("/api/me", headers={"Authorization": f"Bearer {tokens[MARIE]}"})
    outcome.check(me.status_code == 200, f"after {described}: GET /api/me answered {me.status_code}")
    for line in hub.records.bad_since(start):
        outcome.problems.append(f"{described}: logged: {line}")
    return outcome.problems


def test_every_route_that_takes_an_id_is_fuzzed():
    app = create_app(Settings(secret_key=SECRET))
    declared = {(method, _shape(route.path)) for route in app.routes if "{" in getattr(route, "path", "")
                for method in (getattr(route, "methods", None) or {"GET"}) if method != "HEAD"}
    fuzzed = {(route.method, route.shape) for route in HTTP_ROUTES}
    assert declared <= fuzzed


@on_the_server_loop
@pytest.mark.parametrize("route", HTTP_ROUTES, ids=lambda r: f"{r.method} {r.route_path}")
async def test_any_id_or_value_on_an_http_route_answers_a_documented_code_and_logs_no_traceback(hub, route):
    scene = await build_scene(hub.server)
    tokens = {email: await hub.server.token(email) for email in SPEAKERS}
    async with httpx.AsyncClient(base_url=hub.server.url, timeout=WAIT) as http:
        await fuzz(f"{hub.backend} {route.method} {route.path}", http_strategy(route, scene),
                   lambda case: run_http(hub, http, tokens, route, case))
