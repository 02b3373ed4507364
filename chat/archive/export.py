"""The archive's HTML export (R9): one self-contained page, drawn from a template.

The page is ``templates/export.html``, rendered by Jinja2 with autoescape on:
every value the template prints is escaped unless it is already markup, so a
text written by a person (a message, a name, a lock reason, a file name)
reaches the page only escaped.  Values are escaped with :func:`html.escape`
(quotes included, ``"`` as ``&quot;`` and ``'`` as ``&#x27;``), the escaping
the export has always had.  The labels come from the one FR/EN catalogue
(:mod:`chat.i18n`, codes ``archive.*``) in the reader's language, French by
default (R22); times are shown in the school's time zone.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from chat.frames import timestamp
from chat.i18n import CATALOGUE, template, text
from chat.policies.text import strip_bidi_controls

# The export is opened from disk or a mail attachment: nothing may load or run.
HTML_CSP = "default-src 'none'; style-src 'unsafe-inline'"


class Reader(Protocol):
    """Who exports: their name is written on the page, their language chosen (R22)."""

    name: str
    language: str


def escape(value: Any) -> Markup:
    """``value`` as safe HTML: markup as it is, anything else through :func:`html.escape`."""
    if hasattr(value, "__html__"):
        return Markup(value)
    return Markup(html.escape(str(value)))


# finalize runs on every printed value before autoescape: it escapes with html.escape,
# and autoescape then leaves the Markup it returns as it is.
_ENVIRONMENT = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    finalize=escape,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_PAGE = _ENVIRONMENT.get_template("export.html")


def _zone(name: str) -> ZoneInfo | timezone:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return timezone.utc


class Page:
    """What the template calls for one export: labels in the reader's language and
    times in the school's zone.  Every method returns safe HTML, and a label's
    fields are escaped unless they are markup already."""

    def __init__(self, language: str, zone: ZoneInfo | timezone) -> None:
        self.language = language
        self.zone = zone

    def label(self, code: str, **fields: Any) -> Markup:
        markup = Markup(html.escape(template(code, self.language)))
        return markup.format(**{key: escape(value) for key, value in fields.items()})

    def when(self, iso: str | None) -> Markup:
        if iso is None:
            return Markup("")
        local = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(self.zone)
        return Markup('<time datetime="{}">{}</time>').format(
            escape(iso), escape(local.strftime("%Y-%m-%d %H:%M:%S %Z")))

    def name(self, person: dict[str, Any] | None) -> Markup:
        if person is None:
            return self.label("archive.system")
        if person.get("name") is None:
            return self.label("archive.unknown_person")
        return escape(person["name"])

    def role(self, value: str | None) -> Markup:
        code = f"archive.role.{value}"
        return self.label(code) if code in CATALOGUE else escape(value or "")


def render_html(document: dict[str, Any], reader: Reader, now: datetime) -> str:
    """The page of ``document`` (what :meth:`Archive.conversation` returns) exported by
    ``reader`` at ``now``: the school's local times, the reader's language (French by
    default, R22), every person's text escaped, messages and system events in seq order."""
    page = Page("en" if reader.language == "en" else "fr", _zone(document["school"]["timezone"]))
    timeline = [("message", m["seq"], m) for m in document["messages"]]
    timeline += [("event", e["seq"], e) for e in document["events"]]
    timeline.sort(key=lambda row: row[1])
    return _PAGE.render(
        page=page,
        document=document,
        csp=HTML_CSP,
        title=document["name"] or text("archive.number", page.language, {"id": document["id"]}),
        number=page.label("archive.number", id=document["id"]),
        exported_at=timestamp(now),
        reader_name=strip_bidi_controls(reader.name),
        timeline=[(kind, row) for kind, _, row in timeline],
    )
