"""Which characters text may hold (chat/policies/text.py, docs/protocol.md §1).

* Control characters other than tab, line feed and carriage return are refused
  with ``text.control_characters`` in every text field of every frame and HTTP
  route, on both backends: PostgreSQL cannot store U+0000 (it answered
  ``internal.error`` and HTTP 500 before this rule), SQLite stored it.  Nothing
  is written, the connection stays usable and the log has no traceback.
* Bidirectional controls are removed from names — conversation names, the
  directory's names, integration sources — and from the names the archive
  shows, also when stored before; message texts keep them.

Pure rules first, then end to end against a real server on both backends.
"""

from __future__ import annotations

import copy
import json
import logging
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable

import httpx
import pytest
from sqlalchemy import select, update

from chat import demo, directory
from chat.errors import BadRequest
from chat.frames import Fields
from chat.policies import membership
from chat.policies.attachments import safe_filename
from chat.policies.text import BIDI_CONTROLS, check_no_control_characters, refused_character, strip_bidi_controls
from chat.storage.models import (
    Conversation,
    Event,
    Group,
    IntegrationKey,
    Message,
    Notification,
    Organisation,
    Person,
    School,
    SQLModel,
    Student,
)
from tests import files
from tests.conftest import DIRECTION, JEAN, MARIE, NADIA, actor_for, child_id, person_by_email

# Every control character (category Cc) but tab, line feed and carriage return.
REFUSED = [chr(c) for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)] if chr(c) not in "\t\n\r"]
# What the end-to-end cases send: NUL (the one PostgreSQL cannot store), ESC, DEL and a C1 control.
BAD = [pytest.param("\x00", id="NUL")]
SEVERAL = ["\x00", "\x1b", "\x7f", "\x9b"]
RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "‮gnp.exe" reads "exe.png"


def code_point(character: str) -> str:
    return f"U+{ord(character):04X}"


# -- the pure rules ------------------------------------------------------------------------------
@pytest.mark.parametrize("character", REFUSED, ids=code_point)
def test_every_control_character_but_tab_and_newlines_is_refused_and_named(character):
    with pytest.raises(BadRequest) as refused:
        check_no_control_characters(f"Bonjour{character}Madame", "text")
    assert refused.value.code == "text.control_characters"
    assert refused.value.fields == {"field": "text", "character": code_point(character)}


def test_the_refused_set_is_exactly_the_control_category_but_tab_and_newlines():
    refused = {chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and refused_character(chr(c))}
    control = {chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cc"}
    assert refused == control - {"\t", "\n", "\r"}


@pytest.mark.parametrize("text", [
    "Ligne 1\nLigne 2\r\nColonne\tfin",
    "Léa a oublié son cahier 📚 — « merci »\u00a0!",
    "\u200fمرحبا\u200e Léa, \u05e9\u05dc\u05d5\u05dd",  # RTL marks in a family's message are kept
    "👨\u200d👩\u200d👧 famille",
    "\u2028\u2029\u200b\ufeff",  # separators and zero-width characters are not control characters
])
def test_text_without_control_characters_passes_unchanged(text):
    assert check_no_control_characters(text, "text") is text


def test_a_lone_surrogate_is_refused_too():
    assert refused_character("a\ud800b") == "U+D800"


def test_the_first_refused_character_is_named():
    assert refused_character("ok\tok\x1b[31m\x00") == "U+001B"


@pytest.mark.parametrize("control", sorted(BIDI_CONTROLS), ids=code_point)
def test_each_bidi_control_is_removed_from_a_name(control):
    assert strip_bidi_controls(f"{control}gnp{control}.exe") == "gnp.exe"


def test_bidi_controls_are_the_embeddings_overrides_isolates_and_marks():
    assert BIDI_CONTROLS == {chr(c) for c in [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]}


def test_removing_bidi_controls_keeps_joiners_and_right_to_left_letters():
    name = "👨\u200d👩\u200d👧 مریم\u200cزاده שלום"
    assert strip_bidi_controls(name) == name


@pytest.mark.parametrize("control", sorted(BIDI_CONTROLS), ids=code_point)
def test_upload_names_drop_every_bidi_control_that_display_names_drop(control):
    assert safe_filename(f"{control}gnp{control}.exe", "png") == "gnp.png"


def test_a_conversation_name_loses_its_bidi_controls_then_is_trimmed():
    assert membership.check_name(f" {RLO}gnp.exe\u202c ") == "gnp.exe"
    assert membership.check_name("\u2067 \u2069") is None  # nothing left: no name


def test_a_conversation_name_is_measured_without_its_bidi_controls():
    assert membership.check_name("a" * 100 + RLO * 5) == "a" * 100


def test_a_conversation_name_with_a_control_character_is_refused():
    with pytest.raises(BadRequest) as refused:
        membership.check_name("Sortie\x00")
    assert refused.value.fields == {"field": "name", "character": "U+0000"}


def test_every_string_field_of_a_client_frame_is_checked():
    fields = Fields({"text": "a\x00", "attachments": ["ok", "b\x1b"], "kind": None})
    for read, field in ((lambda: fields.str("text"), "text"), (lambda: fields.str_list("attachments"), "attachments")):
        with pytest.raises(BadRequest) as refused:
            read()
        assert refused.value.code == "text.control_characters" and refused.value.fields["field"] == field
    assert fields.str("kind", required=False) is None


# -- end to end: the scene ------------------------------------------------------------------------
@dataclass(frozen=True)
class Scene:
    """Marie, Jean and Nadia talk about Léa; Nadia announced to Léa's group; an
    integration key of Érables may post transport notices."""

    conversation: int
    maries_message: int
    nadias_message: int
    announcement: int
    lea: int
    lea_fiche: str
    nadia: int
    group: int
    school: int
    key: str


async def build_scene(server) -> Scene:
    service = server.service
    marie, nadia = await actor_for(service, MARIE), await actor_for(service, NADIA)
    jean = await person_by_email(service, JEAN)
    lea = await child_id(service, "Léa")
    conversation = (await service.membership.create(marie, [nadia.id, jean.id], lea))["id"]
    maries = await service.sending.send(marie, conversation, "marie-1", "Bonjour Madame Chabot")
    nadias = await service.sending.send(nadia, conversation, "nadia-1", "Bonjour!")
    async with service.sessions() as session:
        group = (await session.execute(select(Group.id).where(Group.code == "ERA-301"))).scalar_one()
        school = (await session.execute(select(School.id).where(School.code == "ERABLES"))).scalar_one()
        fiche = (await session.get(Student, lea)).fiche
    announcement = await service.announcements.post(nadia, {"groups": [group]}, "Sortie vendredi.")
    _, key = await service.announcements.create_key("ERABLES", "Autobus", ["transport"])
    return Scene(conversation, maries["message_id"], nadias["message_id"], announcement["announcement"]["id"],
                 lea, fiche, nadia.id, group, school, key)


async def stored_rows(server) -> dict[str, list[tuple]]:
    """Every stored row a request could add or change.  Notifications: only which
    exist (their delivery columns move on their own in the background)."""
    rows: dict[str, list[tuple]] = {}
    async with server.service.engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            if table.name == Notification.__tablename__:
                query = select(table.c.id).order_by(table.c.id)
            else:
                query = select(table).order_by(*(list(table.primary_key.columns) or list(table.columns)))
            rows[table.name] = [tuple(row) for row in (await connection.execute(query)).all()]
    return rows


def no_tracebacks(caplog) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert bad == [], [r.getMessage() for r in bad]


def check_refusal(body: dict[str, Any], field: str, character: str, language: str) -> None:
    assert body["code"] == "text.control_characters", body
    assert body["fields"] == {"field": field, "character": code_point(character)}
    expected = f"« {field} » contient un caractère de contrôle" if language == "fr" else \
        f"'{field}' contains a control character"
    assert expected in body["message"] and code_point(character) in body["message"]


def spoil(text: str, character: str) -> str:
    return text[:3] + character + text[3:]


# -- end to end: every text field of every frame ---------------------------------------------------
@dataclass(frozen=True)
class FrameCase:
    name: str
    who: str
    field: str
    frame: Callable[[Scene, str], dict[str, Any]]  # the frame, given the scene and the character to slip in


FRAME_CASES = [
    FrameCase("type", MARIE, "type", lambda s, c: {"type": spoil("ping", c)}),
    FrameCase("conversation.create-name", MARIE, "name", lambda s, c: {
        "type": "conversation.create", "child_id": s.lea, "participants": [s.nadia], "name": spoil("Devoirs", c)}),
    FrameCase("conversation.rename-name", MARIE, "name", lambda s, c: {
        "type": "conversation.rename", "conversation_id": s.conversation, "name": spoil("Devoirs", c)}),
    FrameCase("conversation.lock-reason", DIRECTION, "reason", lambda s, c: {
        "type": "conversation.lock", "conversation_id": s.conversation, "reason": spoil("Propos", c)}),
    FrameCase("message.send-text", MARIE, "text", lambda s, c: {
        "type": "message.send", "conversation_id": s.conversation, "client_id": "c-1", "text": spoil("Merci", c)}),
    FrameCase("message.send-client_id", MARIE, "client_id", lambda s, c: {
        "type": "message.send", "conversation_id": s.conversation, "client_id": spoil("c-2", c), "text": "Merci"}),
    FrameCase("message.send-attachments", MARIE, "attachments", lambda s, c: {
        "type": "message.send", "conversation_id": s.conversation, "client_id": "c-3", "text": "Photo",
        "attachments": [spoil("0123456789abcdef", c)]}),
    FrameCase("message.edit-text", MARIE, "text", lambda s, c: {
        "type": "message.edit", "message_id": s.maries_message, "text": spoil("Bonjour", c)}),
    FrameCase("reaction.add-emoji", MARIE, "emoji", lambda s, c: {
        "type": "reaction.add", "message_id": s.nadias_message, "emoji": "👍" + c}),
    FrameCase("reaction.remove-emoji", MARIE, "emoji", lambda s, c: {
        "type": "reaction.remove", "message_id": s.nadias_message, "emoji": "👍" + c}),
    FrameCase("announcement.post-text", NADIA, "text", lambda s, c: {
        "type": "announcement.post", "audience": {"groups": [s.group]}, "text": spoil("Sortie", c)}),
    FrameCase("announcement.react-emoji", MARIE, "emoji", lambda s, c: {
        "type": "announcement.react", "announcement_id": s.announcement, "emoji": "👍" + c}),
    FrameCase("announcement.unreact-emoji", MARIE, "emoji", lambda s, c: {
        "type": "announcement.unreact", "announcement_id": s.announcement, "emoji": "👍" + c}),
    FrameCase("collective.send-text", NADIA, "text", lambda s, c: {
        "type": "collective.send", "client_id": "col-1", "text": spoil("Réunion", c), "groups": [s.group]}),
    FrameCase("collective.send-client_id", NADIA, "client_id", lambda s, c: {
        "type": "collective.send", "client_id": spoil("col-2", c), "text": "Réunion", "groups": [s.group]}),
    FrameCase("preferences.set-kind", MARIE, "kind", lambda s, c: {
        "type": "preferences.set", "child_id": s.lea, "kind": spoil("announcement", c), "enabled": False}),
]


@pytest.mark.parametrize("character", BAD)
@pytest.mark.parametrize("case", FRAME_CASES, ids=lambda c: c.name)
async def test_a_control_character_in_a_frames_text_is_refused_and_nothing_is_stored(server, case, character, caplog):
    scene = await build_scene(server)
    language = "fr"
    async with await server.connect(case.who) as client:
        before = await stored_rows(server)
        for n, slipped in enumerate([character, *(c for c in SEVERAL if c != character)]):
            request_id = f"{case.name}-{n}"
            await client.send_raw(json.dumps({**case.frame(scene, slipped), "id": request_id}))
            answer = await client.reply(request_id)
            assert answer["type"] == "error" and answer["id"] == request_id
            check_refusal(answer, case.field, slipped, language)
        assert (await client.request("ping"))["pong"] is True  # the connection is still usable
        assert await stored_rows(server) == before
    no_tracebacks(caplog)


async def test_the_refusal_is_in_english_for_a_person_who_reads_english(server):
    scene = await build_scene(server)
    async with await server.connect(JEAN) as jean:
        answer = await jean.refused("message.send", conversation_id=scene.conversation, client_id="j-1",
                                    text="Hello\x00")
    check_refusal(answer, "text", "\x00", "en")


async def test_an_announcement_reply_is_refused_as_always_whatever_its_text(server):
    scene = await build_scene(server)
    async with await server.connect(MARIE) as marie:
        before = await stored_rows(server)
        answer = await marie.refused("announcement.reply", announcement_id=scene.announcement, text="Merci\x00")
        assert answer["code"] == "announcement.no_replies"
        assert await stored_rows(server) == before


# -- end to end: every text field of every HTTP route ---------------------------------------------------
@dataclass(frozen=True)
class RouteCase:
    name: str
    who: str | None  # None: the integration key
    field: str
    request: Callable[[Scene, str], tuple[str, str, dict[str, Any]]]  # method, path, httpx arguments


ROUTE_CASES = [
    RouteCase("create-name", MARIE, "name", lambda s, c: ("POST", "/api/conversations", {"json": {
        "child_id": s.lea, "participants": [s.nadia], "name": spoil("Devoirs", c)}})),
    RouteCase("send-text", MARIE, "text", lambda s, c: ("POST", f"/api/conversations/{s.conversation}/messages", {
        "json": {"client_id": "h-1", "text": spoil("Merci", c)}})),
    RouteCase("send-client_id", MARIE, "client_id", lambda s, c: (
        "POST", f"/api/conversations/{s.conversation}/messages", {"json": {"client_id": spoil("h-2", c),
                                                                          "text": "Merci"}})),
    RouteCase("send-attachments", MARIE, "attachments", lambda s, c: (
        "POST", f"/api/conversations/{s.conversation}/messages", {"json": {
            "client_id": "h-3", "text": "Photo", "attachments": [spoil("0123456789abcdef", c)]}})),
    RouteCase("announcement-text", NADIA, "text", lambda s, c: ("POST", "/api/announcements", {"json": {
        "audience": {"groups": [s.group]}, "text": spoil("Sortie", c)}})),
    RouteCase("notice-text", None, "text", lambda s, c: ("POST", "/api/integrations/notices", {"json": {
        "kind": "transport", "text": spoil("Retard", c), "students": [s.lea_fiche]}})),
    RouteCase("notice-kind", None, "kind", lambda s, c: ("POST", "/api/integrations/notices", {"json": {
        "kind": spoil("transport", c), "text": "Retard", "students": [s.lea_fiche]}})),
    RouteCase("notice-students", None, "students", lambda s, c: ("POST", "/api/integrations/notices", {"json": {
        "kind": "transport", "text": "Retard", "students": [spoil(s.lea_fiche, c)]}})),
    RouteCase("collective-text", NADIA, "text", lambda s, c: ("POST", "/api/collective", {"json": {
        "client_id": "hc-1", "text": spoil("Réunion", c), "groups": [s.group]}})),
    RouteCase("collective-client_id", NADIA, "client_id", lambda s, c: ("POST", "/api/collective", {"json": {
        "client_id": spoil("hc-2", c), "text": "Réunion", "groups": [s.group]}})),
    RouteCase("preferences-kind", MARIE, "kind", lambda s, c: ("PUT", "/api/preferences", {"json": {
        "child_id": s.lea, "kind": spoil("announcement", c), "enabled": False}})),
    RouteCase("archive-search-q", DIRECTION, "q", lambda s, c: (
        "GET", f"/api/archive/schools/{s.school}/conversations", {"params": {"q": spoil("cahier", c)}})),
]


@pytest.mark.parametrize("character", BAD)
@pytest.mark.parametrize("case", ROUTE_CASES, ids=lambda c: c.name)
async def test_a_control_character_in_a_routes_text_is_a_400_and_nothing_is_stored(server, case, character, caplog):
    scene = await build_scene(server)
    token = scene.key if case.who is None else await server.token(case.who)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        before = await stored_rows(server)
        for slipped in [character, *(c for c in SEVERAL if c != character)]:
            method, path, arguments = case.request(scene, slipped)
            response = await http.request(method, path, headers=headers, **arguments)
            assert response.status_code == 400, response.text
            check_refusal(response.json()["error"], case.field, slipped, "fr")
        assert await stored_rows(server) == before
        if case.who is not None:
            assert (await http.get("/api/me", headers=headers)).status_code == 200
    no_tracebacks(caplog)


async def test_an_upload_name_keeps_its_documented_cleaning_rather_than_a_refusal(server, caplog):
    token = await server.token(MARIE)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for slipped in SEVERAL:
            response = await http.post("/api/uploads", params={"name": f"des{slipped}sin{RLO}.png"},
                                       content=files.png_with_text(), headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 201, response.text
            assert response.json()["upload"]["name"] == "dessin.png"
    no_tracebacks(caplog)


# -- bidirectional controls: gone from names, kept in texts --------------------------------------------
async def test_bidi_controls_are_removed_from_a_new_conversations_name_everywhere_members_see_it(server):
    nadia_id = (await person_by_email(server.service, NADIA)).id
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        answer = await marie.request("conversation.create", child_id=await child_id(server.service, "Léa"),
                                     participants=[nadia_id], name=f"{RLO}gnp.exe")
        conversation = answer["conversation"]
        assert conversation["name"] == "gnp.exe"
        assert (await nadia.next("conversation.joined"))["conversation"]["name"] == "gnp.exe"
        assert (await nadia.event("conversation.created"))["name"] == "gnp.exe"
    async with server.service.sessions() as session:
        assert (await session.get(Conversation, conversation["id"])).name == "gnp.exe"


async def test_bidi_controls_are_removed_from_a_name_created_over_http(server):
    nadia_id = (await person_by_email(server.service, NADIA)).id
    token = await server.token(MARIE)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        response = await http.post("/api/conversations", headers={"Authorization": f"Bearer {token}"}, json={
            "child_id": await child_id(server.service, "Léa"), "participants": [nadia_id], "name": f"\u2066{RLO}fdp"})
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "fdp"


async def test_bidi_controls_are_removed_from_a_new_name_and_from_the_rename_notice(server):
    scene = await build_scene(server)
    async with await server.connect(NADIA) as nadia, await server.connect(MARIE) as marie:
        answer = await marie.request("conversation.rename", conversation_id=scene.conversation,
                                     name=f"\u2067Sortie\u2069 \u200fmusée{RLO}")
        assert answer["name"] == "Sortie musée"
        event = await nadia.event("conversation.renamed")
        assert event["name"] == "Sortie musée"
        assert "Sortie musée" in event["system"]["fr"] and "Sortie musée" in event["system"]["en"]
        assert not BIDI_CONTROLS & set(json.dumps(event, ensure_ascii=False))
        # Nothing left once they are gone: the conversation has no name.
        assert (await marie.request("conversation.rename", conversation_id=scene.conversation,
                                    name=f"{RLO}\u202c"))["name"] is None


async def test_a_message_text_keeps_its_bidi_marks(server):
    scene = await build_scene(server)
    text = "\u200fمرحبا\u200e Léa \u2067שלום\u2069"
    async with await server.connect(NADIA) as nadia, await server.connect(MARIE) as marie:
        sent = await marie.request("message.send", conversation_id=scene.conversation, client_id="rtl", text=text)
        assert (await nadia.event("message.new"))["message"]["text"] == text
    async with server.service.sessions() as session:
        assert (await session.get(Message, sent["message_id"])).text == text


async def test_an_integration_sources_name_loses_its_bidi_controls_and_refuses_control_characters(service):
    key_id, _ = await service.announcements.create_key("ERABLES", f"{RLO}Autobus\u200f", ["transport"])
    async with service.sessions() as session:
        assert (await session.get(IntegrationKey, key_id)).name == "Autobus"
    with pytest.raises(BadRequest) as refused:
        await service.announcements.create_key("ERABLES", "Auto\x00bus", ["transport"])
    assert refused.value.code == "text.control_characters"


# -- the directory ---------------------------------------------------------------------------------------
def spoofed_directory() -> dict[str, Any]:
    """The demo directory with bidi controls around some of each kind of name."""
    data = copy.deepcopy(demo.build())
    data["organisations"][0]["name"] = f"{RLO}CSS\u202c"
    data["schools"][0]["name"] = f"\u2067{data['schools'][0]['name']}\u2069"
    data["groups"][0]["name"] = f"\u200f{data['groups'][0]['name']}"
    staff = next(p for p in data["staff"] if p["email"] == NADIA)
    staff["name"] = f"{RLO}Nadia Chabot\u202c"
    guardian = next(p for p in data["guardians"] if p["email"] == MARIE)
    guardian["name"] = f"Marie\u061c Tremblay"
    student = data["students"][0]
    student["first_name"], student["last_name"] = f"\u202b{student['first_name']}", f"{student['last_name']}\u200e"
    return data


async def test_the_directory_stores_its_names_without_bidi_controls(engine):
    data = spoofed_directory()
    original = copy.deepcopy(data)
    await directory.load(engine, directory.validate(data))
    assert data == original  # the caller's objects are left as they are
    async with engine.connect() as connection:
        names = [row[0] for model, column in ((Organisation, Organisation.name), (School, School.name),
                                               (Group, Group.name), (Person, Person.name),
                                               (Student, Student.first_name), (Student, Student.last_name))
                 for row in (await connection.execute(select(column))).all()]
        nadia = (await connection.execute(select(Person.name).where(Person.email == NADIA))).scalar_one()
        marie = (await connection.execute(select(Person.name).where(Person.email == MARIE))).scalar_one()
    assert not BIDI_CONTROLS & set("".join(names))
    assert (nadia, marie) == ("Nadia Chabot", "Marie Tremblay")


@pytest.mark.parametrize(("place", "character"), [
    (lambda d: d["staff"][0], "\x00"),
    (lambda d: d["guardians"][2], "\x1b"),
    (lambda d: d["schools"][1], "\ud800"),
], ids=["NUL-in-staff", "ESC-in-guardian", "surrogate-in-school"])
async def test_a_directory_with_a_control_character_is_refused_where_it_is_and_nothing_is_loaded(engine, place,
                                                                                               character):
    data = copy.deepcopy(demo.build())
    place(data)["name"] = f"Nom{character}"
    data["staff"].append({"email": "nouvelle@erables.test", "name": "Nouvelle", "role": "staff",
                          "schools": ["ERABLES"]})
    with pytest.raises(BadRequest) as refused:
        await directory.load(engine, directory.validate(data))
    assert refused.value.code == "directory.invalid"
    assert refused.value.fields["where"].endswith(".name")
    assert code_point(character) in refused.value.fields["problem"]
    async with engine.connect() as connection:
        assert (await connection.execute(select(Person).where(Person.email == "nouvelle@erables.test"))).first() is None


def test_the_directory_refuses_a_control_character_in_any_text_naming_the_place():
    data = copy.deepcopy(demo.build())
    data["schools"][0]["notice_fr"] = "Délai\x07"
    with pytest.raises(BadRequest) as refused:
        directory.validate(data)
    assert refused.value.fields["where"] == "schools[0].notice_fr"


# -- the archive: names stored before the rule ----------------------------------------------------------
async def test_the_archive_export_shows_names_stored_before_without_their_bidi_controls(server):
    scene = await build_scene(server)
    rtl_text = "\u200fمرحبا\u200e"
    await server.service.sending.send(await actor_for(server.service, MARIE), scene.conversation, "rtl", rtl_text)
    # As a database written before names were cleaned holds them.
    async with server.service.sessions() as session, session.begin():
        await session.execute(update(Person).where(Person.email.in_([MARIE, NADIA, DIRECTION]))
                              .values(name=Person.name + RLO + "gnp.exe"))
        await session.execute(update(Conversation).where(Conversation.id == scene.conversation)
                              .values(name=f"{RLO}gnp.exe"))
        await session.execute(update(School).where(School.id == scene.school).values(name=f"{RLO}École"))
        await session.execute(update(Student).where(Student.id == scene.lea).values(first_name=f"{RLO}Léa"))
        created = await session.get(Event, (scene.conversation, 1))
        frame = json.loads(created.frame)
        frame["name"] = f"{RLO}gnp.exe"
        for member in frame["members"]:
            member["name"] += RLO
        frame["system"] = {k: v + RLO for k, v in frame["system"].items()}
        created.frame = json.dumps(frame)
    token = await server.token(DIRECTION)
    base = f"/api/archive/conversations/{scene.conversation}"
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        exported = {kind: await http.get(f"{base}/export", params={"format": kind},
                                         headers={"Authorization": f"Bearer {token}"}) for kind in ("json", "html")}
        read = await http.get(base, headers={"Authorization": f"Bearer {token}"})
        found = await http.get(f"/api/archive/schools/{scene.school}/conversations",
                               headers={"Authorization": f"Bearer {token}"})
    for response in (*exported.values(), read, found):
        assert response.status_code == 200, response.text
        assert RLO not in response.text
    document = exported["json"].json()
    assert document["name"] == "gnp.exe" and document["school"]["name"] == "École"
    assert document["child"]["name"].startswith("Léa ")
    assert document["exported_by"]["name"].endswith("gnp.exe")
    assert document["events"][0]["name"] == "gnp.exe"
    assert rtl_text in [m["text"] for m in document["messages"]]  # a message's text is kept as written
    assert rtl_text in exported["html"].text


# -- lone surrogates: not JSON, on either backend ----------------------------------------------------
async def test_a_lone_surrogate_escape_in_a_frame_is_invalid_json_and_nothing_is_stored(server, caplog):
    scene = await build_scene(server)
    raw = '{"type":"message.send","id":1,"conversation_id":%d,"client_id":"s-1","text":"a\\ud800b"}' % scene.conversation
    async with await server.connect(MARIE) as client:
        before = await stored_rows(server)
        await client.send_raw(raw)
        answer = await client.reply(None)  # not JSON: no id could be read
        assert answer["code"] == "request.invalid_json"
        assert (await client.request("ping"))["pong"] is True
        assert await stored_rows(server) == before
    no_tracebacks(caplog)


async def test_a_lone_surrogate_escape_in_a_json_body_is_invalid_json_and_nothing_is_stored(server, caplog):
    scene = await build_scene(server)
    token = await server.token(MARIE)
    before = await stored_rows(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        response = await http.post(f"/api/conversations/{scene.conversation}/messages",
                                   content=b'{"client_id":"s-2","text":"a\\udc00b"}',
                                   headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "request.invalid_json"
    assert await stored_rows(server) == before
    no_tracebacks(caplog)
