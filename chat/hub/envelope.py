"""The broker envelope: ``header \\n frame``, and the channels it travels on.

The header (JSON) says who may receive the frame: ``c``/``s``/``m`` a
conversation event (conversation, seq, members at commit time), ``x`` the
person an ephemeral frame skips, ``r`` an audience's recipients, ``p``/``op``
a message for one person's connections.  The frame follows as it will be
sent, encoded once.
"""

from __future__ import annotations

from typing import Iterable

import orjson


def conversation_channel(conversation_id: int) -> str:
    return f"conv:{conversation_id}"


def person_channel(person_id: int) -> str:
    return f"person:{person_id}"


def envelope(header: dict, frame: str | None) -> bytes:
    """``header`` and ``frame`` as one broker message."""
    head = orjson.dumps(header)
    return head + b"\n" + frame.encode() if frame is not None else head + b"\n"


def event_message(conversation_id: int, seq: int, member_ids: Iterable[int], frame: str) -> tuple[str, bytes]:
    """A committed conversation event as published: its channel and envelope."""
    return conversation_channel(conversation_id), envelope(
        {"c": conversation_id, "s": seq, "m": list(member_ids)}, frame)


def open_envelope(data: bytes) -> tuple[dict, bytes]:
    """The header (decoded) and the frame's bytes (empty when none) of a broker message."""
    head, _, body = data.partition(b"\n")
    return orjson.loads(head), body
