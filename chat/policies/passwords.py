"""R19: what a password must be.  Pure: the caller hashes what passes.

At least 8 characters with an upper-case letter, a lower-case letter, and a
digit or a symbol; at most 256 characters (a hash of more proves nothing more
and costs the server); and not one of the common passwords shipped in
``data/common-passwords.txt``, compared without case, nor one of them followed
by digits or symbols ("Soleil123!").  Each rule refused has its own code, so
that the widget can say which one.
"""

from __future__ import annotations

import string
from importlib import resources

MIN_LENGTH = 8
MAX_LENGTH = 256
TAIL = string.digits + string.punctuation + " "


def _common() -> frozenset[str]:
    text = resources.files("chat.policies").joinpath("data/common-passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


COMMON = _common()


def refusal(password: str) -> str | None:
    """The code of the first rule ``password`` breaks, or None if it is acceptable."""
    if len(password) < MIN_LENGTH:
        return "password.too_short"
    if len(password) > MAX_LENGTH:
        return "password.too_long"
    if not any(c.isupper() for c in password):
        return "password.no_upper"
    if not any(c.islower() for c in password):
        return "password.no_lower"
    if not any(not c.isalpha() for c in password):
        return "password.no_digit_or_symbol"
    lowered = password.lower()
    if lowered in COMMON or lowered.rstrip(TAIL) in COMMON:
        return "password.too_common"
    return None
