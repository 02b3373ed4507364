"""Who may read an attachment (R4, R7, R8): a decision on plain facts."""

from __future__ import annotations


def may_download(actor_id: int, owner_id: int, posted: bool, member: bool, visible_from_seq: int,
                 message_seq: int, retracted: bool) -> bool:
    """May ``actor_id`` read an upload owned by ``owner_id``?

    Its uploader always may (R7).  Anyone else only once it is ``posted`` in a
    message, while they are an active ``member`` of that conversation, the
    message is within what they may see (``message_seq >= visible_from_seq``,
    R4: a member added without history) and it is not retracted (R8)."""
    if actor_id == owner_id:
        return True
    return posted and member and not retracted and message_seq >= visible_from_seq
