"""The WebSocket endpoint: the handshake, the per-connection :class:`Session`
and its reader loop.

Adapters only move data: a frame is decoded, handed to its handler in
:data:`chat.web.ws_handlers.HANDLERS`, and the result or the error is sent
back.  The protocol is written down in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from chat import protocol
from chat.auth import bearer_from_headers
from chat.config import Settings
from chat.errors import BadRequest, ChatError, Unauthenticated
from chat.frames import Fields, dumps, error_frame, parse, reply
from chat.hub import CLOSE_POLICY, CLOSE_TRY_AGAIN, CLOSE_UNAUTHENTICATED, ConnectionState, fastpath
from chat.i18n import normalise_language
from chat.policies import resume
from chat.policies.ratelimit import Bucket
from chat.app import App
from chat.people import Actor
from chat.web.limits import limit_frame
from chat.web.params import origin_ok
from chat.web.ws_handlers import HANDLERS

log = logging.getLogger("chat.web")

PROTOCOL = "chat.v1"
# The scope key under which the endpoint finds the socket's protocol object for
# direct writes (chat.hub.fastpath.direct_socket), or None.
SOCKET_KEY = "chat.socket"


class Session:
    """One WebSocket session: the reader loop and the per-connection limits."""

    # Thousands live at once, mostly idle: no per-instance __dict__.
    __slots__ = ("service", "settings", "websocket", "actor", "bucket", "typing_bucket", "started", "conn")

    def __init__(self, service: App, settings: Settings, websocket: WebSocket, actor: Actor) -> None:
        self.service = service
        self.settings = settings
        self.websocket = websocket
        self.actor = actor
        self.bucket: Bucket | None = None
        self.typing_bucket: Bucket | None = None
        self.started = False
        self.conn = fastpath.new_connection(actor.id, actor.language, websocket.send_text, self._close,
                                            settings.send_queue_frames, actor.session_id, actor.expires_at,
                                            websocket.scope.get(SOCKET_KEY))

    async def _close(self, code: int, reason: str) -> None:
        socket = self.websocket.scope.get(SOCKET_KEY)
        if socket is None:
            await self.websocket.close(code, reason)
            return
        # The close frame goes now, not after what the client has not read; a
        # client that has not read up to it within the keepalive's time to
        # answer is dropped with what waits for it.
        await fastpath.close_now(socket, self.websocket.close, code, reason, self.settings.ping_timeout)

    async def start(self, positions: dict[int, int], announcements_after: int | None = None) -> dict[str, Any]:
        """Go live: replay from the client's positions, live-only elsewhere; replay
        the announcements received after ``announcements_after``.

        Every read comes before the connection changes: a start that fails (the
        database is away) leaves the connection as it was, not started, and the
        client may send ``resume`` again (docs/protocol.md section 3)."""
        await self.service.hub.register_audiences(
            self.conn, await self.service.announcements.audience_channels(self.actor.id))
        try:  # the audiences first, so that no announcement slips between the replay and live ones
            replayed = [] if announcements_after is None else await self.service.announcements.mine(
                self.actor, after=announcements_after, limit=200)
            latest = await self.service.reading.positions(self.actor.id)
            reasons = await self.service.reading.resume_checks(self.actor.id, positions)
            conversations = await self.service.reading.list_conversations(self.actor)  # after latest: its last_seq >= them
        except BaseException:
            await self.service.hub.unregister_audiences(self.conn)
            raise
        self.started = True
        for view in replayed:
            self.service.hub.send(self.conn, dumps({"type": "announcement", "announcement": view}))
        plan = resume.plan(positions, reasons, latest)  # reset: reload over HTTP up to last_seq, then live
        for conversation_id in plan.resumed:
            self.service.hub.track(self.conn, conversation_id, positions[conversation_id], replay=True)
        for conversation_id, last_seq in plan.live.items():
            self.service.hub.track(self.conn, conversation_id, last_seq)
        return {"resumed": plan.resumed, "reset": plan.reset, "conversations": conversations}

    async def receive(self, message: dict[str, Any]) -> bool:
        """Handle one ASGI message from the socket; False once the session is over.

        The reader loop passes each message straight in, so nothing of the last
        frame stays referenced while the socket waits for the next one."""
        if message["type"] == "websocket.disconnect":
            return False
        if self.conn.state is not ConnectionState.OPEN:
            return True  # closing (signed out, expired, slow): read on until the socket ends, act on nothing
        text = message.get("text")
        if text is not None:
            await self.handle(text)
        else:
            self.conn.push(error_frame(None, BadRequest("request.binary_unsupported").to_dict(self.actor.language)))
        return self.conn.state is not ConnectionState.CLOSED  # CLOSED: the socket refused a frame, the peer is gone

    async def renew(self, token: str) -> dict[str, Any]:
        """R21: a newer access token of this connection's session (refreshed over
        HTTP) keeps the connection open past the current one's expiry."""
        renewed = await self.service.people.authenticate(token)
        if renewed.id != self.actor.id or renewed.session_id != self.actor.session_id:
            raise Unauthenticated("auth.invalid_token")
        self.actor = renewed
        self.conn.expires_at = renewed.expires_at
        return {"expires_at": renewed.expires_at}

    async def set_language(self, language: str) -> dict[str, Any]:
        """R22: the person's language, stored; this connection's texts follow it
        at once, the person's other connections from their next connection."""
        chosen = await self.service.people.set_language(self.actor, language)
        self.actor = replace(self.actor, language=chosen)
        self.conn.language = chosen
        return {"language": chosen}

    async def handle(self, raw: str) -> None:
        request_id: Any = None
        try:
            if len(raw) > self.settings.max_frame_bytes or len(raw.encode()) > self.settings.max_frame_bytes:
                raise BadRequest("request.too_large", size=len(raw.encode()), limit=self.settings.max_frame_bytes)
            # One pass into the frame's Struct; a frame it refuses is read with
            # Fields, whose checks give the error at the same point as ever.
            frame = protocol.decode_frame(raw)
            if frame is not None:
                request_id, frame_type, fields = frame.id, frame.TYPE, None
            else:
                data = parse(raw)
                request_id = data.get("id")
                if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, (str, int))):
                    request_id = None
                    raise BadRequest("request.wrong_type", field="id", expected="string or integer", got="other")
                fields = Fields(data)
                frame_type = fields.str("type")
            limit_frame(self, frame_type)
            if frame_type == "resume":
                if self.started:
                    raise BadRequest("request.invalid", detail="resume must be the first frame of a connection")
                if fields is not None:
                    frame = protocol.from_fields(protocol.Resume, fields, request_id)
                result = await self.start(frame.positions, frame.announcements_after)
                self.service.hub.send(self.conn, reply(request_id, **result))
                return
            if frame_type == "token.renew":
                if fields is not None:
                    frame = protocol.from_fields(protocol.TokenRenew, fields, request_id)
                self.service.hub.send(self.conn, reply(request_id, **await self.renew(frame.token)))
                return
            if frame_type == "language.set":
                if fields is not None:
                    frame = protocol.from_fields(protocol.LanguageSet, fields, request_id)
                self.service.hub.send(self.conn, reply(request_id, **await self.set_language(frame.language)))
                return
            handler = HANDLERS.get(frame_type)
            if handler is None:
                raise BadRequest("request.unknown_type", type=frame_type[:64])
            if not self.started:
                await self.start({})
            if fields is not None:
                frame = protocol.from_fields(protocol.CLIENT_FRAMES[frame_type], fields, request_id)
            started = time.perf_counter()
            result = await handler(self.service, self.actor, frame)
            if frame_type == "message.send":
                self.service.metrics.send_to_ack.observe(time.perf_counter() - started)
            if result is not None or request_id is not None:
                self.service.hub.send(self.conn, reply(request_id, **(result or {})))
        except ChatError as exc:
            self.service.hub.send(self.conn, error_frame(request_id, exc.to_dict(self.actor.language)))
        except (asyncio.CancelledError, WebSocketDisconnect):
            raise
        except Exception as exc:
            database = self.service.database
            if database.outage(exc):  # expected: logged once per outage, the client retries
                self.service.hub.send(self.conn, error_frame(request_id, database.unavailable().to_dict(
                    self.actor.language)))
                return
            log.exception("unexpected error handling a frame")
            self.service.hub.send(self.conn, error_frame(request_id, ChatError("internal.error").to_dict(self.actor.language)))


async def websocket_endpoint(websocket: WebSocket) -> None:
    session = await _open_session(websocket)
    if session is None:
        return
    service, conn, person_id = session.service, session.conn, session.actor.id
    try:
        while await session.receive(await websocket.receive()):
            pass
    except WebSocketDisconnect:
        pass
    finally:
        await service.hub.unregister(conn)
        if person_id not in service.hub.by_person:
            websocket.app.state.person_buckets.pop(person_id, None)
        await conn.close(1000)


async def _open_session(websocket: WebSocket) -> Session | None:
    """The handshake: origin, token, accept, sign-in, registration and ``hello``.

    A separate coroutine from the reader loop, so that what only the handshake
    needs (the token, the headers) is not kept alive by an idle socket's frame."""
    app = websocket.app
    service: App = app.state.service
    settings: Settings = app.state.settings
    headers = Headers(scope=websocket.scope)
    # Browsers always send Origin; a cross-site page must not reach the socket
    # with the user's credentials (cross-site WebSocket hijacking).
    if not origin_ok(settings, headers.get("origin")):
        # Refused before the handshake completes: the browser sees HTTP 403.
        log.info("websocket refused: origin not allowed")
        error = ChatError("origin.forbidden", origin=headers.get("origin", "")[:100])
        language = normalise_language(headers.get("accept-language"))
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(JSONResponse({"error": error.to_dict(language)}, status_code=403))
        else:
            await websocket.close(CLOSE_POLICY)
        return None
    offered = websocket.scope.get("subprotocols") or []
    token = bearer_from_headers(headers.get("authorization"), offered)
    await websocket.accept(subprotocol=PROTOCOL if PROTOCOL in offered else None)
    language = normalise_language(headers.get("accept-language"))
    try:
        actor = await service.people.authenticate(token)
        conversation_ids = await service.reading.active_conversation_ids(actor.id)
    except ChatError as exc:
        await websocket.send_text(error_frame(None, exc.to_dict(language)))
        await websocket.close(CLOSE_UNAUTHENTICATED, exc.code)
        return None
    except Exception as exc:
        if not service.database.outage(exc):
            raise
        # Nothing is registered yet: the client reconnects with backoff (docs/protocol.md section 9).
        await websocket.send_text(error_frame(None, service.database.unavailable().to_dict(language)))
        await websocket.close(CLOSE_TRY_AGAIN, "service unavailable")
        return None
    _release_handshake(websocket.scope)
    session = Session(service, settings, websocket, actor)
    conn = session.conn
    await service.hub.register(conn, conversation_ids)
    conn.push(dumps({"type": "hello", "protocol": 1, "person": {
        "id": actor.id, "name": actor.name, "role": actor.role, "language": actor.language}}))
    return session


def _release_handshake(scope) -> None:
    """Drop what only the handshake needed, once it is done, so that an idle
    socket does not keep it (about 5 KiB each): the request headers in the
    scope, and uvicorn's parsed handshake request and response.  Nothing reads
    them afterwards: the session has its person, the server its open socket."""
    scope["headers"] = ()
    fastpath.release_handshake(scope.get(SOCKET_KEY))
