"""Encoding of the frames the server sends, and decoding of what clients send.

Frames are JSON text.  Server frames are built here once and the same string
is sent to every recipient.  Client frames are checked field by field with
errors that say what was expected and what came (``request.wrong_type``).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

import orjson

from chat.errors import BadRequest
from chat.policies.text import check_no_control_characters


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def timestamp(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and a Z: 2026-11-26T12:00:00.000Z."""
    if moment is None:
        return None
    if moment.utcoffset() is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds") + "Z"


def event_frame(kind: str, conversation_id: int, seq: int, actor: int | None, at: datetime, **data: Any) -> str:
    """A conversation event as members receive it, live or replayed."""
    frame: dict[str, Any] = {
        "type": "event",
        "kind": kind,
        "conversation_id": conversation_id,
        "seq": seq,
        "actor": actor,
        "at": timestamp(at),
    }
    frame.update(data)
    return dumps(frame)


def reply(request_id: Any, **data: Any) -> str:
    return dumps({"type": "ok", "id": request_id, **data})


def error_frame(request_id: Any, body: dict[str, Any]) -> str:
    return dumps({"type": "error", "id": request_id, **body})


# Ids and seqs are 64-bit signed integers (docs/protocol.md §1): the database's
# BIGINT (PostgreSQL, migration 0009) and INTEGER (SQLite).  A value outside
# is refused when the frame or request is read, before it reaches a query.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# A plain decimal integer as text (a JSON object key, a URL's path or query):
# an optional minus and ASCII digits.  Python's int() also takes spaces,
# underscores, a plus sign and non-ASCII digits.
_DECIMAL = re.compile(r"-?[0-9]{1,19}")


def is_int64(value: Any) -> bool:
    """A JSON integer (not a boolean) within the 64-bit range."""
    return isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX


def decimal_int64(raw: str) -> int | None:
    """``raw`` as an integer if it is a plain decimal integer within the 64-bit
    range, else None.  At most 20 characters are read: a longer string of
    digits is out of range without being converted."""
    if _DECIMAL.fullmatch(raw) is None:
        return None
    value = int(raw)
    return value if INT64_MIN <= value <= INT64_MAX else None


_TYPE_NAMES = {str: "string", int: "integer", bool: "boolean", list: "array", dict: "object", float: "number"}


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def parse(text: str) -> dict[str, Any]:
    """A client frame as a dict, or BadRequest saying what is wrong with it."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("request.invalid_json", detail=str(exc).split(":")[0]) from None
    if not isinstance(value, dict):
        raise BadRequest("request.not_object", got=type_name(value))
    return value


class Fields:
    """Typed access to a client frame's fields."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def _get(self, name: str, kinds: tuple[type, ...], expected: str, required: bool, default: Any) -> Any:
        if name not in self.data or self.data[name] is None:
            if required:
                raise BadRequest("request.missing_field", field=name)
            return default
        value = self.data[name]
        # bool is a subclass of int: refuse true/false where a number is meant.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise BadRequest("request.wrong_type", field=name, expected=expected, got=type_name(value))
        return value

    def str(self, name: str, required: bool = True, default: str | None = None) -> Any:
        value = self._get(name, (str,), "string", required, default)
        # Every text a client sends passes here: one rule on both backends (text.control_characters).
        return value if value is None else check_no_control_characters(value, name)

    def int(self, name: str, required: bool = True, default: int | None = None) -> Any:
        value = self._get(name, (int,), "integer", required, default)
        if value is not None and not INT64_MIN <= value <= INT64_MAX:
            raise BadRequest("request.wrong_type", field=name, expected="64-bit integer", got="larger number")
        return value

    def bool(self, name: str, required: bool = True, default: bool | None = None) -> Any:
        return self._get(name, (bool,), "boolean", required, default)

    def int_list(self, name: str, required: bool = True) -> list[int]:
        values = self._get(name, (list,), "array of integers", required, [])
        if len(values) > 1000 or not all(is_int64(v) for v in values):
            raise BadRequest("request.wrong_type", field=name, expected="array of integers", got="other")
        return values

    def str_list(self, name: str, required: bool = True, limit: int = 100) -> list[str]:
        values = self._get(name, (list,), "array of strings", required, [])
        if len(values) > limit or not all(isinstance(v, str) and len(v) <= 64 for v in values):
            raise BadRequest("request.wrong_type", field=name, expected="array of strings", got="other")
        for value in values:
            check_no_control_characters(value, name)
        return values

    def int_map(self, name: str) -> dict[int, int]:
        """{"12": 40, …}: conversation id → seq, as JSON object keys are strings."""
        raw = self._get(name, (dict,), "object of integers", True, {})
        result: dict[int, int] = {}
        if len(raw) > 10000:
            raise BadRequest("request.wrong_type", field=name, expected="at most 10000 entries", got=str(len(raw)))
        for key, value in raw.items():
            conversation_id = decimal_int64(key)
            if conversation_id is None:
                raise BadRequest("request.wrong_type", field=name, expected="64-bit integer keys", got=key[:20])
            if not is_int64(value) or value < 0:
                raise BadRequest("request.wrong_type", field=name, expected="non-negative integers", got=type_name(value))
            result[conversation_id] = value
        return result
