"""The client frames of the WebSocket protocol as typed structures (docs/protocol.md §5).

Each frame type a client may send is one :class:`msgspec.Struct`, tagged by its
``type``; :data:`CLIENT_FRAMES` maps the type to its Struct and
:data:`DECODER` reads any of them from the JSON text in one pass.

The contract of :func:`decode_frame` and :func:`from_fields`: a frame is read
into the same values, and refused with the same error (code, fields, and the
moment it is raised), as the field-by-field checks of :class:`chat.frames.Fields`
that define the protocol's errors (``request.missing_field``,
``request.wrong_type``, ``text.control_characters``, 64-bit ids…).  The Structs
are declared at least as strict as those checks: whatever msgspec accepts,
``Fields`` accepts with the same values; whatever msgspec refuses (or cannot
decide, such as an explicit ``null`` on a field whose default is not null) is
read again by ``Fields``, whose error is the one sent.  The fields of each
Struct are declared in the order ``Fields`` checks them, so the first error is
the same.

``python3 -m chat.protocol`` writes the JSON Schema of these frames (and of the
``error`` frame with every error code) to standard output; the committed copy is
``docs/protocol.schema.json``.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Annotated, Any, Callable, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

import msgspec
import orjson
from msgspec import Meta, Raw, Struct

from chat.errors import BadRequest
from chat.frames import INT64_MAX, INT64_MIN, Fields, parse
from chat.i18n import ERRORS

# -- field types: each carries the Fields reader that defines its errors ---------------------
# Text a client sends holds no control character but tab, LF and CR, and no lone
# surrogate (chat.policies.text, text.control_characters): the same class as
# chat.policies.text._REFUSED, written as a pattern JSON Schema readers accept.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]*$"

Int64 = Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX, extra={"read": "int"})]
Text = Annotated[str, Meta(pattern=TEXT_PATTERN, extra={"read": "str"})]
Flag = Annotated[bool, Meta(extra={"read": "bool"})]
Ids = Annotated[list[Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)]],
                Meta(max_length=1000, extra={"read": "int_list"})]
UploadIds = Annotated[list[Annotated[str, Meta(max_length=64, pattern=TEXT_PATTERN)]],
                      Meta(max_length=100, extra={"read": "str_list"})]
Positions = Annotated[dict[Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)], Annotated[int, Meta(ge=0, le=INT64_MAX)]],
                      Meta(max_length=10000, extra={"read": "int_map"},
                           extra_json_schema={"propertyNames": {"pattern": "^-?[0-9]{1,19}$"}})]
# Announcement audiences are checked by the announcements service (R13) on the
# value as orjson reads it: kept as raw JSON here and read with orjson there.
Audience = Annotated[Raw, Meta(extra={"read": "any"})]
# A request id: a string or an integer (not a boolean), echoed in the reply.
RequestId = Union[Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)], str, None]

HISTORY_LIMIT = 50  # conversation.history's default limit (docs/protocol.md §5)
ANNOUNCEMENT_LIMIT = 50
NOTIFICATION_LIMIT = 30


class ClientFrame(Struct, tag_field="type", kw_only=True, frozen=True):
    """A frame a client sends: its ``type`` is the Struct's tag; ``id`` is echoed."""

    id: RequestId = None
    TYPE: ClassVar[str]


# Optional fields whose default is not null are declared without ``| None``: an
# explicit null goes to Fields, which reads it as the default.
class Resume(ClientFrame, tag="resume"):
    positions: Positions
    announcements_after: Int64 | None = None


class ConversationCreate(ClientFrame, tag="conversation.create"):
    participants: Ids
    child_id: Int64 | None = None
    name: Text | None = None


class ConversationRename(ClientFrame, tag="conversation.rename"):
    conversation_id: Int64
    name: Text | None = None


class ConversationAdd(ClientFrame, tag="conversation.add"):
    conversation_id: Int64
    participants: Ids
    share_history: Flag = False


class ConversationRemove(ClientFrame, tag="conversation.remove"):
    conversation_id: Int64
    person_id: Int64


class ConversationLeave(ClientFrame, tag="conversation.leave"):
    conversation_id: Int64


class ConversationList(ClientFrame, tag="conversation.list"):
    pass


class ConversationLock(ClientFrame, tag="conversation.lock"):
    conversation_id: Int64
    reason: Text | None = None


class ConversationUnlock(ClientFrame, tag="conversation.unlock"):
    conversation_id: Int64


class ConversationHistory(ClientFrame, tag="conversation.history"):
    conversation_id: Int64
    after: Int64 | None = None
    before: Int64 | None = None
    limit: Int64 = HISTORY_LIMIT


class MessageSend(ClientFrame, tag="message.send"):
    conversation_id: Int64
    client_id: Text
    text: Text = ""
    attachments: UploadIds = []


class MessageEdit(ClientFrame, tag="message.edit"):
    message_id: Int64
    text: Text


class MessageRetract(ClientFrame, tag="message.retract"):
    message_id: Int64


class ReactionAdd(ClientFrame, tag="reaction.add"):
    message_id: Int64
    emoji: Text


class ReactionRemove(ClientFrame, tag="reaction.remove"):
    message_id: Int64
    emoji: Text


class Read(ClientFrame, tag="read"):
    conversation_id: Int64
    seq: Int64


class Typing(ClientFrame, tag="typing"):
    conversation_id: Int64


class AnnouncementPost(ClientFrame, tag="announcement.post"):
    """``audience`` is the raw JSON when msgspec decoded the frame, the parsed
    value when Fields read it: read it with :meth:`audience_value`."""

    audience: Audience
    text: Text
    urgent: Flag = False

    def __post_init__(self) -> None:
        if isinstance(self.audience, Raw) and bytes(self.audience) == b"null":  # null is missing: Fields says so
            raise ValueError("audience is null")

    def audience_value(self) -> Any:
        """The audience as orjson reads it (the announcements service checks it, R13)."""
        audience = self.audience
        return orjson.loads(bytes(audience)) if isinstance(audience, Raw) else audience


class AnnouncementList(ClientFrame, tag="announcement.list"):
    before: Int64 | None = None
    after: Int64 | None = None
    limit: Int64 = ANNOUNCEMENT_LIMIT


class AnnouncementRead(ClientFrame, tag="announcement.read"):
    announcement_id: Int64


class AnnouncementReact(ClientFrame, tag="announcement.react"):
    announcement_id: Int64
    emoji: Text


class AnnouncementUnreact(ClientFrame, tag="announcement.unreact"):
    announcement_id: Int64
    emoji: Text


class AnnouncementReply(ClientFrame, tag="announcement.reply"):
    """Always refused (R13, ``announcement.no_replies``); its fields are not read."""


class CollectiveSend(ClientFrame, tag="collective.send"):
    client_id: Text
    text: Text
    students: Ids = []
    groups: Ids = []


class CollectiveStatus(ClientFrame, tag="collective.status"):
    send_id: Int64


class NotificationList(ClientFrame, tag="notification.list"):
    child_id: Int64 | None = None
    before: Int64 | None = None
    limit: Int64 = NOTIFICATION_LIMIT


class NotificationOpen(ClientFrame, tag="notification.open"):
    notification_id: Int64


class NotificationReadAll(ClientFrame, tag="notification.read_all"):
    child_id: Int64 | None = None


class PreferencesGet(ClientFrame, tag="preferences.get"):
    pass


class PreferencesSet(ClientFrame, tag="preferences.set", kw_only=True):
    child_id: Int64 | None = None
    kind: Text
    enabled: Flag


class Ping(ClientFrame, tag="ping"):
    pass


class Signout(ClientFrame, tag="signout"):
    pass


class TokenRenew(ClientFrame, tag="token.renew"):
    token: Text


class LanguageSet(ClientFrame, tag="language.set"):
    language: Text


FRAME_CLASSES: tuple[type[ClientFrame], ...] = (
    Resume, ConversationCreate, ConversationRename, ConversationAdd, ConversationRemove, ConversationLeave,
    ConversationList, ConversationLock, ConversationUnlock, ConversationHistory, MessageSend, MessageEdit,
    MessageRetract, ReactionAdd, ReactionRemove, Read, Typing, AnnouncementPost, AnnouncementList,
    AnnouncementRead, AnnouncementReact, AnnouncementUnreact, AnnouncementReply, CollectiveSend,
    CollectiveStatus, NotificationList, NotificationOpen, NotificationReadAll, PreferencesGet, PreferencesSet,
    Ping, Signout, TokenRenew, LanguageSet,
)
for _cls in FRAME_CLASSES:
    _cls.TYPE = _cls.__struct_config__.tag
CLIENT_FRAMES: dict[str, type[ClientFrame]] = {cls.TYPE: cls for cls in FRAME_CLASSES}
AnyClientFrame = Union[FRAME_CLASSES]  # type: ignore[valid-type]
DECODER = msgspec.json.Decoder(AnyClientFrame)


def decode_frame(raw: str | bytes) -> ClientFrame | None:
    """The frame read from ``raw`` if it is valid as its Struct, else None: the
    caller then reads it with :func:`chat.frames.parse` and :func:`from_fields`,
    which give the error."""
    try:
        return DECODER.decode(raw)
    except (msgspec.MsgspecError, RecursionError):
        # msgspec skips unknown fields recursively within Python's recursion
        # limit: at the default (1000) a frame deeper than orjson's limit (1024)
        # is refused here too, and parse() gives its error.
        return None


# -- the reference path: Fields, field by field -------------------------------------------
def _reader(cls: type[ClientFrame], name: str, hint: Any) -> Callable[[Fields], Any]:
    """How Fields reads ``name`` of ``cls``: the same call the handlers made."""
    field = next(f for f in msgspec.structs.fields(cls) if f.name == name)
    required = field.required
    default = None if required else field.default
    options = list(get_args(hint)) if get_origin(hint) is Union else [hint]
    meta = next(m for option in options if get_origin(option) is Annotated
                for m in get_args(option)[1:] if isinstance(m, Meta) and m.extra)
    kind = meta.extra["read"]
    if kind == "int":
        return lambda f: f.int(name, required, default)
    if kind == "str":
        return lambda f: f.str(name, required, default)
    if kind == "bool":
        return lambda f: f.bool(name, required, default)
    if kind == "int_list":
        return partial(_list, "int_list", name, required)
    if kind == "str_list":
        return partial(_list, "str_list", name, required)
    if kind == "int_map":
        return lambda f: f.int_map(name)
    return partial(_raw, name)


def _list(method: str, name: str, required: bool, fields: Fields) -> list:
    return getattr(fields, method)(name, required=required)


def _raw(name: str, fields: Fields) -> Any:
    """The value as parsed (see :meth:`AnnouncementPost.audience_value`)."""
    value = fields.data.get(name)
    if value is None:
        raise BadRequest("request.missing_field", field=name)
    return value


_READERS: dict[type[ClientFrame], tuple[tuple[str, Callable[[Fields], Any]], ...]] = {
    cls: tuple((name, _reader(cls, name, hint))
               for name, hint in get_type_hints(cls, include_extras=True).items()
               if name not in ("id", "TYPE"))
    for cls in FRAME_CLASSES
}


def from_fields(cls: type[ClientFrame], fields: Fields, request_id: Any = None) -> ClientFrame:
    """``cls`` read from an already parsed frame with today's Fields checks, in
    the Struct's field order: the reference errors (``request.*``,
    ``text.control_characters``)."""
    values = {name: read(fields) for name, read in _READERS[cls]}
    return cls(id=request_id, **values)


def decode(data: str | bytes | dict[str, Any], cls: type[ClientFrame]) -> ClientFrame:
    """A frame of type ``cls`` from JSON text or a parsed dict, or the BadRequest
    that Fields gives for it (the frame's ``type`` and ``id`` are not checked)."""
    if not isinstance(data, dict):
        frame = decode_frame(data)
        if type(frame) is cls:
            return frame
        data = parse(data if isinstance(data, str) else data.decode())
    request_id = data.get("id")
    return from_fields(cls, Fields(data), request_id if isinstance(request_id, (int, str)) else None)


# -- the schema -----------------------------------------------------------------------------
class ErrorFrame(Struct, tag_field="type", tag="error", kw_only=True):
    """The server's ``error`` frame (docs/protocol.md §6, §10)."""

    id: RequestId = None
    code: Literal[tuple(ERRORS)]  # type: ignore[valid-type]
    message: str
    fields: dict[str, Any] = {}


SERVER_FRAME_TYPES = (
    "hello", "ok", "error", "event", "conversation.joined", "conversation.left", "read", "typing", "announcement",
    "announcement.reaction", "collective.progress", "notification.digest", "signed_out",
)


def schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of the client frames: the document validates
    one client frame; ``$defs`` also holds ``ErrorFrame`` (every error code) and
    ``ServerFrameType``."""
    (client, error), components = msgspec.json.schema_components(
        [AnyClientFrame, ErrorFrame], ref_template="#/$defs/{name}")
    components["ErrorFrame"]["description"] = ErrorFrame.__doc__
    for cls in FRAME_CLASSES:  # "optional fields may be omitted or null" (docs/protocol.md §5)
        properties = components[cls.__name__]["properties"]
        for field in msgspec.structs.fields(cls):
            if not field.required and field.default is not None:
                prop = properties[field.name]
                properties[field.name] = {"anyOf": [{k: v for k, v in prop.items() if k != "default"}, {"type": "null"}],
                                          "default": prop["default"]}
    components["ServerFrameType"] = {"enum": list(SERVER_FRAME_TYPES)}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "chat.v1 client frames",
        "description": "Generated by `python3 -m chat.protocol` from chat/protocol.py; see docs/protocol.md.",
        **client,
        "$defs": dict(sorted(components.items())),
    }


def main() -> None:
    sys.stdout.write(orjson.dumps(schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n")


if __name__ == "__main__":
    main()
