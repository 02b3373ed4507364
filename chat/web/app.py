"""The ASGI application: the app factory, its lifespan, its middleware, and
the uvicorn server that closes the hub's sockets first.

The routes live by capability in ``chat.web.http_*`` and ``chat.web.archive``;
the WebSocket endpoint in :mod:`chat.web.ws`.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from chat.config import Settings
from chat.errors import ChatError
from chat.hub import CLOSE_SHUTDOWN, SHUTDOWN_REASON, fastpath
from chat.i18n import normalise_language
from chat.app import App
from chat.storage.db import create_engine, upgrade
from chat.storage.health import OUTAGE_ERRORS
from chat.web.archive import ROUTES as ARCHIVE_ROUTES
from chat.web.endpoint import endpoint
from chat.web.http_announcements import (http_announcement, http_announcements, http_collective,
                                         http_integration_notice)
from chat.web.http_conversations import (http_attachment, http_conversation, http_conversations, http_events,
                                         http_send, http_upload)
from chat.web.http_notifications import (http_notification, http_notifications, http_notifications_read,
                                         http_preferences)
from chat.web.http_ops import healthz, metrics
from chat.web import http_accounts as accounts
from chat.web.http_people import demo_people, http_contacts, http_language, http_me
from chat.web.responses import error_response
from chat.web.ws import SOCKET_KEY, websocket_endpoint

log = logging.getLogger("chat.web")

# -- the application -------------------------------------------------------------------------------
STATIC = Path(__file__).parent.parent / "static"
# The widget loads only its own files and talks only to this server.
WIDGET_CSP = ("default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' blob: data:; "
              "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'")


WS_PATH = "/ws"


class WebSocketFastPath:
    """Pure ASGI middleware, the outermost: the hub's way to the socket.

    Starlette's error middleware passes WebSocket scopes through untouched, so
    here ``send`` is still the server's own: its protocol object is noted in
    the scope for the hub's direct writes (see :mod:`chat.hub.fastpath`).
    And ``/ws`` is handed straight to :func:`websocket_endpoint` rather than
    through the exception middleware and the router: their seven coroutine
    frames would stay suspended under every open socket for its whole life
    (about 4 KiB each).  Nothing there acts on it: the endpoint handles its own
    errors, and an unexpected one reaches the server as it would through them.
    """

    def __init__(self, app, direct: bool = True) -> None:
        self.app = app
        # chat.hub.fastpath.enabled(): HUB_FAST_PATH and the installed versions allow it.
        self.direct = direct

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket":
            scope[SOCKET_KEY] = fastpath.direct_socket(send) if self.direct else None
            if scope["path"] == WS_PATH and not scope.get("root_path"):
                await websocket_endpoint(WebSocket(scope, receive, send))
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Pure ASGI middleware: safe defaults on every HTTP response that has none."""

    def __init__(self, app, direct: bool = True) -> None:
        self.app = app
        # chat.hub.fastpath.enabled(): HUB_FAST_PATH and the installed versions allow it.
        self.direct = direct

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def add_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if not scope["path"].startswith("/api/"):
                    headers.setdefault("Content-Security-Policy", WIDGET_CSP)
            await send(message)

        await self.app(scope, receive, add_headers)


class HubServer(uvicorn.Server):
    """uvicorn's server, except that the hub closes its own connections first
    when it stops.  uvicorn's shutdown closes every open WebSocket itself, with
    1012 and no reason, before the application hears of it (the lifespan's
    shutdown comes after); clients are promised the reason `server restarting`
    (docs/protocol.md §9)."""

    async def shutdown(self, sockets=None) -> None:
        service = getattr(getattr(self.config.app, "state", None), "service", None)
        if service is not None:
            await service.hub.close_all(CLOSE_SHUTDOWN, SHUTDOWN_REASON)
        await super().shutdown(sockets)


def create_app(settings: Settings, service: App | None = None, migrate: bool = True) -> Starlette:
    """The ASGI application.  Starts the service (migrations, broker) in its lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        # A service handed in (tests, embedding) is started and stopped by its owner.
        if app.state.service is not None:
            yield
            return
        engine = create_engine(settings.database_url, settings.database_pool_size)
        if migrate:
            await upgrade(engine)
        app.state.service = App(settings, engine)
        await app.state.service.start()
        try:
            yield
        finally:
            await app.state.service.stop()
            await engine.dispose()

    routes = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/api/me", endpoint(http_me)),
        Route("/api/me/language", endpoint(http_language), methods=["PUT"]),
        Route("/api/auth/signup", accounts.public(accounts.signup), methods=["POST"]),
        Route("/api/auth/signup/verify", accounts.public(accounts.signup_verify), methods=["POST"]),
        Route("/api/auth/signin", accounts.public(accounts.signin), methods=["POST"]),
        Route("/api/auth/signin/verify", accounts.public(accounts.signin_verify), methods=["POST"]),
        Route("/api/auth/password/forgot", accounts.public(accounts.forgot), methods=["POST"]),
        Route("/api/auth/password/reset", accounts.public(accounts.reset), methods=["POST"]),
        Route("/api/auth/refresh", accounts.public(accounts.refresh), methods=["POST"]),
        Route("/api/auth/signout", endpoint(accounts.http_signout), methods=["POST"]),
        Route("/api/sessions", endpoint(accounts.http_sessions), methods=["GET", "DELETE"]),
        Route("/api/sessions/{session_id:str}", endpoint(accounts.http_session), methods=["DELETE"]),
        Route("/api/children", endpoint(accounts.http_children), methods=["POST"]),
        Route("/api/organisations", accounts.organisations),
        Route("/api/contacts", endpoint(http_contacts)),
        Route("/api/conversations", endpoint(http_conversations), methods=["GET", "POST"]),
        Route("/api/conversations/{conversation_id:id}", endpoint(http_conversation)),
        Route("/api/conversations/{conversation_id:id}/events", endpoint(http_events)),
        Route("/api/conversations/{conversation_id:id}/messages", endpoint(http_send), methods=["POST"]),
        Route("/api/uploads", endpoint(http_upload), methods=["POST"]),
        Route("/api/announcements", endpoint(http_announcements), methods=["GET", "POST"]),
        Route("/api/announcements/{announcement_id:id}", endpoint(http_announcement)),
        Route("/api/integrations/notices", http_integration_notice, methods=["POST"]),
        Route("/api/collective", endpoint(http_collective), methods=["POST"]),
        Route("/api/notifications", endpoint(http_notifications)),
        Route("/api/notifications/read", endpoint(http_notifications_read), methods=["POST"]),
        Route("/api/notifications/{notification_id:id}", endpoint(http_notification)),
        Route("/api/preferences", endpoint(http_preferences), methods=["GET", "PUT"]),
        Route("/api/collective/{send_id:id}", endpoint(http_collective)),
        Route("/api/attachments/{upload_id:str}", endpoint(http_attachment)),
        WebSocketRoute(WS_PATH, websocket_endpoint),  # reached directly by WebSocketFastPath
        Route("/api/demo/people", demo_people, methods=["GET", "POST"]),
    ]
    routes += ARCHIVE_ROUTES

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        language = normalise_language(request.headers.get("accept-language"))
        return JSONResponse({"error": ChatError("internal.error").to_dict(language)}, status_code=500)

    async def outage_or_unexpected(request: Request, exc: Exception) -> Response:
        """A database outage is expected: 503 service.unavailable with Retry-After,
        logged once per outage.  Anything else goes on to :func:`unexpected`."""
        database = request.app.state.service.database
        if not database.outage(exc):
            raise exc
        return error_response(database.unavailable(), normalise_language(request.headers.get("accept-language")))

    # The web widget (issue 7): static files, outside /api and /ws, never attachments.
    routes.append(Mount("/", app=StaticFiles(directory=STATIC, html=True), name="static"))
    handlers = {Exception: unexpected} | dict.fromkeys(OUTAGE_ERRORS, outage_or_unexpected)
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers,
                    middleware=[Middleware(WebSocketFastPath, direct=fastpath.enabled(settings)),
                                Middleware(SecurityHeaders)])
    app.state.settings = settings
    app.state.service = service
    app.state.person_buckets = {}
    return app
