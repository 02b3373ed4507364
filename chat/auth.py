"""Access tokens: signed (HS256), short-lived JWTs carrying the person, their
role and their session (``sid``).

This module only mints and checks signatures and expiry; whether the person
still exists and the session has not ended (R21) is checked against the
database by :meth:`chat.people.People.authenticate`.  Tokens are minted by
:mod:`chat.accounts` when a session starts or is refreshed (R19).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

from chat.errors import Unauthenticated

ALGORITHM = "HS256"
AUDIENCE = "chat-hub"


@dataclass(frozen=True)
class Claims:
    person_id: int
    role: str
    issued_at: float
    expires_at: float
    token_id: str
    session_id: str


def mint(secret: str, person_id: int, role: str, ttl_seconds: int, session_id: str,
         now: float | None = None) -> str:
    """A new access token for ``person_id`` in ``session_id`` valid for ``ttl_seconds``."""
    now = time.time() if now is None else now
    payload = {
        "sub": str(person_id),
        "sid": session_id,
        "role": role,
        "iat": now,
        "exp": int(now + ttl_seconds),
        "aud": AUDIENCE,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def decode(secret: str, token: str, now: float | None = None) -> Claims:
    """Check signature, audience and expiry; raise Unauthenticated with the reason."""
    if not token:
        raise Unauthenticated("auth.missing_token")
    options = {"require": ["sub", "sid", "exp", "iat", "aud", "jti"]}
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            options=options,
            leeway=0,
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("auth.expired_token") from None
    except jwt.PyJWTError:
        raise Unauthenticated("auth.invalid_token") from None
    if now is not None and payload["exp"] <= now:
        raise Unauthenticated("auth.expired_token")
    try:
        person_id = int(payload["sub"])
    except (TypeError, ValueError):
        raise Unauthenticated("auth.invalid_token") from None
    if not isinstance(payload["sid"], str) or not payload["sid"]:
        raise Unauthenticated("auth.invalid_token")
    return Claims(person_id, str(payload.get("role", "")), float(payload["iat"]), float(payload["exp"]),
                  str(payload["jti"]), payload["sid"])


def bearer_from_headers(authorization: str | None, subprotocols: list[str] | None = None) -> str | None:
    """The token from ``Authorization: Bearer …`` or, for browsers that cannot set
    headers on a WebSocket, from a ``bearer.<token>`` subprotocol — never from a URL."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for proto in subprotocols or ():
        if proto.startswith("bearer."):
            return proto[len("bearer.") :]
    return None
