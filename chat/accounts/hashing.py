"""The hashes of what people prove themselves with (R19–R21).

- Passwords: Argon2id (argon2-cffi) at OWASP's minimum for Argon2id, 19 MiB of
  memory, 2 passes, 1 lane: about 40 ms on one core of the benchmark machine.
  Hashing runs in a thread (argon2-cffi releases the GIL), never on the event
  loop.  A hash made with other parameters still verifies and is replaced at the
  next sign-in (``needs_rehash``).
- E-mail codes and NIPs: short, so an HMAC-SHA256 keyed from ``SECRET_KEY``
  (a stolen table alone does not give them back by brute force).  Rotating
  the key voids the codes and NIPs not yet used (docs/operations.md).
- Refresh credentials: 256 random bits, so a plain SHA-256.

Every comparison is in constant time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

ARGON2 = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16, type=Type.ID)
# What an unknown e-mail's "password" is checked against, so that it takes as long as a known one's.
_DUMMY = ARGON2.hash("not a password: equalises the time of a sign-in with an unknown e-mail")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(ARGON2.hash, password)


async def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored``; with no stored hash (unknown person, account not
    activated) a dummy is checked instead, so that the answer takes the same time."""
    return await asyncio.to_thread(_verify, stored, password)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return ARGON2.verify(stored or _DUMMY, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return ARGON2.check_needs_rehash(stored)


class Keyed:
    """HMAC-SHA256 under one key derived from ``SECRET_KEY`` for one use."""

    def __init__(self, secret_key: str, use: str) -> None:
        self.key = hmac.new(secret_key.encode(), f"chat-hub {use}".encode(), hashlib.sha256).digest()

    def digest(self, *parts: object) -> str:
        return hmac.new(self.key, "\x1f".join(map(str, parts)).encode(), hashlib.sha256).hexdigest()


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
