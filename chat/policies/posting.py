"""May this message be posted here now?  The send rule (R10, R18), on plain facts.

The send path (:mod:`chat.conversations.sending`, where a lone send is a batch
of one) calls these for each send, in this order: member, then the school's
switches, then the lock.
"""

from __future__ import annotations

from chat.errors import Conflict, NotFound
from chat.policies import features


def require_member(conversation_id: int, is_member: bool) -> None:
    """Only an active member of an existing conversation posts; anyone else learns
    nothing more than conversation.not_found."""
    if not is_member:
        raise NotFound("conversation.not_found", conversation_id=conversation_id)


def require_open(enabled: frozenset[str], locked: bool, feature: str = "messaging") -> None:
    """R18: messaging (and ``feature``, e.g. attachments) is on at the school; R10: not locked."""
    features.require(enabled, "messaging")
    if feature != "messaging":
        features.require(enabled, feature)
    if locked:
        raise Conflict("conversation.locked")
