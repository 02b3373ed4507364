"""School-level rules read from the database: feature switches (R18), direction (R9, R10), audit.

The switches are cached per school for FEATURES_CACHE_SECONDS; every reader
takes the caller's :class:`~chat.storage.executor.Executor` so a check runs in
the caller's transaction.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from chat.errors import Conflict, Forbidden, NotFound
from chat.frames import dumps
from chat.policies import features
from chat.policies.facts import Role
from chat.storage import queries
from chat.storage.executor import Executor
from chat.storage.models import AuditEntry, Conversation, StaffSchool

# A school's feature switches are re-read at most this often (R18); a change
# made by reloading the directory applies within half a minute.
FEATURES_CACHE_SECONDS = 30.0


def audit(session: Any, actor: Any, school_id: int | None, action: str, target: str = "", **details: Any) -> None:
    """Append to the audit log, in the caller's ORM transaction (append-only table)."""
    session.add(AuditEntry(actor_id=actor.id if actor else None, school_id=school_id, action=action,
                           target=target, details=dumps(details)))


async def is_direction_of(session: Any, actor: Any, school_id: int) -> bool:
    """R9, R10: is ``actor`` (role, id) direction of that school?"""
    if actor.role != Role.DIRECTION.value:
        return False
    row = await session.get(StaffSchool, (actor.id, school_id))
    return row is not None


async def require_direction(session: Any, actor: Any, school_id: int) -> None:
    """R9, R10: only the direction of that school."""
    if not await is_direction_of(session, actor, school_id):
        raise Forbidden("direction.only")


async def conversation_directed_by(session: Any, actor: Any, conversation_id: int) -> Conversation:
    """The conversation, if ``actor`` is direction of its school (R9, R10):
    conversation.not_found when there is none, direction.only otherwise."""
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        raise NotFound("conversation.not_found", conversation_id=conversation_id)
    await require_direction(session, actor, conversation.school_id)
    return conversation


class Schools:
    """The R18 switches of each school, cached, and the checks built on them."""

    def __init__(self) -> None:
        self.features: dict[int, tuple[float, frozenset[str]]] = {}

    async def school_features(self, executor: Executor, school_id: int) -> frozenset[str]:
        """The features on at ``school_id`` (R18), read at most every FEATURES_CACHE_SECONDS."""
        now = time.monotonic()
        cached = self.features.get(school_id)
        if cached is not None and now - cached[0] < FEATURES_CACHE_SECONDS:
            return cached[1]
        raw = (await executor.execute(queries.FEATURES, {"school": school_id})).scalar_one_or_none()
        enabled = features.enabled_set(orjson.loads(raw) if raw else None)
        self.features[school_id] = (now, enabled)
        return enabled

    async def require_feature(self, executor: Executor, school_id: int, feature: str) -> None:
        """R18: feature.disabled unless ``feature`` is on at ``school_id``."""
        features.require(await self.school_features(executor, school_id), feature)

    async def writable(self, session: Any, conversation_id: int, feature: str = "messaging") -> Conversation:
        """The conversation, if it takes writes: messaging (and ``feature``) on (R18), not locked (R10)."""
        conversation = await session.get(Conversation, conversation_id)
        if conversation is None:
            raise NotFound("conversation.not_found", conversation_id=conversation_id)
        await self.require_feature(session, conversation.school_id, "messaging")
        if feature != "messaging":
            await self.require_feature(session, conversation.school_id, feature)
        if conversation.locked_at is not None:
            raise Conflict("conversation.locked")
        return conversation
