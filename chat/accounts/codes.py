"""R19: the 6-digit codes e-mailed to a person to prove the mailbox is theirs.

A code is for one purpose (``signup``: activate the account, ``signin``: the
second step, ``reset``: a new password) and is stored as an HMAC of the person,
the purpose and the code (:class:`chat.accounts.hashing.Keyed`).  It is spent
by its use, by a new code for the same purpose, by :data:`ATTEMPTS` wrong
tries, and is refused after its expiry (``CODE_TTL_SECONDS``, 15 minutes by
default).  Functions take the caller's ORM session: a code is issued and
checked in the transaction of what it allows.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select, update

from chat.accounts.hashing import Keyed, same
from chat.storage.models import EmailCode

PURPOSES = ("signup", "signin", "reset")
ATTEMPTS = 5  # wrong tries that spend a code


def new_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


class Codes:
    def __init__(self, secret_key: str, ttl_seconds: float) -> None:
        self.keyed = Keyed(secret_key, "e-mail codes")
        self.ttl_seconds = ttl_seconds

    async def issue(self, session: Any, person_id: int, purpose: str, now: float,
                    pending_hash: str | None = None) -> str:
        """A new code for ``purpose``; the previous ones for it are spent."""
        await session.execute(update(EmailCode).where(
            EmailCode.person_id == person_id, EmailCode.purpose == purpose, EmailCode.spent == False)  # noqa: E712
            .values(spent=True))
        code = new_code()
        session.add(EmailCode(person_id=person_id, purpose=purpose, code_hash=self.keyed.digest(person_id, purpose, code),
                              pending_hash=pending_hash, created_at=now, expires_at=now + self.ttl_seconds))
        return code

    async def take(self, session: Any, person_id: int | None, purpose: str, code: str, now: float) -> EmailCode | None:
        """The code row if ``code`` is the person's live code for ``purpose`` (and spend it);
        else None, counting a wrong try against the live code."""
        if person_id is None:
            self.keyed.digest(0, purpose, code)  # the same work as for a known person
            return None
        row = (await session.execute(select(EmailCode).where(
            EmailCode.person_id == person_id, EmailCode.purpose == purpose, EmailCode.spent == False)  # noqa: E712
            .order_by(EmailCode.id.desc()).limit(1).with_for_update())).scalar_one_or_none()
        expected = self.keyed.digest(person_id, purpose, code)
        if row is None:
            return None
        if row.expires_at <= now:
            row.spent = True
            return None
        if not same(row.code_hash, expected):
            row.attempts += 1
            row.spent = row.attempts >= ATTEMPTS
            return None
        row.spent = True
        return row
