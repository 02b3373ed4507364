"""Ids are 64-bit integers (docs/protocol.md §1), on both backends.

Every frame and HTTP route that takes an id answers an id past 32 bits
(2^31, 2^62, 2^63 − 1) that names nothing with its documented ``*.not_found``
(or the documented answer for that frame), never ``internal.error`` or 500,
and the server logs no traceback for it.  An id outside the 64-bit range, or
a path or query id that is not a plain decimal integer, is refused with
``request.wrong_type`` (400); a negative or zero id names nothing.  On
PostgreSQL the id columns and their sequences are BIGINT (migration 0009):
a directory whose every id is past 2^31 works end to end.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import httpx
import pytest
from sqlalchemy import select, text

from chat import demo, directory
from chat.clock import Clock
from chat.errors import BadRequest
from chat.frames import Fields
from chat.app import App
from chat.storage.db import create_engine
from chat.storage.models import School, SQLModel
from tests.conftest import (
    DIRECTION,
    JEAN,
    MARIE,
    NADIA,
    Server,
    actor_for,
    child_id,
    person_by_email,
    serve_service,
)
from tests.notifiers import install_notifier, notifier_for

BIG_IDS = [2**31, 2**62, 2**63 - 1]
# Outside the 64-bit range, as JSON numbers: refused when the frame is read.
OUT_OF_RANGE = [2**63, 2**64, -(2**63) - 1, 10**40]


@dataclass(frozen=True)
class Scene:
    """Marie and Nadia talk about Léa (``mine``, one message of Nadia's in it)."""

    mine: int
    lea: int
    nadia: int
    jean: int
    erables: int


async def build_scene(server: Server) -> Scene:
    service = server.service
    marie, nadia = await actor_for(service, MARIE), await actor_for(service, NADIA)
    lea = await child_id(service, "Léa")
    mine = (await service.membership.create(marie, [nadia.id], lea))["id"]
    await service.sending.send(nadia, mine, "nadia-1", "Bonjour!")
    async with service.sessions() as session:
        erables = (await session.execute(select(School.id).where(School.code == "ERABLES"))).scalar_one()
    return Scene(mine=mine, lea=lea, nadia=nadia.id, jean=(await person_by_email(service, JEAN)).id, erables=erables)


@pytest.fixture
def server_log(server, caplog):
    """What the server logs at WARNING and above during the test, uvicorn's
    records included (its loggers do not propagate to the root logger).
    Requested after ``server``: uvicorn configures its loggers when it starts."""
    caplog.set_level(logging.WARNING)
    uvicorn = logging.getLogger("uvicorn")
    uvicorn.addHandler(caplog.handler)
    # Prove the capture: where a frame's and a request's unexpected errors are logged.
    for name in ("chat.web", "uvicorn.error"):
        logging.getLogger(name).error("capture probe")
    assert [r.name for r in caplog.records] == ["chat.web", "uvicorn.error"]
    caplog.clear()
    yield caplog
    uvicorn.removeHandler(caplog.handler)


def tracebacks(caplog) -> list[str]:
    """Records with a traceback or at ERROR: what bad input must never write."""
    return [f"{r.name} {r.levelname}: {r.getMessage()}" for r in caplog.records
            if r.exc_info or r.levelno >= logging.ERROR]


# -- frames ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameCase:
    name: str
    frame: Callable[[Scene, int], dict[str, Any]]
    code: str | None  # the documented error code; None: an ok reply
    who: str = MARIE
    check: Callable[[dict[str, Any], Scene, int], None] = field(default=lambda answer, scene, big: None)


def _frame(frame_type: str, /, **fields: Any) -> Callable[[Scene, int], dict[str, Any]]:
    """A frame whose field values are given, or computed from the scene and the big id."""
    return lambda s, big: {"type": frame_type, **{k: v(s, big) if callable(v) else v for k, v in fields.items()}}


def frame_fields(frame: dict[str, Any]) -> dict[str, Any]:
    """A frame as :meth:`WSClient.send`'s arguments (it adds the request id)."""
    return {"frame_type": frame["type"], **{k: v for k, v in frame.items() if k != "type"}}


def BIG(scene: Scene, big: int) -> int:
    """The id under test."""
    return big


def MINE(scene: Scene, big: int) -> int:
    return scene.mine


def _reset_not_member(answer: dict[str, Any], scene: Scene, big: int) -> None:
    # docs/protocol.md §7.4: a conversation the person is not in is reset, without last_seq.
    assert answer["reset"] == [{"conversation_id": big, "reason": "not_member"}]
    assert answer["resumed"] == []


def _empty(key: str) -> Callable[[dict[str, Any], Scene, int], None]:
    def check(answer: dict[str, Any], scene: Scene, big: int) -> None:
        assert answer[key] == [], answer

    return check


def _whole_history(answer: dict[str, Any], scene: Scene, big: int) -> None:
    assert [e["seq"] for e in answer["events"]] == [1, 2]


FRAME_CASES = [
    FrameCase("message.send", _frame("message.send", conversation_id=BIG, client_id="c-1", text="Bonjour"),
              "conversation.not_found"),
    FrameCase("conversation.history", _frame("conversation.history", conversation_id=BIG), "conversation.not_found"),
    FrameCase("conversation.history-after", _frame("conversation.history", conversation_id=MINE, after=BIG), None,
              check=_empty("events")),
    FrameCase("conversation.history-before", _frame("conversation.history", conversation_id=MINE, before=BIG), None,
              check=_whole_history),
    FrameCase("typing", _frame("typing", conversation_id=BIG), "conversation.not_found"),
    FrameCase("read", _frame("read", conversation_id=BIG, seq=1), "conversation.not_found"),
    FrameCase("read-seq", _frame("read", conversation_id=MINE, seq=BIG), "read.invalid_seq"),
    FrameCase("reaction.add", _frame("reaction.add", message_id=BIG, emoji="👍"), "message.not_found"),
    FrameCase("reaction.remove", _frame("reaction.remove", message_id=BIG, emoji="👍"), "message.not_found"),
    FrameCase("message.edit", _frame("message.edit", message_id=BIG, text="Corrigé"), "message.not_found"),
    FrameCase("message.retract", _frame("message.retract", message_id=BIG), "message.not_found"),
    FrameCase("conversation.create-child",
              _frame("conversation.create", child_id=BIG, participants=lambda s, big: [s.nadia]), "child.not_found"),
    FrameCase("conversation.create-participant",
              _frame("conversation.create", child_id=lambda s, big: s.lea, participants=lambda s, big: [big]),
              "person.not_found"),
    FrameCase("conversation.create-staff-participant", _frame("conversation.create", participants=lambda s, big: [big]),
              "person.not_found", who=NADIA),
    FrameCase("conversation.add", _frame("conversation.add", conversation_id=BIG, participants=lambda s, big: [s.jean]),
              "conversation.not_found"),
    FrameCase("conversation.add-participant",
              _frame("conversation.add", conversation_id=MINE, participants=lambda s, big: [big]), "person.not_found"),
    FrameCase("conversation.remove", _frame("conversation.remove", conversation_id=BIG, person_id=lambda s, big: s.nadia),
              "conversation.not_found"),
    FrameCase("conversation.remove-person", _frame("conversation.remove", conversation_id=MINE, person_id=BIG),
              "conversation.not_participant"),
    FrameCase("conversation.rename", _frame("conversation.rename", conversation_id=BIG, name="Piraté"),
              "conversation.not_found"),
    FrameCase("conversation.leave", _frame("conversation.leave", conversation_id=BIG), "conversation.not_found"),
    FrameCase("conversation.lock", _frame("conversation.lock", conversation_id=BIG, reason="Propos"),
              "conversation.not_found", who=DIRECTION),
    FrameCase("conversation.unlock", _frame("conversation.unlock", conversation_id=BIG), "conversation.not_found",
              who=DIRECTION),
    FrameCase("announcement.read", _frame("announcement.read", announcement_id=BIG), "announcement.not_found"),
    FrameCase("announcement.react", _frame("announcement.react", announcement_id=BIG, emoji="👍"),
              "announcement.not_found"),
    FrameCase("announcement.unreact", _frame("announcement.unreact", announcement_id=BIG, emoji="👍"),
              "announcement.not_found"),
    FrameCase("announcement.reply", _frame("announcement.reply", announcement_id=BIG, text="Merci"),
              "announcement.no_replies"),
    FrameCase("announcement.list-before", _frame("announcement.list", before=BIG), None),
    FrameCase("announcement.list-after", _frame("announcement.list", after=BIG), None,
              check=_empty("announcements")),
    FrameCase("announcement.post-groups", _frame("announcement.post", audience=lambda s, big: {"groups": [big]},
                                                 text="Sortie"), "announcement.not_allowed", who=NADIA),
    FrameCase("announcement.post-school", _frame("announcement.post", audience=lambda s, big: {"school": big},
                                                 text="Sortie"), "announcement.not_allowed", who=NADIA),
    FrameCase("announcement.post-organisation",
              _frame("announcement.post", audience=lambda s, big: {"organisation": big}, text="Sortie"),
              "announcement.not_allowed", who=DIRECTION),
    FrameCase("collective.send-students", _frame("collective.send", client_id="col-1", text="Réunion",
                                                 students=lambda s, big: [big]), "child.not_found", who=NADIA),
    FrameCase("collective.send-groups", _frame("collective.send", client_id="col-1", text="Réunion",
                                               groups=lambda s, big: [big]), "request.invalid", who=NADIA),
    FrameCase("collective.status", _frame("collective.status", send_id=BIG), "collective.not_found", who=NADIA),
    FrameCase("notification.list", _frame("notification.list", child_id=BIG, before=BIG), None,
              check=_empty("notifications")),
    FrameCase("notification.open", _frame("notification.open", notification_id=BIG), "notification.not_found"),
    FrameCase("notification.read_all", _frame("notification.read_all", child_id=BIG), None),
    FrameCase("preferences.set", _frame("preferences.set", child_id=BIG, kind="message", enabled=False),
              "child.not_found"),
    FrameCase("resume-position", _frame("resume", positions=lambda s, big: {str(big): 0}), None,
              check=_reset_not_member),
    FrameCase("resume-announcements-after", _frame("resume", positions={}, announcements_after=BIG), None),
]


@pytest.mark.parametrize("case", FRAME_CASES, ids=lambda c: c.name)
async def test_a_frame_naming_an_id_past_32_bits_answers_as_documented_without_a_traceback(server, server_log, case):
    scene = await build_scene(server)
    server_log.clear()
    for big in BIG_IDS:
        # Not started: a resume case is the connection's first frame; any other frame starts it live.
        async with await server.connect(case.who, start=False) as client:
            answer = await client.reply(await client.send(**frame_fields(case.frame(scene, big))))
            if case.code is None:
                assert answer["type"] == "ok", f"{big}: {answer}"
                case.check(answer, scene, big)
            else:
                assert (answer["type"], answer.get("code")) == ("error", case.code), f"{big}: {answer}"
            assert (await client.request("ping"))["pong"] is True
    assert tracebacks(server_log) == []


# -- HTTP -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RouteCase:
    name: str
    method: str
    path: Callable[[Scene, int], str]
    status: int
    code: str | None = None  # the error's code (None: a 2xx answer)
    who: str = MARIE
    body: Callable[[Scene, int], dict[str, Any]] | None = None


ROUTE_CASES = [
    RouteCase("GET conversation", "GET", lambda s, big: f"/api/conversations/{big}", 404, "conversation.not_found"),
    RouteCase("GET events", "GET", lambda s, big: f"/api/conversations/{big}/events", 404, "conversation.not_found"),
    RouteCase("GET events after", "GET", lambda s, big: f"/api/conversations/{s.mine}/events?after={big}", 200),
    RouteCase("GET events before", "GET", lambda s, big: f"/api/conversations/{s.mine}/events?before={big}", 200),
    RouteCase("POST message", "POST", lambda s, big: f"/api/conversations/{big}/messages", 404,
              "conversation.not_found", body=lambda s, big: {"client_id": "http-1", "text": "Bonjour"}),
    RouteCase("POST conversation child", "POST", lambda s, big: "/api/conversations", 404, "child.not_found",
              body=lambda s, big: {"child_id": big, "participants": [s.nadia]}),
    RouteCase("POST conversation participant", "POST", lambda s, big: "/api/conversations", 404, "person.not_found",
              body=lambda s, big: {"child_id": s.lea, "participants": [big]}),
    RouteCase("GET contacts", "GET", lambda s, big: f"/api/contacts?child_id={big}", 404, "child.not_found"),
    RouteCase("GET announcement", "GET", lambda s, big: f"/api/announcements/{big}", 404, "announcement.not_found"),
    RouteCase("GET announcements before", "GET", lambda s, big: f"/api/announcements?before={big}", 200),
    RouteCase("GET announcements after", "GET", lambda s, big: f"/api/announcements?after={big}", 200),
    RouteCase("POST announcement", "POST", lambda s, big: "/api/announcements", 403, "announcement.not_allowed",
              who=NADIA, body=lambda s, big: {"audience": {"groups": [big]}, "text": "Sortie"}),
    RouteCase("GET notification", "GET", lambda s, big: f"/api/notifications/{big}", 404, "notification.not_found"),
    RouteCase("GET notifications", "GET", lambda s, big: f"/api/notifications?child_id={big}&before={big}", 200),
    RouteCase("POST notifications read", "POST", lambda s, big: "/api/notifications/read", 200,
              body=lambda s, big: {"child_id": big}),
    RouteCase("PUT preferences", "PUT", lambda s, big: "/api/preferences", 404, "child.not_found",
              body=lambda s, big: {"child_id": big, "kind": "message", "enabled": False}),
    RouteCase("GET collective", "GET", lambda s, big: f"/api/collective/{big}", 404, "collective.not_found", who=NADIA),
    RouteCase("POST collective", "POST", lambda s, big: "/api/collective", 404, "child.not_found", who=NADIA,
              body=lambda s, big: {"client_id": "col-1", "text": "Réunion", "students": [big]}),
    RouteCase("GET archive conversation", "GET", lambda s, big: f"/api/archive/conversations/{big}", 404,
              "conversation.not_found", who=DIRECTION),
    RouteCase("GET archive export", "GET", lambda s, big: f"/api/archive/conversations/{big}/export", 404,
              "conversation.not_found", who=DIRECTION),
    RouteCase("GET archive search", "GET", lambda s, big: f"/api/archive/schools/{big}/conversations", 404,
              "school.not_found", who=DIRECTION),
    RouteCase("GET archive search filters", "GET",
              lambda s, big: f"/api/archive/schools/{s.erables}/conversations?participant={big}&child={big}", 200,
              who=DIRECTION),
    RouteCase("GET archive audit", "GET", lambda s, big: f"/api/archive/schools/{big}/audit", 404, "school.not_found",
              who=DIRECTION),
    # Not ids, but query integers that reach a query past the checks: any 64-bit value.
    RouteCase("GET archive search offset", "GET",
              lambda s, big: f"/api/archive/schools/{s.erables}/conversations?offset={big}", 200, who=DIRECTION),
    RouteCase("GET archive audit offset", "GET", lambda s, big: f"/api/archive/schools/{s.erables}/audit?offset={big}",
              200, who=DIRECTION),
]


async def call(server: Server, case: RouteCase, path: str, body: dict[str, Any] | None) -> httpx.Response:
    token = await server.token(case.who)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        return await http.request(case.method, path, json=body, headers={"Authorization": f"Bearer {token}"})


def check_response(response: httpx.Response, status: int, code: str | None, label: Any) -> None:
    assert response.status_code == status, f"{label}: {response.status_code} {response.text[:300]}"
    if code is not None:
        assert response.json()["error"]["code"] == code, f"{label}: {response.text[:300]}"


@pytest.mark.parametrize("case", ROUTE_CASES, ids=lambda c: c.name)
async def test_a_route_naming_an_id_past_32_bits_answers_as_documented_without_a_traceback(server, server_log, case):
    scene = await build_scene(server)
    server_log.clear()
    for big in BIG_IDS:
        response = await call(server, case, case.path(scene, big), case.body(scene, big) if case.body else None)
        check_response(response, case.status, case.code, big)
    assert tracebacks(server_log) == []


# Path ids that are not a 64-bit integer: a 400 request.wrong_type, whatever the route.
BAD_PATH_IDS = [str(2**63), str(2**64), str(-(2**63) - 1), "9" * 30, "9" * 5000]
# Path ids that are integers but name nothing (ids start at 1): the route's not_found.
NOTHING_PATH_IDS = ["0", "-1", str(-(2**63))]
ID_ROUTES = [
    ("/api/conversations/{}", MARIE, "conversation.not_found"),
    ("/api/conversations/{}/events", MARIE, "conversation.not_found"),
    ("/api/announcements/{}", MARIE, "announcement.not_found"),
    ("/api/notifications/{}", MARIE, "notification.not_found"),
    ("/api/collective/{}", NADIA, "collective.not_found"),
    ("/api/archive/conversations/{}", DIRECTION, "conversation.not_found"),
    ("/api/archive/conversations/{}/export", DIRECTION, "conversation.not_found"),
    ("/api/archive/schools/{}/conversations", DIRECTION, "school.not_found"),
    ("/api/archive/schools/{}/audit", DIRECTION, "school.not_found"),
]


@pytest.mark.parametrize("route, who, not_found", ID_ROUTES, ids=[r[0] for r in ID_ROUTES])
async def test_a_path_id_outside_64_bits_is_a_wrong_type_and_a_negative_one_names_nothing(
        server, server_log, route, who, not_found):
    token = await server.token(who)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for raw in BAD_PATH_IDS:
            response = await http.get(route.format(raw), headers={"Authorization": f"Bearer {token}"})
            check_response(response, 400, "request.wrong_type", raw[:30])
        for raw in NOTHING_PATH_IDS:
            response = await http.get(route.format(raw), headers={"Authorization": f"Bearer {token}"})
            check_response(response, 404, not_found, raw)
    assert tracebacks(server_log) == []


async def test_a_message_posted_to_a_path_id_outside_64_bits_is_a_wrong_type(server, server_log):
    token = await server.token(MARIE)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for raw in BAD_PATH_IDS:
            response = await http.post(f"/api/conversations/{raw}/messages", json={"client_id": "c", "text": "Bonjour"},
                                       headers={"Authorization": f"Bearer {token}"})
            check_response(response, 400, "request.wrong_type", raw[:30])
    assert tracebacks(server_log) == []


# Query ids must be plain decimal integers in the 64-bit range; Python's int()
# would also take spaces, underscores, a plus sign and non-ASCII digits.
BAD_QUERY_IDS = [str(2**63), str(-(2**63) - 1), "9" * 5000, " 12", "12 ", "1_000", "+5", "١٢", "１２", "0x10", "-"]


@pytest.mark.parametrize("path", ["/api/conversations/{mine}/events?after={raw}",
                                  "/api/notifications?before={raw}",
                                  "/api/announcements?before={raw}",
                                  "/api/contacts?child_id={raw}",
                                  "/api/archive/schools/{erables}/conversations?participant={raw}"])
async def test_a_query_id_that_is_not_a_plain_64_bit_integer_is_a_wrong_type(server, server_log, path):
    scene = await build_scene(server)
    server_log.clear()
    who = DIRECTION if "archive" in path else MARIE
    token = await server.token(who)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for raw in BAD_QUERY_IDS:
            response = await http.get(path.format(mine=scene.mine, erables=scene.erables, raw=raw),
                                      headers={"Authorization": f"Bearer {token}"})
            check_response(response, 400, "request.wrong_type", repr(raw[:30]))
    assert tracebacks(server_log) == []


# -- decoding ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_an_integer_field_outside_64_bits_is_a_wrong_type(value):
    for read in (lambda f: f.int("id"), lambda f: f.int_list("ids")):
        with pytest.raises(BadRequest) as refused:
            read(Fields({"id": value, "ids": [1, value]}))
        assert refused.value.code == "request.wrong_type"


@pytest.mark.parametrize("key", [str(2**63), str(-(2**63) - 1), "9" * 5000, " 12", "12 ", "1_000", "+5", "١٢", "１２",
                                 "", "-", "1.0", "1e3"])
def test_a_position_key_that_is_not_a_plain_64_bit_integer_is_a_wrong_type(key):
    with pytest.raises(BadRequest) as refused:
        Fields({"positions": {key: 0}}).int_map("positions")
    assert refused.value.code == "request.wrong_type"
    assert refused.value.fields["field"] == "positions"


def test_position_keys_inside_64_bits_are_read_as_integers():
    keys = {str(2**63 - 1): 1, str(-(2**63)): 2, "0": 3, "-7": 4, "2147483648": 5}
    assert Fields({"positions": keys}).int_map("positions") == {int(k): v for k, v in keys.items()}


@pytest.mark.parametrize("seq", OUT_OF_RANGE[:2])
def test_a_position_value_outside_64_bits_is_a_wrong_type(seq):
    with pytest.raises(BadRequest) as refused:
        Fields({"positions": {"1": seq}}).int_map("positions")
    assert refused.value.code == "request.wrong_type"


@pytest.mark.parametrize("value", OUT_OF_RANGE)
async def test_frames_with_ids_outside_64_bits_are_refused_before_anything_is_looked_up(server, server_log, value):
    scene = await build_scene(server)
    server_log.clear()
    frames = [
        ({"type": "resume", "positions": {str(value): 0}}, "request.wrong_type"),
        ({"type": "conversation.create", "child_id": scene.lea, "participants": [value]}, "request.wrong_type"),
        ({"type": "collective.send", "client_id": "c", "text": "Réunion", "students": [value]}, "request.wrong_type"),
        ({"type": "announcement.post", "audience": {"groups": [value]}, "text": "Sortie"},
         "announcement.audience_invalid"),
        ({"type": "announcement.post", "audience": {"school": value}, "text": "Sortie"},
         "announcement.audience_invalid"),
        ({"type": "message.send", "conversation_id": value, "client_id": "c", "text": "Bonjour"}, "request.wrong_type"),
    ]
    for frame, code in frames:
        async with await server.connect(NADIA, start=False) as client:
            answer = await client.reply(await client.send(**frame_fields(frame)))
            assert (answer["type"], answer.get("code")) == ("error", code), f"{frame}: {answer}"
    assert tracebacks(server_log) == []


# -- PostgreSQL: a directory whose ids are all past 2^31 ---------------------------------------------
FIRST_ID = 2**31 + 1


class RunningFrom(Clock):
    """A clock that reads ``start`` now and runs on at the real pace after."""

    def __init__(self, start: datetime) -> None:
        self.start, self.origin = start, time.monotonic()

    def utcnow(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.origin)

    def time(self) -> float:
        return self.utcnow().timestamp()


@pytest.fixture
async def big_server(settings, backend):
    """A server on a PostgreSQL database whose every sequence hands out ids past
    2^31 (``setval`` fails on a 32-bit sequence), the demo directory loaded
    after, so that people, children, schools and groups have such ids too."""
    if backend == "embedded":
        pytest.skip("SQLite's INTEGER is 64-bit already; this is about PostgreSQL's columns and sequences")
    engine = create_engine(settings.database_url)
    tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        sequences = (await conn.execute(text(
            "SELECT c.relname FROM pg_class c WHERE c.relkind = 'S'"))).scalars().all()
        assert sequences
        for name in sequences:
            await conn.execute(text("SELECT setval(:name, :value, false)"), {"name": name, "value": FIRST_ID})
    await directory.load(engine, directory.validate(demo.build()))
    service = App(settings, engine)
    # The feed below is a staff member's: on the real clock, R15 holds it outside
    # working hours and the test failed after 16:00 in Toronto.  The notifier's
    # clock runs from a Tuesday 10:00 (Toronto) instead, a working hour for the
    # school and for every demo teacher.
    install_notifier(service, notifier_for(service, clock=RunningFrom(datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc))))
    await service.start()
    async with serve_service(service) as server:
        yield server
    await service.stop()
    await engine.dispose()


async def test_postgresql_serves_a_directory_whose_ids_are_all_past_32_bits(big_server, caplog):
    server = big_server
    caplog.set_level(logging.WARNING)
    caplog.set_level(logging.INFO, logger="chat.sending")
    service = server.service
    lea = await child_id(service, "Léa")
    nadia_id = (await person_by_email(service, NADIA)).id
    assert lea >= FIRST_ID and nadia_id >= FIRST_ID
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia, \
            await server.connect(DIRECTION) as direction:
        conversation = (await marie.request("conversation.create", child_id=lea, participants=[nadia_id]))["conversation"]
        cid = conversation["id"]
        assert cid >= FIRST_ID and conversation["child"]["id"] == lea
        # The send path: the batched statements on the driver's connection (chat/sending.py).
        sent = await marie.request("message.send", conversation_id=cid, client_id="big-1", text="Bonjour")
        assert sent["message_id"] >= FIRST_ID and sent["seq"] == 2
        again = await marie.request("message.send", conversation_id=cid, client_id="big-1", text="Bonjour")
        assert again["duplicate"] is True and again["message_id"] == sent["message_id"]
        assert (await nadia.event("message.new"))["message"]["id"] == sent["message_id"]
        await nadia.request("reaction.add", message_id=sent["message_id"], emoji="👍")
        await marie.request("message.edit", message_id=sent["message_id"], text="Bonjour!")
        assert (await nadia.request("read", conversation_id=cid, seq=4))["unread"] == 0
        history = await nadia.request("conversation.history", conversation_id=cid)
        assert [e["seq"] for e in history["events"]] == [1, 2, 3, 4]
        feed = await nadia.request("notification.list")
        assert feed["notifications"] and all(n["id"] >= FIRST_ID for n in feed["notifications"])
        opened = await nadia.request("notification.open", notification_id=feed["notifications"][0]["id"])
        assert opened["notification"]["read"] is True
        posted = (await direction.request("announcement.post", audience={"school": conversation["school_id"]},
                                          text="Sortie au musée"))["announcement"]
        assert posted["id"] >= FIRST_ID
        assert (await marie.request("announcement.read", announcement_id=posted["id"]))["read"] is True
        job = (await nadia.request("collective.send", client_id="col-1", text="Réunion", students=[lea]))["send"]
        assert job["id"] >= FIRST_ID
        while (await nadia.next("collective.progress"))["status"] != "done":
            pass
        assert (await nadia.request("collective.status", send_id=job["id"]))["send"]["id"] == job["id"]
        assert (await direction.request("conversation.lock", conversation_id=cid, reason="Pause"))["locked"] is True
    async with await server.connect(MARIE, start=False) as again:
        resumed = await again.request("resume", positions={str(cid): 1}, announcements_after=posted["id"] - 1)
        assert resumed["resumed"] == [cid] and resumed["reset"] == []
        # Replayed from seq 1: the message, the reaction, the edit, the lock.
        assert [(await again.event())["seq"] for _ in range(4)] == [2, 3, 4, 5]
        assert (await again.next("announcement"))["announcement"]["id"] == posted["id"]
    token = await server.token(DIRECTION)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        archived = await http.get(f"/api/archive/conversations/{cid}", headers={"Authorization": f"Bearer {token}"})
        assert archived.status_code == 200, archived.text
        assert archived.json()["messages"][0]["versions"][0]["text"] == "Bonjour"
        audit = await http.get(f"/api/archive/schools/{conversation['school_id']}/audit",
                               headers={"Authorization": f"Bearer {token}"})
        entries = audit.json()["entries"]
        assert entries and all(entry["id"] >= FIRST_ID for entry in entries)
    assert tracebacks(caplog) == []
    # Every send went through the batched statements on the driver's connection
    # (chat/sending.py): a statement failing there rolls the batch back and sends
    # each alone through the ORM, which answers the client all the same.
    assert [r.getMessage() for r in caplog.records if r.name == "chat.sending"] == []


# -- migration 0009 on a filled PostgreSQL database ---------------------------------------------------
async def test_migration_0009_widens_a_filled_postgresql_database_and_narrows_it_back(backend):
    """Rows written at 0008 are all there after 0009, in BIGINT columns whose
    sequences go past 2^31; the downgrade refuses (and changes nothing) while
    a value does not fit in 32 bits, and narrows everything back once none is left."""
    if backend == "embedded":
        pytest.skip("0009 changes nothing on SQLite, whose INTEGER is 64-bit already")
    import os

    import asyncpg
    from alembic import command
    from sqlalchemy.exc import DBAPIError

    from chat.storage.db import alembic_config, create_engine
    from tests.conftest import PG_ADMIN_URL, PG_HOST_URL

    name = f"chat_test_0009_{os.getpid()}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await admin.execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(f"postgresql+asyncpg://{PG_HOST_URL.split('://', 1)[1]}/{name}")

    def migrate(connection, step: str, target: str) -> None:
        config = alembic_config(str(engine.url))
        config.attributes["connection"] = connection
        getattr(command, step)(config, target)

    async def types(connection) -> dict[str, set[str]]:
        rows = (await connection.execute(text(
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type IN ('integer', 'bigint') "
            "UNION ALL SELECT sequencename, data_type::text FROM pg_sequences"))).all()
        found: dict[str, set[str]] = {}
        for column, kind in rows:
            found.setdefault(kind, set()).add(column)
        return found

    rows_sql = {
        "conversation": "SELECT id, school_id, creator_id, last_seq FROM conversation ORDER BY id",
        "event": "SELECT conversation_id, seq, kind, message_id FROM event ORDER BY 1, 2",
        "message": "SELECT id, conversation_id, seq, author_id, text FROM message ORDER BY id",
        "notification": "SELECT id, person_id, conversation_id FROM notification ORDER BY id",
        "announcementrecipient": "SELECT announcement_id, person_id FROM announcementrecipient ORDER BY 1, 2",
    }

    async def rows(connection) -> dict[str, list[tuple]]:
        return {table: [tuple(r) for r in (await connection.execute(text(sql))).all()]
                for table, sql in rows_sql.items()}

    async def step(direction: str, target: str) -> None:
        async with engine.begin() as connection:
            await connection.run_sync(migrate, direction, target)
        # A connection's prepared statements do not survive a change of its columns'
        # types (asyncpg: InvalidCachedStatementError): the hub migrates before it serves.
        await engine.dispose()

    try:
        await step("upgrade", "0008")
        async with engine.begin() as connection:
            for statement in [
                "INSERT INTO organisation (code, name) VALUES ('O', 'Org')",
                "INSERT INTO school (code, organisation_id, name, timezone, working_hours, features, closed_days,"
                " notice_fr, notice_en) VALUES ('S', 1, 'École', 'America/Toronto', '{}', '[]', '[]', '', '')",
                "INSERT INTO person (email, name, role, language, tokens_valid_after)"
                " VALUES ('a@x.test', 'A', 'teacher', 'fr', 0), ('b@x.test', 'B', 'parent', 'fr', 0)",
                "INSERT INTO conversation (school_id, creator_id, created_at, last_seq) VALUES (1, 1, now(), 2)",
                "INSERT INTO message (conversation_id, seq, author_id, client_id, text, version, created_at)"
                " VALUES (1, 2, 1, 'c-1', 'Bonjour', 1, now())",
                "INSERT INTO event (conversation_id, seq, kind, actor_id, message_id, frame, created_at)"
                " VALUES (1, 1, 'conversation.created', 1, NULL, '{}', now()), (1, 2, 'message.new', 1, 1, '{}', now())",
                "INSERT INTO notification (person_id, kind, code, fields, link, conversation_id, urgent, created_at,"
                " deliver_at, held, lease_until) VALUES (2, 'message', 'n', '{}', '{}', 1, false, now(), now(), false, 0)",
                "INSERT INTO announcementrecipient (announcement_id, person_id, child_ids) VALUES (7, 2, '[]')",
            ]:
                await connection.execute(text(statement))
            before = await rows(connection)
            assert "bigint" not in await types(connection)
        await step("upgrade", "0009")  # 0009 alone: later migrations add tables of their own
        async with engine.begin() as connection:
            widened = await types(connection)
            assert len(widened["bigint"]) == 67 + 12  # 67 columns and the 12 sequences of the SERIAL keys
            assert widened["integer"] == {"announcement.recipient_count", "collectivesend.done",
                                          "collectivesend.total", "message.version", "messageversion.version",
                                          "upload.height", "upload.size", "upload.width"}
            assert await rows(connection) == before
            await connection.execute(text("SELECT setval('conversation_id_seq', 2147483647)"))
            big = (await connection.execute(text(
                "INSERT INTO conversation (school_id, creator_id, created_at, last_seq)"
                " VALUES (1, 1, now(), 3000000000) RETURNING id"))).scalar_one()
            assert big == 2**31
        with pytest.raises(DBAPIError, match="out of range"):
            await step("downgrade", "0008")
        async with engine.begin() as connection:
            assert len((await types(connection))["bigint"]) == 67 + 12  # the failed downgrade changed nothing
            await connection.execute(text("DELETE FROM conversation WHERE id = :id"), {"id": big})
            await connection.execute(text("SELECT setval('conversation_id_seq', 1)"))
        await step("downgrade", "0008")
        async with engine.begin() as connection:
            assert "bigint" not in await types(connection)
            assert await rows(connection) == before
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
