"""R21: signed-in devices (``authsession`` rows) and their refresh credentials.

A session is made at sign-in.  Its access tokens (short-lived JWTs, chat.auth)
carry its id as ``sid``; its refresh credential, ``<session id>.<256 random
bits>``, is stored only as a SHA-256 and is replaced at each use (rotation).
A credential that was already replaced, shown again, means that two parties
hold it: the whole session ends (``reuse``), the thief's tokens and the
owner's alike, and the owner signs in again.  A session not refreshed for
``SESSION_TTL_SECONDS`` (30 days by default) ends by itself.

Functions take the caller's ORM session and the time; ending sessions only
writes rows, the caller closes their sockets (``Hub.publish_person``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import select, update

from chat.accounts.hashing import same, sha256
from chat.storage.models import AuthSession

USER_AGENT_LIMIT = 200


@dataclass(frozen=True)
class Issued:
    session_id: str
    refresh_token: str


def _credential(session_id: str) -> tuple[str, str]:
    secret = secrets.token_urlsafe(32)
    return f"{session_id}.{secret}", sha256(secret)


def start(session: Any, person_id: int, user_agent: str, now: float, ttl_seconds: float) -> Issued:
    session_id = secrets.token_urlsafe(16)
    token, digest = _credential(session_id)
    session.add(AuthSession(id=session_id, person_id=person_id, refresh_hash=digest,
                            user_agent=user_agent[:USER_AGENT_LIMIT], created_at=now, last_used_at=now,
                            expires_at=now + ttl_seconds))
    return Issued(session_id, token)


@dataclass(frozen=True)
class Rotation:
    """What a refresh credential gave: ``issued`` (new credential), or the session
    that ``ended`` because the credential was an old one (theft detection)."""

    row: AuthSession | None
    issued: Issued | None = None
    ended: bool = False


async def rotate(session: Any, refresh_token: str, now: float, ttl_seconds: float) -> Rotation:
    session_id, _, secret = refresh_token.partition(".")
    if not session_id or not secret or len(session_id) > 32:
        return Rotation(None)
    row = (await session.execute(select(AuthSession).where(AuthSession.id == session_id)
                                 .with_for_update())).scalar_one_or_none()
    if row is None or row.ended_at is not None:
        return Rotation(None)
    if row.expires_at <= now:
        end_rows([row], now, "expired")
        return Rotation(row, ended=True)
    if not same(row.refresh_hash, sha256(secret)):
        end_rows([row], now, "reuse")
        return Rotation(row, ended=True)
    token, digest = _credential(session_id)
    row.refresh_hash = digest
    row.last_used_at = now
    row.expires_at = now + ttl_seconds
    return Rotation(row, Issued(session_id, token))


def end_rows(rows: Sequence[AuthSession], now: float, because: str) -> list[str]:
    for row in rows:
        row.ended_at = now
        row.ended_because = because
    return [row.id for row in rows]


async def end(session: Any, person_id: int, now: float, because: str, only: str | None = None,
              keep: str | None = None) -> list[str]:
    """End the person's live sessions (``only`` that one; all but ``keep``); their ids."""
    query = select(AuthSession.id).where(AuthSession.person_id == person_id, AuthSession.ended_at.is_(None))
    if only is not None:
        query = query.where(AuthSession.id == only)
    if keep is not None:
        query = query.where(AuthSession.id != keep)
    ids = list((await session.execute(query)).scalars())
    if ids:
        await session.execute(update(AuthSession).where(AuthSession.id.in_(ids))
                              .values(ended_at=now, ended_because=because))
    return ids


async def live(session: Any, person_id: int, now: float) -> list[AuthSession]:
    return list((await session.execute(select(AuthSession).where(
        AuthSession.person_id == person_id, AuthSession.ended_at.is_(None), AuthSession.expires_at > now)
        .order_by(AuthSession.last_used_at.desc()))).scalars())
