"""The typed client frames (chat/protocol.py) and their JSON Schema
(docs/protocol.schema.json) against docs/protocol.md and chat.frames.Fields.

* the committed schema is the one ``python3 -m chat.protocol`` writes;
* it validates the documented example frames, and refuses what the decoder refuses;
* the schema and docs/protocol.md list the same client frames (§5), server
  frames (§6) and error codes (§10, every code of chat.i18n.ERRORS);
* the typed decoding gives the same values and the same errors as Fields.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import msgspec
import orjson
import pytest

from chat.errors import BadRequest
from chat.frames import Fields, parse
from chat.i18n import ERRORS
from chat.protocol import CLIENT_FRAMES, MessageSend, decode, decode_frame, from_fields, schema

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
SCHEMA_FILE = ROOT / "docs" / "protocol.schema.json"


def section(number: int) -> str:
    start = PROTOCOL.index(f"\n## {number}. ")
    return PROTOCOL[start:PROTOCOL.index("\n## ", start + 1)]


def table_first_column(text: str) -> list[str]:
    """The first column of the first table in ``text``."""
    start = text.index("\n|")
    table = text[start:text.index("\n\n", start)]
    return re.findall(r"^\| `([^`]+)` \|", table.split("\n|---", 1)[1], re.M)


def documented_examples() -> list[dict]:
    examples = []
    for block in re.findall(r"```json\n(.*?)```", PROTOCOL, re.S):
        for line in block.splitlines():
            try:
                value = json.loads(line.strip())
            except ValueError:
                continue
            if isinstance(value, dict) and value.get("type") in CLIENT_FRAMES:
                examples.append(value)
    return examples


def test_committed_schema_is_current():
    out = subprocess.run([sys.executable, "-m", "chat.protocol"], cwd=ROOT, capture_output=True, check=True).stdout
    assert json.loads(out) == json.loads(SCHEMA_FILE.read_text(encoding="utf-8")), \
        "run: python3 -m chat.protocol > docs/protocol.schema.json"
    assert json.loads(out) == schema()


def test_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


def test_schema_and_protocol_md_list_the_same_frames():
    document = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert set(document["discriminator"]["mapping"]) == set(table_first_column(section(5))) == set(CLIENT_FRAMES)
    assert document["$defs"]["ServerFrameType"]["enum"] == table_first_column(section(6))


def test_schema_and_protocol_md_list_the_same_error_codes():
    document = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    codes = document["$defs"]["ErrorFrame"]["properties"]["code"]["enum"]
    assert table_first_column(section(10)) == list(ERRORS)  # in the catalogue's order
    assert sorted(codes) == sorted(ERRORS)


def test_schema_validates_the_documented_examples():
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
    examples = documented_examples()
    assert {example["type"] for example in examples} >= set(CLIENT_FRAMES) - {
        "reaction.remove", "announcement.unreact", "announcement.reply"}
    for example in examples:
        decoded = decode_frame(orjson.dumps(example))
        assert validator.is_valid(example) == (decoded is not None), example
        if "\x00" not in example.get("text", ""):
            assert decoded is not None, example


GOOD = [
    {"type": "message.send", "conversation_id": 1, "client_id": "c-1", "text": "Bonjour", "id": 3},
    {"type": "message.send", "conversation_id": 2**63 - 1, "client_id": "c", "attachments": ["a" * 64] * 100},
    {"type": "resume", "positions": {"1": 2, "-0": 0, "9223372036854775807": 9223372036854775807}},
    {"type": "announcement.post", "audience": {"groups": [1, 2]}, "text": "x", "urgent": True},
    {"type": "preferences.set", "kind": "announcement", "enabled": False, "child_id": 4},
    {"type": "conversation.history", "conversation_id": 1, "after": 3, "limit": 10, "extra": [[{"a": None}]]},
]
BAD = [
    {"type": "message.send", "conversation_id": True, "client_id": "c"},
    {"type": "message.send", "conversation_id": 1.0, "client_id": "c"},
    {"type": "message.send", "conversation_id": 2**63, "client_id": "c"},
    {"type": "message.send", "conversation_id": -(2**63) - 1, "client_id": "c"},
    {"type": "message.send", "conversation_id": 1},
    {"type": "message.send", "conversation_id": None, "client_id": "c"},
    {"type": "message.send", "conversation_id": 1, "client_id": "c\u0000"},
    {"type": "message.send", "conversation_id": 1, "client_id": "c", "text": "a\u009bb", "attachments": 3},
    {"type": "message.send", "conversation_id": 1, "client_id": "c", "attachments": ["a" * 65]},
    {"type": "message.send", "conversation_id": 1, "client_id": "c", "attachments": ["a"] * 101},
    {"type": "message.send", "conversation_id": 1, "client_id": "c", "attachments": ["\u0007"]},
    {"type": "conversation.create", "participants": list(range(1001))},
    {"type": "conversation.create", "participants": [1, "2"]},
    {"type": "resume", "positions": {"01": 1}},
    {"type": "resume", "positions": {"+1": 1}},
    {"type": "resume", "positions": {"1": -1}},
    {"type": "resume", "positions": {"99999999999999999999": 1}},
    {"type": "resume", "positions": []},
    {"type": "announcement.post", "audience": None, "text": "x"},
    {"type": "announcement.post", "text": "x"},
    {"type": "preferences.set", "kind": "announcement", "enabled": 1},
]
# Accepted by Fields, but read by Fields (msgspec leaves them to it): explicit
# nulls on fields whose default is not null.
NULLS = [
    {"type": "message.send", "conversation_id": 1, "client_id": "c", "text": None, "attachments": None},
    {"type": "conversation.history", "conversation_id": 1, "limit": None},
    {"type": "collective.send", "client_id": "c", "text": "t", "students": None, "groups": None},
    {"type": "announcement.post", "audience": {"school": 1}, "text": "x", "urgent": None},
    {"type": "announcement.post", "audience": json.loads("[" * 300 + "]" * 300), "text": "x", "urgent": None},
]


def reference(frame: dict):
    """What Fields makes of ``frame`` (the Struct via from_fields), or its error."""
    data = parse(json.dumps(frame))  # as the wire carries it: orjson reads what Fields checks
    try:
        return plain(from_fields(CLIENT_FRAMES[frame["type"]], Fields(data), data.get("id")))
    except BadRequest as exc:
        return exc.code, exc.fields


def plain(frame) -> dict:
    """A Struct as JSON values, its raw audience included."""
    return {"type": frame.TYPE, **json.loads(msgspec.json.encode(frame))}


def typed(frame: dict, raw: bytes | None = None):
    try:
        return plain(decode(raw or json.dumps(frame).encode(), CLIENT_FRAMES[frame["type"]]))
    except BadRequest as exc:
        return exc.code, exc.fields


@pytest.mark.parametrize("frame", GOOD + BAD + NULLS)
def test_typed_decoding_gives_what_fields_gives(frame):
    fast = decode_frame(json.dumps(frame).encode())
    if frame in GOOD:
        assert fast is not None
        assert plain(fast) == reference(frame)
    else:
        assert fast is None
    assert typed(frame) == reference(frame)


def test_error_order_follows_the_handlers():
    frame = {"type": "message.send", "conversation_id": 1, "client_id": "c\u0001", "text": 5}
    assert typed(frame) == ("text.control_characters", {"field": "client_id", "character": "U+0001"})
    frame = {"type": "announcement.post", "text": 5}
    assert typed(frame) == ("request.missing_field", {"field": "audience"})


def test_audience_reaches_the_service_as_orjson_reads_it():
    raw = b'{"type":"announcement.post","audience":{"school":99999999999999999999999,"groups":[99999999999999999999999]},"text":"x"}'
    frame = decode(raw, CLIENT_FRAMES["announcement.post"])
    assert frame.audience_value() == parse(raw.decode())["audience"]


@pytest.mark.parametrize("raw", [
    '{"type":"message.send","conversation_id":1,"client_id":"c"} x',
    '{"type":"message.send","conversation_id":1,"client_id":"\\ud800"}',
    '{"type":"message.send","conversation_id":1,"client_id":"c","type":"ping"}',
    '{"type":"message.send","conversation_id":1,"client_id":"c","deep":' + "[" * 1030 + "]" * 1030 + "}",
    '[1]',
])
def test_text_the_decoder_refuses_gets_the_reference_error(raw):
    assert decode_frame(raw) is None

    def outcome(read):
        try:
            return read()
        except BadRequest as exc:
            return exc.code, exc.fields
    assert outcome(lambda: decode(raw, MessageSend)) == outcome(lambda: from_fields(MessageSend, Fields(parse(raw))))


def test_deep_frames_below_orjsons_limit_are_refused_by_msgspec_too():
    # msgspec skips unknown fields within Python's recursion limit; orjson stops at 1024.
    for depth in (1000, 1023, 1024, 2000):
        raw = '{"type":"ping","x":' + "[" * depth + "]" * depth + "}"
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError:
            assert decode_frame(raw) is None, depth
