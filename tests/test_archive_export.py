"""The archive's HTML export drawn from its template, without a server (R9, R22).

``chat.archive.render_html`` on plain documents: every text a person wrote —
a message and its earlier versions, a name, a lock reason, a file name, an
emoji, a system text — reaches the page escaped, wherever it stands; the
labels follow the reader's language.  tests/test_archive.py shows the same
export through the HTTP route on both backends.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from chat.archive import HTML_CSP, render_html
from chat.people import Actor

HOSTILE = '<script>alert("x")</script> & <img src=x onerror=alert(1)> \'q\''
ESCAPED = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt; &#x27;q&#x27;"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def person(person_id: int, name: str | None, role: str | None = "parent") -> dict:
    return {"id": person_id, "name": name, "role": role}


def document() -> dict:
    """A conversation where every text a person chose is hostile."""
    author = person(1, HOSTILE)
    return {
        "id": 7, "name": HOSTILE,
        "school": {"id": 1, "name": HOSTILE, "timezone": "America/Toronto"},
        "child": {"id": 3, "name": HOSTILE},
        "creator": author, "created_at": "2026-11-26T13:00:00Z", "last_message_at": None, "last_seq": 3,
        "locked": True, "locked_at": "2026-11-27T13:00:00Z", "locked_by": person(9, HOSTILE, "direction"),
        "lock_reason": HOSTILE,
        "participants": [author | {"active": True, "joined_at": "2026-11-26T13:00:00Z", "left_at": None},
                         person(2, "Jean", HOSTILE) | {"active": False, "joined_at": "2026-11-26T13:00:00Z",
                                                      "left_at": "2026-11-27T13:00:00Z"}],
        "messages": [{
            "id": 1, "seq": 1, "author": author, "created_at": "2026-11-26T14:00:00Z", "text": HOSTILE,
            "retracted": True, "retracted_at": "2026-11-26T15:00:00Z", "edited": True,
            "edited_at": "2026-11-26T14:30:00Z", "version": 2,
            "versions": [{"version": 1, "text": HOSTILE, "created_at": "2026-11-26T14:00:00Z"},
                         {"version": 2, "text": HOSTILE, "created_at": "2026-11-26T14:30:00Z"}],
            "reactions": [{"emoji": HOSTILE, "count": 1, "people": [author]}],
            "attachments": [{"id": "u1", "name": HOSTILE, "size": 12, "type": HOSTILE}],
        }],
        "events": [
            {"seq": 2, "kind": "conversation.renamed", "at": "2026-11-26T16:00:00Z", "actor": author,
             "system": {"fr": HOSTILE, "en": HOSTILE}},
            {"seq": 3, "kind": "conversation.locked", "at": "2026-11-27T13:00:00Z", "actor": author, "reason": HOSTILE},
        ],
    }


def test_r9_every_text_a_person_wrote_is_escaped_wherever_it_stands():
    page = render_html(document(), Actor(9, "direction", HOSTILE, "fr"), NOW)
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert '"x"' not in page and "'q'" not in page
    # The title, school, child, conversation name, lock reason (twice), creator, locker, exporter,
    # participant and role, message, version, reaction, file name and type, system text, lock event.
    assert page.count(ESCAPED) >= 20


def test_r9_the_page_keeps_its_policy_and_its_one_style_and_no_other_markup():
    page = render_html(document(), Actor(9, "direction", "Hélène", "fr"), NOW)
    assert f'<meta http-equiv="Content-Security-Policy" content="{HTML_CSP.replace(chr(39), "&#x27;")}">' in page
    assert re.findall(r"<(script|img|iframe|link|object)\b", page) == []
    assert page.startswith("<!DOCTYPE html>\n<html lang=\"fr\">\n") and page.endswith("</body>\n</html>\n")


def test_r22_the_labels_follow_the_readers_language_french_by_default():
    english = render_html(document(), Actor(9, "direction", "Helen", "en"), NOW)
    other = render_html(document(), Actor(9, "direction", "Helga", "de"), NOW)
    assert '<html lang="en">' in english and "Conversation archive" in english and "Message removed" in english
    assert '<html lang="fr">' in other and "Archive de la conversation" in other and "Message retiré" in other


def test_r9_times_are_shown_in_the_schools_time_zone():
    page = render_html(document(), Actor(9, "direction", "Hélène", "fr"), NOW)
    assert '<time datetime="2026-11-26T13:00:00Z">2026-11-26 08:00:00 EST</time>' in page
