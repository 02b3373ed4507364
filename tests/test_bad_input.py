"""Bad input over a real WebSocket: every refusal is an error frame with a stable
code, a text in the person's language (R22), the request id echoed, nothing
written, and the connection still usable.  Only a frame above the hard limit
(1 MiB) ends the connection (close 1009)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import websockets
from sqlalchemy import select

from chat.storage.models import Conversation, Event, Message, MessageVersion, Participant, Person, Reaction
from tests.client import WAIT, WSClient
from tests.conftest import DIRECTION, JEAN, MARIE, NADIA, child_id, person_by_email

# -- the scene ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Scene:
    """Marie, Jean and Nadia talk about Léa (``mine``); Nadia and the direction
    have a conversation of their own (``theirs``) that neither parent is in."""

    mine: int
    theirs: int
    nadias_message: int
    last_seq: int
    jean: int


async def build_scene(server) -> Scene:
    nadia_id = (await person_by_email(server.service, NADIA)).id
    jean_id = (await person_by_email(server.service, JEAN)).id
    direction_id = (await person_by_email(server.service, DIRECTION)).id
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        mine = (await marie.request("conversation.create", child_id=await child_id(server.service, "Léa"),
                                    participants=[nadia_id, jean_id]))["conversation"]["id"]
        sent = await nadia.request("message.send", conversation_id=mine, client_id="nadia-1", text="Bonjour!")
        theirs = (await nadia.request("conversation.create", participants=[direction_id]))["conversation"]["id"]
        await nadia.request("message.send", conversation_id=theirs, client_id="nadia-2", text="Entre nous")
    return Scene(mine=mine, theirs=theirs, nadias_message=sent["message_id"], last_seq=sent["seq"], jean=jean_id)


async def database_rows(server) -> dict[str, list[tuple]]:
    """Every row a frame could change, to compare before and after a refusal."""
    tables = {
        "conversation": (Conversation, [Conversation.id]),
        "participant": (Participant, [Participant.conversation_id, Participant.person_id]),
        "message": (Message, [Message.id]),
        "message_version": (MessageVersion, [MessageVersion.message_id, MessageVersion.version]),
        "event": (Event, [Event.conversation_id, Event.seq]),
        "reaction": (Reaction, [Reaction.message_id, Reaction.person_id, Reaction.emoji]),
        "person": (Person, [Person.id]),
    }
    rows = {}
    async with server.service.sessions() as session:
        for name, (model, order) in tables.items():
            rows[name] = [tuple(r) for r in (await session.execute(select(model.__table__).order_by(*order))).all()]
    return rows


# -- the cases --------------------------------------------------------------------------------
Frame = Callable[[Scene], "dict[str, Any] | str | bytes"]


@dataclass(frozen=True)
class Case:
    name: str
    frame: Frame  # a dict is sent as JSON with a request id; str and bytes are sent as they are
    code: str
    fr: str  # a piece of the French text
    en: str  # the same piece in English
    fields: Callable[[Scene], dict[str, Any]] = field(default=lambda s: {})


def _send(conversation: Callable[[Scene], Any], text: Any = "Bonjour", **extra: Any) -> Frame:
    return lambda s: {"type": "message.send", "conversation_id": conversation(s), "client_id": "c-1",
                      "text": text, **extra}


def mine(s: Scene) -> int:
    return s.mine


def theirs(s: Scene) -> int:
    return s.theirs


OVERSIZED = 64 * 1024 + 1  # one byte above Settings.max_frame_bytes, far below hard_frame_bytes


def _oversized(s: Scene) -> str:
    frame = {"type": "message.send", "conversation_id": s.mine, "client_id": "big", "text": ""}
    padding = OVERSIZED - len(json.dumps(frame))
    frame["text"] = "a" * padding
    raw = json.dumps(frame)
    assert len(raw.encode()) == OVERSIZED
    return raw


def _not_found(action: str, **fields: Any) -> Case:
    return Case(f"{action}-elsewhere", lambda s: {"type": action, "conversation_id": s.theirs,
                                                  **{k: v(s) if callable(v) else v for k, v in fields.items()}},
                "conversation.not_found", "Conversation introuvable", "Conversation not found",
                lambda s: {"conversation_id": s.theirs})


# Frames the server does not read an id from (docs/protocol.md §4): the error's id is null.
UNREADABLE = [
    Case("invalid-json", lambda s: '{"type": "ping", "id": 1', "request.invalid_json",
         "n'est pas du JSON valide", "is not valid JSON"),
    Case("array", lambda s: '[{"type": "ping"}]', "request.not_object",
         "est de type array", "is of type array", lambda s: {"got": "array"}),
    Case("number", lambda s: "42", "request.not_object",
         "est de type integer", "is of type integer", lambda s: {"got": "integer"}),
    Case("binary", lambda s: b'{"type": "ping", "id": 1}', "request.binary_unsupported",
         "binaires ne sont pas acceptés", "Binary frames are not accepted"),
    Case("oversized", _oversized, "request.too_large", f"{OVERSIZED} octets", f"{OVERSIZED} bytes",
         lambda s: {"size": OVERSIZED, "limit": 64 * 1024}),
]

# Frames that carry an id: the error answers that id.
READABLE = [
    Case("unknown-type", lambda s: {"type": "conversation.explode"}, "request.unknown_type",
         "Type de message inconnu : « conversation.explode »", "Unknown frame type: 'conversation.explode'",
         lambda s: {"type": "conversation.explode"}),
    Case("send-without-client-id", lambda s: {"type": "message.send", "conversation_id": s.mine, "text": "Bonjour"},
         "request.missing_field", "Le champ « client_id » est obligatoire", "The field 'client_id' is required",
         lambda s: {"field": "client_id"}),
    Case("edit-without-text", lambda s: {"type": "message.edit", "message_id": s.nadias_message},
         "request.missing_field", "Le champ « text » est obligatoire", "The field 'text' is required",
         lambda s: {"field": "text"}),
    # Since R7 a message may be attachments only, so a send without text is an empty message.
    Case("send-without-text", lambda s: {"type": "message.send", "conversation_id": s.mine, "client_id": "c-1"},
         "message.text_empty", "Le message est vide", "The message is empty"),
    Case("conversation-id-as-string", _send(lambda s: str(s.mine)), "request.wrong_type",
         "« conversation_id » doit être de type integer", "'conversation_id' must be integer",
         lambda s: {"field": "conversation_id", "expected": "integer", "got": "string"}),
    Case("true-as-integer", _send(lambda s: True), "request.wrong_type",
         "« conversation_id » doit être de type integer, mais boolean", "'conversation_id' must be integer, but got boolean",
         lambda s: {"field": "conversation_id", "expected": "integer", "got": "boolean"}),
    Case("participants-as-strings", lambda s: {"type": "conversation.add", "conversation_id": s.mine,
                                               "participants": [str(s.jean)]},
         "request.wrong_type", "« participants » doit être de type array of integers",
         "'participants' must be array of integers", lambda s: {"field": "participants"}),
    Case("share-history-as-string", lambda s: {"type": "conversation.add", "conversation_id": s.mine,
                                               "participants": [s.jean], "share_history": "yes"},
         "request.wrong_type", "« share_history » doit être de type boolean", "'share_history' must be boolean",
         lambda s: {"field": "share_history", "expected": "boolean", "got": "string"}),
    Case("text-too-long", _send(mine, "é" * 4001), "message.text_too_long",
         "4001 caractères; la limite est de 4000", "4001 characters long; the limit is 4000",
         lambda s: {"length": 4001, "limit": 4000}),
    Case("text-empty", _send(mine, ""), "message.text_empty", "Le message est vide", "The message is empty"),
    Case("text-blank", _send(mine, "  \n\t "), "message.text_empty", "Le message est vide", "The message is empty"),
    _not_found("message.send", client_id="c-1", text="Bonjour"),
    _not_found("conversation.rename", name="Piraté"),
    _not_found("conversation.history", after=0),
    _not_found("conversation.add", participants=lambda s: [s.jean], share_history=True),
    _not_found("conversation.leave"),
    _not_found("read", seq=1),
    Case("edit-someone-elses-message", lambda s: {"type": "message.edit", "message_id": s.nadias_message,
                                                  "text": "Corrigé"},
         "message.not_author", "Seul l'auteur d'un message", "Only the author of a message"),
    Case("retract-someone-elses-message", lambda s: {"type": "message.retract", "message_id": s.nadias_message},
         "message.not_author", "Seul l'auteur d'un message", "Only the author of a message"),
    Case("react-with-text", lambda s: {"type": "reaction.add", "message_id": s.nadias_message, "emoji": "lol"},
         "reaction.invalid_emoji", "un seul émoji est attendu", "a single emoji is expected"),
    Case("read-beyond-last", lambda s: {"type": "read", "conversation_id": s.mine, "seq": s.last_seq + 5},
         "read.invalid_seq", "Position de lecture invalide", "Invalid read position",
         lambda s: {"seq": s.last_seq + 5, "last_seq": s.last_seq}),
]

SPEAKERS = [pytest.param(MARIE, "fr", id="fr"), pytest.param(JEAN, "en", id="en")]


async def send_case(client: WSClient, case: Case, scene: Scene, request_id: Any) -> Any:
    """Send the case's frame; return the id its answer must carry."""
    frame = case.frame(scene)
    if isinstance(frame, dict):
        await client.send_raw(json.dumps({**frame, "id": request_id}))
        return request_id
    await client.send_raw(frame)
    return None


async def assert_healthy(client: WSClient) -> None:
    pong = await client.request("ping")
    assert pong["pong"] is True and pong["type"] == "ok"


def check_error(answer: dict[str, Any], case: Case, scene: Scene, language: str, request_id: Any) -> None:
    assert answer["type"] == "error"
    assert answer["id"] == request_id
    assert answer["code"] == case.code
    assert (case.fr if language == "fr" else case.en) in answer["message"], answer["message"]
    assert (case.en if language == "fr" else case.fr) not in answer["message"]
    assert "{" not in answer["message"], f"unfilled placeholder: {answer['message']}"
    expected_fields = case.fields(scene)
    assert {k: answer.get("fields", {}).get(k) for k in expected_fields} == expected_fields


@pytest.mark.parametrize("speaker, language", SPEAKERS)
@pytest.mark.parametrize("case", READABLE, ids=lambda c: c.name)
async def test_refused_frame_answers_its_id_changes_nothing_and_keeps_the_connection(server, case, speaker, language):
    scene = await build_scene(server)
    async with await server.connect(speaker) as client:
        before = await database_rows(server)
        request_id = f"req-{case.name}"
        await send_case(client, case, scene, request_id)
        answer = await client.reply(request_id)
        check_error(answer, case, scene, language, request_id)
        await assert_healthy(client)
        assert await database_rows(server) == before


@pytest.mark.parametrize("speaker, language", SPEAKERS)
@pytest.mark.parametrize("case", UNREADABLE, ids=lambda c: c.name)
async def test_unreadable_frame_is_refused_changes_nothing_and_keeps_the_connection(server, case, speaker, language):
    scene = await build_scene(server)
    async with await server.connect(speaker) as client:
        before = await database_rows(server)
        await send_case(client, case, scene, None)
        answer = await client.reply(None)
        check_error(answer, case, scene, language, None)
        await assert_healthy(client)
        assert await database_rows(server) == before


async def test_wrong_type_for_the_request_id_itself_is_refused_without_echo(server):
    async with await server.connect(MARIE) as client:
        await client.send_raw(json.dumps({"type": "ping", "id": {"nested": 1}}))
        answer = await client.reply(None)
        assert answer["code"] == "request.wrong_type"
        assert answer["fields"]["field"] == "id"
        await assert_healthy(client)


async def test_frame_above_one_mebibyte_closes_with_1009_and_the_server_carries_on(server):
    scene = await build_scene(server)
    before = await database_rows(server)
    client = await server.connect(MARIE)
    text = "a" * (server.settings.hard_frame_bytes + 1024)
    await client.send_raw(json.dumps({"type": "message.send", "id": 1, "conversation_id": scene.mine,
                                      "client_id": "huge", "text": text}))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await client._receive(WAIT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    async with await server.connect(MARIE) as again:
        await assert_healthy(again)
    assert await database_rows(server) == before
