"""The web layer: Starlette routes for HTTP and the WebSocket endpoint.

Adapters only move data: decode a frame or a request, call
:class:`chat.app.App`, send the result.  The protocol is written
down in docs/protocol.md.  The package, one module a concern:

- ``app``: the app factory (:func:`create_app`), its lifespan and middleware,
  :class:`HubServer`;
- ``params`` / ``responses``: reading a request, error and file answers;
  ``endpoint``: the wrapper of authenticated routes; ``limits``: rate limits;
- ``http_people``, ``http_conversations``, ``http_announcements``,
  ``http_notifications``, ``http_ops``, ``archive``: the HTTP routes by capability;
- ``ws``: the WebSocket endpoint and its :class:`~chat.web.ws.Session`;
  ``ws_handlers``: the dispatch table :data:`HANDLERS`.

Every use of uvicorn's private state is in :mod:`chat.hub.fastpath`.
"""

from __future__ import annotations

from chat import logsafety

logsafety.install()  # LOG_LEVEL=debug must not leak frames, SQL parameters or headers

from chat.web.app import HubServer, create_app  # noqa: E402
from chat.web.ws import PROTOCOL  # noqa: E402
from chat.web.ws_handlers import HANDLERS  # noqa: E402

__all__ = ["HANDLERS", "PROTOCOL", "HubServer", "create_app"]
