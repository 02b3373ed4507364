"""What a message may contain and who may change it (R6, R8), and the token
bucket behind rate limiting.  Pure policies: plain values, no server, and
explicit ``now`` values instead of the clock.
"""

from __future__ import annotations

import pytest

from chat.errors import BadRequest, ChatError, Conflict, Forbidden
from chat.policies.messages import (
    MAX_CLIENT_ID_CHARS,
    MAX_EMOJI_CODEPOINTS,
    MAX_TEXT_CHARS,
    check_change,
    check_client_id,
    check_emoji,
    check_text,
)
from chat.policies.ratelimit import Bucket, take


def refusal(call, *args) -> ChatError:
    with pytest.raises(ChatError) as info:
        call(*args)
    return info.value


# --- check_text -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", " ", " \n\t  "], ids=["empty", "space", "whitespace"])
def test_empty_or_whitespace_text_is_refused(text):
    error = refusal(check_text, text)
    assert isinstance(error, BadRequest)
    assert error.code == "message.text_empty"


def test_text_of_max_length_is_accepted():
    text = "é" * MAX_TEXT_CHARS  # characters, not bytes: 8,000 bytes of UTF-8
    assert check_text(text) == text


def test_text_one_character_over_the_limit_is_refused():
    error = refusal(check_text, "a" * (MAX_TEXT_CHARS + 1))
    assert error.code == "message.text_too_long"
    assert error.fields == {"length": MAX_TEXT_CHARS + 1, "limit": MAX_TEXT_CHARS}


def test_html_is_stored_as_given_and_returned_unchanged():
    text = '<b>Bonjour</b> <script>alert("x")</script> &amp; <a href="javascript:x">lien</a>'
    assert check_text(text) == text


def test_text_is_not_trimmed():
    text = "  Bonjour,\n\nmerci.  \n"
    assert check_text(text) == text


# --- check_client_id ------------------------------------------------------------------


def test_uuid_client_id_is_accepted():
    assert check_client_id("0b7f6d1e-3f2a-4c59-9d1e-8a2b6c4d5e6f") == "0b7f6d1e-3f2a-4c59-9d1e-8a2b6c4d5e6f"


def test_client_id_of_max_length_is_accepted():
    assert check_client_id("c" * MAX_CLIENT_ID_CHARS) == "c" * MAX_CLIENT_ID_CHARS


@pytest.mark.parametrize("client_id", ["", "c" * (MAX_CLIENT_ID_CHARS + 1), "abc\n", "a\x00b"],
                         ids=["empty", "too-long", "newline", "nul"])
def test_invalid_client_id_is_refused(client_id):
    error = refusal(check_client_id, client_id)
    assert error.code == "message.client_id_invalid"
    assert error.fields == {"limit": MAX_CLIENT_ID_CHARS}


# --- check_emoji (R6) -----------------------------------------------------------------


@pytest.mark.parametrize(
    "emoji",
    [
        "👍",
        "❤️",  # heart + VS16
        "👨\u200d👩\u200d👧\u200d👦",  # ZWJ family
        "👍🏽",  # skin tone
        "🇨🇦",  # flag: two regional indicators
        "1️⃣",  # keycap: digit + VS16 + U+20E3
        "#️⃣",
    ],
    ids=["thumbs-up", "heart", "zwj-family", "skin-tone", "flag", "keycap-1", "keycap-hash"],
)
def test_r6_a_single_emoji_is_accepted(emoji):
    assert check_emoji(emoji) == emoji


@pytest.mark.parametrize(
    "text",
    ["ok", "<script>", "", "1", "👍 ok"],
    ids=["plain-text", "html", "empty", "bare-digit", "emoji-with-text"],
)
def test_r6_text_that_is_not_an_emoji_is_refused(text):
    error = refusal(check_emoji, text)
    assert isinstance(error, BadRequest)
    assert error.code == "reaction.invalid_emoji"


def test_r6_emoji_sequence_longer_than_the_limit_is_refused():
    # A ZWJ chain of 17 code points: every one is an emoji code point, only the length is wrong.
    emoji = "👨" + "\u200d👩" * 8
    assert len(emoji) == MAX_EMOJI_CODEPOINTS + 1
    assert refusal(check_emoji, emoji).code == "reaction.invalid_emoji"


def test_r6_emoji_sequence_at_the_limit_is_accepted():
    emoji = "👨" + "\u200d👩" * 7 + "\ufe0f"
    assert len(emoji) == MAX_EMOJI_CODEPOINTS
    assert check_emoji(emoji) == emoji


# passes, so "👍👍", "😀😀😀", half a flag "🇨" or two flags are accepted as "one emoji".
# R6 counts reactions per emoji, so a multi-emoji "reaction" splits the counts.
# Proposed patch in the final report (a _is_single_sequence structural check).
@pytest.mark.parametrize("text", ["👍👍", "😀😀😀", "🇨", "🇨🇦🇫🇷"],
                         ids=["two-thumbs", "three-faces", "half-flag", "two-flags"])
def test_r6_several_emoji_are_not_one_reaction(text):
    assert refusal(check_emoji, text).code == "reaction.invalid_emoji"


# --- check_change (R8) ----------------------------------------------------------------


def test_r8_author_may_change_their_message():
    check_change(actor_id=7, author_id=7, retracted=False)  # no error


def test_r8_someone_else_may_not_change_a_message():
    error = refusal(check_change, 8, 7, False)
    assert isinstance(error, Forbidden)
    assert error.code == "message.not_author"


def test_r8_a_retracted_message_cannot_be_changed_again():
    error = refusal(check_change, 7, 7, True)
    assert isinstance(error, Conflict)
    assert error.code == "message.retracted"


def test_r8_someone_else_is_told_not_author_even_for_a_retracted_message():
    assert refusal(check_change, 8, 7, True).code == "message.not_author"


def test_r8_system_message_without_author_cannot_be_changed_by_anyone():
    # A system message (R4) has no author; nobody is its author, so nobody changes it.
    error = refusal(check_change, 7, None, False)
    assert isinstance(error, Forbidden)
    assert error.code == "message.not_author"


# --- ratelimit.take -------------------------------------------------------------------


def drain(bucket: Bucket | None, now: float, rate: float, burst: float, times: int) -> tuple[Bucket | None, list[float]]:
    waits = []
    for _ in range(times):
        bucket, wait = take(bucket, now, rate, burst)
        waits.append(wait)
    return bucket, waits


def test_a_full_burst_is_allowed_at_once():
    _, waits = drain(None, 100.0, rate=2.0, burst=4.0, times=4)
    assert waits == [0.0, 0.0, 0.0, 0.0]


def test_one_more_than_the_burst_must_wait_one_token_time():
    bucket, _ = drain(None, 100.0, rate=2.0, burst=4.0, times=4)
    _, wait = take(bucket, 100.0, rate=2.0, burst=4.0)
    assert wait == 0.5  # one token at 2 tokens per second


def test_wait_accounts_for_tokens_refilled_since():
    bucket, _ = drain(None, 100.0, rate=2.0, burst=4.0, times=4)
    _, wait = take(bucket, 100.25, rate=2.0, burst=4.0)  # half a token back
    assert wait == 0.25


def test_a_refused_take_does_not_consume_tokens():
    bucket, _ = drain(None, 100.0, rate=2.0, burst=4.0, times=4)
    bucket, first = take(bucket, 100.0, rate=2.0, burst=4.0)
    bucket, second = take(bucket, 100.0, rate=2.0, burst=4.0)
    assert first == second == 0.5


def test_waiting_the_given_time_lets_the_same_call_pass():
    bucket, _ = drain(None, 100.0, rate=2.0, burst=4.0, times=4)
    bucket, wait = take(bucket, 100.0, rate=2.0, burst=4.0)
    assert wait > 0
    _, after = take(bucket, 100.0 + wait, rate=2.0, burst=4.0)
    assert after == 0.0


def test_tokens_refill_over_time_at_the_rate():
    bucket, _ = drain(None, 100.0, rate=2.0, burst=4.0, times=4)
    bucket, waits = drain(bucket, 101.0, rate=2.0, burst=4.0, times=3)  # one second: two tokens
    assert waits[:2] == [0.0, 0.0]
    assert waits[2] == 0.5


def test_refill_never_exceeds_the_burst():
    bucket, _ = drain(None, 100.0, rate=2.0, burst=4.0, times=4)
    _, waits = drain(bucket, 10_000.0, rate=2.0, burst=4.0, times=5)  # idle for hours
    assert waits[:4] == [0.0] * 4
    assert waits[4] == 0.5


def test_a_costly_action_takes_several_tokens():
    bucket, wait = take(None, 100.0, rate=1.0, burst=4.0, cost=3.0)
    assert wait == 0.0
    assert bucket.tokens == 1.0
    _, wait = take(bucket, 100.0, rate=1.0, burst=4.0, cost=3.0)
    assert wait == 2.0
