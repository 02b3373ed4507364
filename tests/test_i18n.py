"""R22: every message the server writes for people exists in French and English,
and French is the default.  The catalogue is also checked against the source:
every error code the package raises must have its texts.
"""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pytest

import chat
from chat import errors
from chat.errors import BadRequest, ChatError
from chat.i18n import (
    ARCHIVE,
    CATALOGUE,
    DEFAULT_LANGUAGE,
    ERRORS,
    NOTIFICATIONS,
    SYSTEM,
    error_text,
    normalise_language,
    system_text,
    text,
)

PACKAGE = Path(chat.__file__).parent
ERROR_CLASSES = {
    name: cls for name, cls in vars(errors).items() if isinstance(cls, type) and issubclass(cls, ChatError)
}
# ConfigError stops the start-up and is printed by config.describe(); it never reaches a client.
NEVER_SENT = {"ConfigError"}


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def raised_codes() -> dict[str, list[str]]:
    """code → places, for every construction of a ChatError class in chat/**/*.py.

    ``BadRequest("x.y", …)`` gives ``x.y``; ``code="x.y"`` likewise; a
    construction without a literal code (``RateLimited(wait)``) gives the
    class's default code.  Direct look-ups, ``error_text("x.y", …)`` (frames
    built by hand, e.g. in chat/hub.py), count too.
    """
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            cls = ERROR_CLASSES.get(node.func.id)
            if (cls is None and node.func.id != "error_text") or node.func.id in NEVER_SENT:
                continue
            literal = [kw.value for kw in node.keywords if kw.arg == "code"] or node.args[:1]
            if literal and isinstance(literal[0], ast.Constant) and isinstance(literal[0].value, str):
                code = literal[0].value
            elif cls is not None and (node.func.id == "RateLimited" or not literal):
                code = cls.code
            else:
                continue  # a code computed at run time: nothing to check statically
            found.setdefault(code, []).append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return found


# --- the catalogue --------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_r22_every_error_code_has_french_and_english_text(code):
    french, english = ERRORS[code]
    assert french.strip() and english.strip()


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_r22_french_and_english_error_texts_use_the_same_fields(code):
    french, english = ERRORS[code]
    assert placeholders(french) == placeholders(english)


@pytest.mark.parametrize("code", sorted(SYSTEM))
def test_r22_every_system_message_has_french_and_english_text_with_the_same_fields(code):
    french, english = SYSTEM[code]
    assert french.strip() and english.strip()
    assert placeholders(french) == placeholders(english)


@pytest.mark.parametrize("code", sorted(NOTIFICATIONS) + sorted(ARCHIVE))
def test_r22_every_notification_and_archive_label_has_french_and_english_text_with_the_same_fields(code):
    french, english = CATALOGUE[code]
    assert french.strip() and english.strip()
    assert placeholders(french) == placeholders(english)


def test_the_catalogue_sections_are_disjoint_so_a_code_names_one_text():
    sections = (ERRORS, SYSTEM, NOTIFICATIONS, ARCHIVE)
    assert len(CATALOGUE) == sum(len(section) for section in sections)


def test_every_archive_label_the_export_uses_is_in_the_catalogue():
    """The HTML export's template and module take their labels from chat/i18n.py only."""
    used = set()
    for path in (PACKAGE / "archive" / "export.py", *(PACKAGE / "archive" / "templates").glob("*.html")):
        used |= set(re.findall(r"[\"'](archive\.[a-z_]+(?:\.[a-z_]+)?)[\"']", path.read_text(encoding="utf-8")))
    assert {"archive.title", "archive.locked", "archive.lock_event"} <= used
    assert used - set(CATALOGUE) == set()


def test_text_looks_any_code_up_and_fills_its_fields():
    assert text("archive.number", "en", {"id": 7}) == "no. 7"
    assert text("archive.number", fields={"id": 7}) == "n° 7"
    assert text("mail.greeting", "en", {"name": "Marie"}) == "Hello Marie,"
    assert text("message.text_empty", "de") == "Le message est vide."
    with pytest.raises(KeyError):
        text("archive.no_such_label")


def test_source_scan_finds_the_codes_raised_in_the_package():
    # Guards the scan itself: if the AST walk stopped finding calls,
    # the completeness test below would pass with nothing to check.
    found = raised_codes()
    assert {"conversation.no_staff", "directory.invalid", "message.text_too_long", "rate_limited",
            "auth.expired_token", "request.unknown_type", "internal.error"} <= set(found)
    assert len(found) >= 40


def test_r22_every_error_code_raised_in_the_package_has_its_texts():
    missing = {code: places for code, places in raised_codes().items() if code not in ERRORS}
    assert missing == {}


# --- looking texts up -----------------------------------------------------------------


def test_error_text_fills_the_fields_in_english():
    text = error_text("message.text_too_long", "en", {"length": 4001, "limit": 4000})
    assert text == "The message is 4001 characters long; the limit is 4000."


def test_error_text_fills_the_fields_in_french():
    text = error_text("message.text_too_long", "fr", {"length": 4001, "limit": 4000})
    assert text == "Le message fait 4001 caractères; la limite est de 4000."


def test_error_text_with_a_missing_field_keeps_the_placeholder_instead_of_failing():
    assert error_text("rate_limited", "en", {}) == "Too many requests. Retry in {retry_after} s."


def test_unknown_error_code_gets_the_generic_text():
    assert error_text("no.such.code", "en") == "An error occurred."


def test_r22_french_is_the_default_language():
    assert DEFAULT_LANGUAGE == "fr"
    assert error_text("message.text_empty") == "Le message est vide."


def test_r22_an_unsupported_language_falls_back_to_french():
    assert error_text("message.text_empty", "de") == "Le message est vide."


def test_r22_error_sent_to_a_client_is_french_by_default():
    body = BadRequest("conversation.name_too_long", limit=100).to_dict()
    assert body == {
        "code": "conversation.name_too_long",
        "message": "Le nom de la conversation dépasse 100 caractères.",
        "fields": {"limit": 100},
    }


def test_r22_system_message_carries_both_languages():
    assert system_text("system.left", fields={"actor": "Jean Tremblay"}) == {
        "fr": "Jean Tremblay a quitté la conversation.",
        "en": "Jean Tremblay left the conversation.",
    }


@pytest.mark.parametrize(
    ("tag", "expected"),
    [("en-CA", "en"), ("en", "en"), ("EN-us", "en"), ("fr-CA", "fr"), ("fr", "fr"), ("de", "fr"), ("", "fr"),
     (None, "fr")],
)
def test_r22_normalise_language_maps_tags_to_fr_or_en(tag, expected):
    assert normalise_language(tag) == expected
