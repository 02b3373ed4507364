"""Resuming a connection (docs/protocol.md section 3): replay, or reload over HTTP.

Pure decisions on the positions a client names and what the database says of
each conversation; :mod:`chat.conversations.reading` reads the facts and the
WebSocket session applies the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

# A client that was away for more than this many events reloads the
# conversation over HTTP instead of replaying it frame by frame.
RESUME_MAX_EVENTS = 1000


def reason_to_reload(position: int, found: tuple[int, int] | None) -> str | None:
    """None when the hub can replay a conversation from the client's ``position``;
    else why the client must reload it: ``not_member`` (``found`` is None: not an
    active member), ``unknown_position`` (past the last seq), ``too_old`` (more
    than RESUME_MAX_EVENTS to replay).  ``found``: (visible_from_seq, last_seq)."""
    if found is None:
        return "not_member"
    visible_from, last_seq = found
    if position > last_seq:
        return "unknown_position"
    if last_seq - max(position, visible_from - 1) > RESUME_MAX_EVENTS:
        return "too_old"
    return None


@dataclass
class ResumePlan:
    """What a starting connection does per conversation: replay ``resumed`` from
    the client's positions, ``reset`` entries the client reloads, ``live`` the
    conversations followed from their last seq (id -> seq) without replay."""

    resumed: list[int] = field(default_factory=list)
    reset: list[dict[str, Any]] = field(default_factory=list)
    live: dict[int, int] = field(default_factory=dict)


def plan(positions: Mapping[int, int], reasons: Mapping[int, str | None], latest: Mapping[int, int]) -> ResumePlan:
    """The plan for a client naming ``positions`` (id -> its last seq), given
    ``reasons`` (id -> reason_to_reload) and ``latest`` (the person's active
    conversations, id -> last seq).  A reset entry carries the last seq to
    reload up to when the person is still a member; every active conversation
    not resumed is followed live from its last seq."""
    result = ResumePlan()
    for conversation_id in positions:
        reason = reasons[conversation_id]
        if reason is not None:
            entry: dict[str, Any] = {"conversation_id": conversation_id, "reason": reason}
            if conversation_id in latest:
                entry["last_seq"] = latest[conversation_id]
            result.reset.append(entry)
            continue
        result.resumed.append(conversation_id)
    resumed = set(result.resumed)
    result.live = {cid: seq for cid, seq in latest.items() if cid not in resumed}
    return result
