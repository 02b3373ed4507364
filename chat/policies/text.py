"""Which characters text may hold, wherever it enters, and how names are made
safe to show.

Two rules, on plain strings, the same on every backend:

* **Control characters are refused** (``text.control_characters``) in every
  text a client sends — each string field of a frame or JSON body, the archive
  search text — and in the directory file: Unicode's control characters
  (category Cc: U+0000–U+001F, U+007F–U+009F) except tab, line feed and
  carriage return, which plain text uses.  PostgreSQL cannot store U+0000 at
  all, SQLite can: refusing it everywhere is what makes the answer the same
  on both.  The others have no glyph and no use in a note to a teacher; some
  (ESC, U+009B) start terminal escape sequences in whoever reads a log or an
  export.  Lone surrogates are refused with them: no JSON the hub parses can
  carry one, but a directory file read by Python's ``json`` can, and neither
  database driver can encode it.
* **Bidirectional controls are removed from names** (people, schools, groups,
  students, conversations, integration sources): the embeddings, overrides
  and isolates (U+202A–U+202E, U+2066–U+2069) and the marks (U+200E, U+200F,
  U+061C).  A name is shown inline, next to other text, to every member:
  "‮gnp.exe" would read "exe.png", and an unclosed override would reverse the
  names after it.  Upload names lose them too (``policies/attachments.py``
  ``safe_filename`` drops every format character, a wider set that suits file
  names).  Message texts, announcements and lock reasons keep them: Arabic or
  Hebrew-speaking families write with them, and a text is shown as a block of
  its own (docs/protocol.md §1).
"""

from __future__ import annotations

import re

from chat.errors import BadRequest

# Category Cc minus tab, line feed and carriage return; and lone surrogates (Cs).
_REFUSED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")

BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_WITHOUT_BIDI = str.maketrans(dict.fromkeys(map(ord, BIDI_CONTROLS)))


def refused_character(text: str) -> str | None:
    """The first character of ``text`` that text may not hold, as ``U+XXXX``, or None."""
    found = _REFUSED.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


def check_no_control_characters(text: str, field: str) -> str:
    """``text`` unchanged, or ``text.control_characters`` naming ``field`` and the
    first refused character (one scan of the string)."""
    character = refused_character(text)
    if character is not None:
        raise BadRequest("text.control_characters", field=field, character=character)
    return text


def strip_bidi_controls(name: str) -> str:
    """A display name without bidirectional embeddings, overrides, isolates and
    marks; every other character kept (ZWJ in emoji, ZWNJ in Persian names)."""
    return name.translate(_WITHOUT_BIDI)
