"""Direction's archive (R9) and the school's audit log (R9, R10).

* :mod:`chat.archive.service` — the direction-only look-ups (search, a whole
  conversation, exports, attachments, the audit log), each access audited first.
* :mod:`chat.archive.export` — the HTML export, drawn from
  ``templates/export.html`` with autoescape.
"""

from __future__ import annotations

from chat.archive.export import HTML_CSP, render_html
from chat.archive.service import PAGE_DEFAULT, PAGE_MAX, SEARCH_TEXT_MAX, Archive

__all__ = ["HTML_CSP", "PAGE_DEFAULT", "PAGE_MAX", "SEARCH_TEXT_MAX", "Archive", "render_html"]
