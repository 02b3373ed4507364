"""What a message may contain, and who may change it (R6, R8)."""

from __future__ import annotations

import unicodedata

from chat.errors import BadRequest, Conflict, Forbidden

# 4,000 characters: the longest notes parents and teachers write are a few
# paragraphs; anything longer belongs in an attachment (R7).  It keeps every
# fanned-out frame under 16 KiB of UTF-8, well inside the 64 KiB frame limit.
MAX_TEXT_CHARS = 4000
# Client ids are UUIDs in the reference widget; 64 leaves room for any scheme.
MAX_CLIENT_ID_CHARS = 64
# The longest emoji sequences (families, flags with ZWJ) are about 11 code points.
MAX_EMOJI_CODEPOINTS = 16

_EMOJI_JOINERS = {0x200D, 0xFE0F, 0xFE0E, 0x20E3}


def check_text(text: str) -> str:
    """Text is stored as given (never parsed as HTML); only emptiness and length count."""
    if not text.strip():
        raise BadRequest("message.text_empty")
    if len(text) > MAX_TEXT_CHARS:
        raise BadRequest("message.text_too_long", length=len(text), limit=MAX_TEXT_CHARS)
    return text


def check_client_id(client_id: str) -> str:
    """The sender's own id for a message: what makes a retried send idempotent."""
    if not 1 <= len(client_id) <= MAX_CLIENT_ID_CHARS or not client_id.isprintable():
        raise BadRequest("message.client_id_invalid", limit=MAX_CLIENT_ID_CHARS)
    return client_id


def _is_emoji_codepoint(cp: int) -> bool:
    if cp in _EMOJI_JOINERS:
        return True
    if 0x1F000 <= cp <= 0x1FAFF or 0x2600 <= cp <= 0x27BF or 0x2300 <= cp <= 0x23FF:
        return True
    if 0x1F1E6 <= cp <= 0x1F1FF or 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F:
        return True  # regional indicators, skin tones, tag sequences
    if cp in (0x00A9, 0x00AE, 0x203C, 0x2049, 0x2122, 0x2139, 0x3030, 0x303D, 0x3297, 0x3299):
        return True
    if 0x2190 <= cp <= 0x21FF or 0x2B00 <= cp <= 0x2BFF or 0x2900 <= cp <= 0x297F:
        return True
    return chr(cp) in "#*0123456789"  # keycap bases, valid only with U+20E3


def _is_modifier(cp: int) -> bool:
    """Variation selectors, skin tones and tag characters: they follow a base."""
    return cp in (0xFE0F, 0xFE0E) or 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F


def _is_single_sequence(cps: list[int]) -> bool:
    """One emoji: a flag (two regional indicators), a keycap, or bases with their
    modifiers joined by ZWJ; never two emoji side by side."""
    regional = [0x1F1E6 <= cp <= 0x1F1FF for cp in cps]
    if any(regional):
        return len(cps) == 2 and all(regional)
    if 0x20E3 in cps:
        return chr(cps[0]) in "#*0123456789" and cps[1:] in ([0x20E3], [0xFE0F, 0x20E3])
    part: list[int] = []
    for cp in [*cps, 0x200D]:
        if cp != 0x200D:
            part.append(cp)
            continue
        if not part or _is_modifier(part[0]) or not all(_is_modifier(c) for c in part[1:]):
            return False
        part = []
    return True


def check_emoji(emoji: str) -> str:
    """R6: a reaction is one emoji (a single sequence), not free text."""
    emoji = unicodedata.normalize("NFC", emoji)
    cps = [ord(c) for c in emoji]
    if not cps or len(cps) > MAX_EMOJI_CODEPOINTS or not all(_is_emoji_codepoint(cp) for cp in cps):
        raise BadRequest("reaction.invalid_emoji")
    if any(chr(cp) in "#*0123456789" for cp in cps) and 0x20E3 not in cps:
        raise BadRequest("reaction.invalid_emoji")
    if not _is_single_sequence(cps):
        raise BadRequest("reaction.invalid_emoji")
    return emoji


def check_change(actor_id: int, author_id: int | None, retracted: bool) -> None:
    """R8: only the author edits or retracts, and a retracted message stays retracted."""
    if actor_id != author_id:
        raise Forbidden("message.not_author")
    if retracted:
        raise Conflict("message.retracted")
