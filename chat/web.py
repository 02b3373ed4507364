"""The web layer: Starlette routes for HTTP and the WebSocket endpoint.

Adapters only move data: decode a frame or a request, call
:class:`chat.service.ChatService`, send the result.  The protocol is written
down in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from urllib.parse import quote
from typing import Any, Awaitable, Callable

import uvicorn
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from chat import logsafety
from chat.auth import bearer_from_headers
from chat.config import Settings
from chat.errors import BadRequest, ChatError, Forbidden, NotFound, RateLimited, ServiceUnavailable
from chat.frames import Fields, decimal_int64, dumps, error_frame, parse, reply
from chat.hub import (CLOSE_POLICY, CLOSE_SHUTDOWN, CLOSE_TRY_AGAIN, CLOSE_UNAUTHENTICATED, SHUTDOWN_REASON,
                      ConnectionState, fastpath)
from chat.i18n import normalise_language
from chat.policies.ratelimit import Bucket, take
from chat.service import HISTORY_DEFAULT, Actor, ChatService
from chat.storage.db import create_engine, upgrade
from chat.storage.health import OUTAGE_ERRORS
from chat.storage.models import Upload

log = logging.getLogger("chat.web")
logsafety.install()  # LOG_LEVEL=debug must not leak frames, SQL parameters or headers

PROTOCOL = "chat.v1"


# -- HTTP ---------------------------------------------------------------------------------
def _language(request: Request, actor: Actor | None = None) -> str:
    if actor is not None:
        return actor.language
    return normalise_language(request.headers.get("accept-language"))


def error_response(exc: ChatError, language: str) -> JSONResponse:
    headers = {}
    if isinstance(exc, (RateLimited, ServiceUnavailable)):
        headers["Retry-After"] = str(max(1, int(exc.fields["retry_after"] + 0.999)))
    return JSONResponse({"error": exc.to_dict(language)}, status_code=exc.status, headers=headers)


def limit_person(state, person_id: int) -> None:
    """The per-person bucket (per process), shared by a person's sockets and HTTP calls."""
    s: Settings = state.settings
    bucket, wait = take(state.person_buckets.get(person_id), time.monotonic(), s.rate_per_second * 2, s.rate_burst * 2)
    state.person_buckets[person_id] = bucket
    if wait:
        raise RateLimited(wait)


def endpoint(handler: Callable[[ChatService, Actor, Request], Awaitable[Any]]) -> Callable:
    """Authenticate, call the service, render the result or the error as JSON."""

    async def route(request: Request) -> Response:
        service: ChatService = request.app.state.service
        actor: Actor | None = None
        try:
            token = bearer_from_headers(request.headers.get("authorization"))
            actor = await service.authenticate(token)
            limit_person(request.app.state, actor.id)
            result = await handler(service, actor, request)
        except ChatError as exc:
            return error_response(exc, _language(request, actor))
        if isinstance(result, Response):
            return result
        return Response(dumps(result), media_type="application/json")

    return route


async def _json_body(request: Request) -> Fields:
    body = await request.body()
    if len(body) > request.app.state.settings.max_frame_bytes:
        raise BadRequest("request.too_large", size=len(body), limit=request.app.state.settings.max_frame_bytes)
    return Fields(parse(body.decode("utf-8", errors="replace")))


def query_int(request: Request, name: str, default: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    value = decimal_int64(raw)
    if value is None:
        raise BadRequest("request.wrong_type", field=name, expected="64-bit integer", got=raw[:20])
    return value


class PathId(Convertor[str]):
    """``{name:id}`` in a route: a path segment of digits, with a minus or not,
    read by :func:`path_id` once the caller is authenticated.  Starlette's
    ``int`` convertor converts while routing, where an id outside 64 bits (or
    past Python's 4,300 digits) could only fail as a 500; and it leaves a
    negative id to the plain-text 404 of an unknown path."""

    regex = "-?[0-9]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: Any) -> str:
        return str(value)


register_url_convertor("id", PathId())


def path_id(request: Request, name: str) -> int:
    """A ``{name:id}`` path parameter: 64-bit, else ``request.wrong_type`` (400);
    an id that names nothing (zero, negative) is the route's own not_found."""
    raw = request.path_params[name]
    value = decimal_int64(raw)
    if value is None:
        raise BadRequest("request.wrong_type", field=name, expected="64-bit integer", got=raw[:20])
    return value


async def http_me(service: ChatService, actor: Actor, request: Request) -> Any:
    return await service.me(actor)


async def http_signout(service: ChatService, actor: Actor, request: Request) -> Any:
    await service.sign_out(actor)
    return {"signed_out": True}


async def http_conversations(service: ChatService, actor: Actor, request: Request) -> Any:
    if request.method == "POST":
        fields = await _json_body(request)
        return await service.create_conversation(
            actor, fields.int_list("participants"), fields.int("child_id", required=False), fields.str("name", False))
    return {"conversations": await service.list_conversations(actor)}


async def http_conversation(service: ChatService, actor: Actor, request: Request) -> Any:
    return await service.conversation(actor, path_id(request, "conversation_id"))


async def http_events(service: ChatService, actor: Actor, request: Request) -> Any:
    frames = await service.history(
        actor, path_id(request, "conversation_id"),
        after=query_int(request, "after"), before=query_int(request, "before"),
        limit=query_int(request, "limit", HISTORY_DEFAULT),
    )
    # The stored frames are JSON already: join them without decoding.
    return Response('{"events":[' + ",".join(frames) + "]}", media_type="application/json")


async def http_send(service: ChatService, actor: Actor, request: Request) -> Any:
    fields = await _json_body(request)
    return await service.send_message(
        actor, path_id(request, "conversation_id"), fields.str("client_id"), fields.str("text", False, ""),
        fields.str_list("attachments", required=False))


async def http_upload(service: ChatService, actor: Actor, request: Request) -> Any:
    """R7: the raw file as the request body (``?name=`` gives its name), streamed to
    disk within the 20 MB limit and checked by content.  CSRF-safe: it needs the
    bearer token in the Authorization header, which no cross-site form can send."""
    if not _origin_ok(request.app.state.settings, request.headers.get("origin")):
        raise Forbidden("origin.forbidden", origin=request.headers.get("origin", "")[:100])
    declared = request.headers.get("content-length")
    try:
        length = int(declared) if declared is not None else None
    except ValueError:
        raise BadRequest("request.wrong_type", field="Content-Length", expected="integer", got=declared[:20]) from None
    stored = await service.store.receive(request.stream(), length, request.query_params.get("name"))
    return JSONResponse({"upload": await service.upload(actor, stored)}, status_code=201)


# Images may be shown inline; every other type is only ever downloaded.
_INLINE = {"image/jpeg", "image/png"}


def attachment_response(service: ChatService, upload: Upload, cache: str = "private, max-age=3600") -> FileResponse:
    """A stored file served safely (R7): the detected type, nosniff, a sandbox CSP,
    a sanitised name, ``attachment`` unless it is an image; Range requests work."""
    disposition = "inline" if upload.content_type in _INLINE else "attachment"
    ascii_name = upload.filename.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    headers = {
        "Content-Disposition": f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(upload.filename)}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": cache,
    }
    path = service.store.path_for(upload.sha256)
    if not path.exists():
        raise NotFound("attachment.not_found", upload_id=upload.id)
    return FileResponse(path, media_type=upload.content_type, headers=headers)


async def http_attachment(service: ChatService, actor: Actor, request: Request) -> Any:
    upload = await service.attachment_for_download(actor, request.path_params["upload_id"])
    return attachment_response(service, upload)


async def http_announcements(service: ChatService, actor: Actor, request: Request) -> Any:
    if request.method == "POST":
        fields = await _json_body(request)
        audience = fields.data.get("audience")
        if audience is None:
            raise BadRequest("request.missing_field", field="audience")
        result = await service.announcements.post(actor, audience, fields.str("text"),
                                                  fields.bool("urgent", required=False, default=False))
        return JSONResponse(result, status_code=201)
    return {"announcements": await service.announcements.mine(
        actor, before=query_int(request, "before"), after=query_int(request, "after"),
        limit=query_int(request, "limit", 50))}


async def http_announcement(service: ChatService, actor: Actor, request: Request) -> Any:
    return await service.announcements.detail(actor, path_id(request, "announcement_id"))


async def http_integration_notice(request: Request) -> Response:
    """R12: a school system posts a notice with its integration key (server to server)."""
    service: ChatService = request.app.state.service
    language = _language(request)
    try:
        key = await service.announcements.authenticate_key(bearer_from_headers(request.headers.get("authorization")))
        fields = await _json_body(request)
        fiches = fields.str_list("students", limit=2000)
        result = await service.announcements.notice(key, fields.str("kind"), fields.str("text"), fiches)
    except ChatError as exc:
        return error_response(exc, language)
    return Response(dumps(result), status_code=201, media_type="application/json")


async def http_collective(service: ChatService, actor: Actor, request: Request) -> Any:
    if request.method == "POST":
        f = await _json_body(request)
        result = await service.collective.create(actor, f.str("client_id"), f.str("text"),
                                                 f.int_list("students", required=False),
                                                 f.int_list("groups", required=False))
        return JSONResponse(result, status_code=202)
    return await service.collective.status(actor, path_id(request, "send_id"))


async def http_notifications(service: ChatService, actor: Actor, request: Request) -> Any:
    return await service.notifier.feed(actor, query_int(request, "child_id"), query_int(request, "before"),
                                       query_int(request, "limit", 30))


async def http_notification(service: ChatService, actor: Actor, request: Request) -> Any:
    return await service.notifier.open(actor, path_id(request, "notification_id"))


async def http_notifications_read(service: ChatService, actor: Actor, request: Request) -> Any:
    fields = await _json_body(request)
    return await service.notifier.mark_all_read(actor, fields.int("child_id", required=False))


async def http_preferences(service: ChatService, actor: Actor, request: Request) -> Any:
    if request.method == "PUT":
        f = await _json_body(request)
        return await service.notifier.set_preference(actor, f.int("child_id", False), f.str("kind"), f.bool("enabled"))
    return await service.notifier.preferences(actor)


async def http_contacts(service: ChatService, actor: Actor, request: Request) -> Any:
    return {"contacts": await service.contacts(actor, query_int(request, "child_id"))}


async def demo_people(request: Request) -> Response:
    """Demo mode only: the people the widget's picker offers (R20 sign-in is elsewhere)."""
    settings: Settings = request.app.state.settings
    language = _language(request)
    if not settings.demo:
        return error_response(NotFound("demo.off"), language)
    service: ChatService = request.app.state.service
    if request.method == "POST":
        try:
            fields = await _json_body(request)
            token = await service.demo_token(fields.int("person_id"))
        except ChatError as exc:
            return error_response(exc, language)
        return JSONResponse({"token": token})
    return Response(dumps({"people": await service.demo_people()}), media_type="application/json")


async def metrics(request: Request) -> Response:
    """Prometheus text format for this process."""
    service: ChatService = request.app.state.service
    from sqlalchemy import func, select

    from chat.storage.models import Notification

    async with service.sessions() as session:
        held = (await session.execute(select(func.count()).select_from(Notification).where(
            Notification.delivered_at.is_(None)))).scalar_one()
    service.metrics.held.set(held)
    return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")


async def healthz(request: Request) -> Response:
    service: ChatService = request.app.state.service
    async with service.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return JSONResponse({"status": "ok", "connections": service.hub.connection_count()})


# -- WebSocket ------------------------------------------------------------------------------
Handler = Callable[[ChatService, Actor, Fields], Awaitable[dict[str, Any] | None]]


async def ws_create(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return {"conversation": await s.create_conversation(a, f.int_list("participants"), f.int("child_id", False),
                                                        f.str("name", False))}


async def ws_rename(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.rename_conversation(a, f.int("conversation_id"), f.str("name", required=False))


async def ws_add(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.add_participants(a, f.int("conversation_id"), f.int_list("participants"),
                                    f.bool("share_history", required=False, default=False))


async def ws_remove(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.remove_participant(a, f.int("conversation_id"), f.int("person_id"))


async def ws_leave(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.leave_conversation(a, f.int("conversation_id"))


async def ws_send(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.send_message(a, f.int("conversation_id"), f.str("client_id"), f.str("text", False, ""),
                                f.str_list("attachments", required=False))


async def ws_edit(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.edit_message(a, f.int("message_id"), f.str("text"))


async def ws_retract(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.retract_message(a, f.int("message_id"))


async def ws_react_add(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.react(a, f.int("message_id"), f.str("emoji"), add=True)


async def ws_react_remove(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.react(a, f.int("message_id"), f.str("emoji"), add=False)


async def ws_read(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.mark_read(a, f.int("conversation_id"), f.int("seq"))


async def ws_typing(s: ChatService, a: Actor, f: Fields) -> None:
    await s.typing(a, f.int("conversation_id"))


async def ws_lock(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.set_lock(a, f.int("conversation_id"), True, f.str("reason", required=False))


async def ws_unlock(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.set_lock(a, f.int("conversation_id"), False)


async def ws_list(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return {"conversations": await s.list_conversations(a)}


async def ws_history(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    frames = await s.history(a, f.int("conversation_id"), after=f.int("after", False), before=f.int("before", False),
                             limit=f.int("limit", False, HISTORY_DEFAULT))
    return {"events": [parse(frame) for frame in frames]}


async def ws_announce(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    audience = f.data.get("audience")
    if audience is None:
        raise BadRequest("request.missing_field", field="audience")
    return await s.announcements.post(a, audience, f.str("text"), f.bool("urgent", required=False, default=False))


async def ws_announcement_read(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.announcements.mark_read(a, f.int("announcement_id"))


async def ws_announcement_react(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.announcements.react(a, f.int("announcement_id"), f.str("emoji"), add=True)


async def ws_announcement_unreact(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.announcements.react(a, f.int("announcement_id"), f.str("emoji"), add=False)


async def ws_announcement_reply(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    s.announcements.refuse_reply()
    return {}


async def ws_announcements(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return {"announcements": await s.announcements.mine(a, before=f.int("before", False), after=f.int("after", False),
                                                        limit=f.int("limit", False, 50))}


async def ws_collective(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.collective.create(a, f.str("client_id"), f.str("text"), f.int_list("students", required=False),
                                     f.int_list("groups", required=False))


async def ws_collective_status(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.collective.status(a, f.int("send_id"))


async def ws_notifications(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.notifier.feed(a, f.int("child_id", False), f.int("before", False), f.int("limit", False, 30))


async def ws_notification_open(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return {"notification": await s.notifier.open(a, f.int("notification_id"))}


async def ws_notifications_read(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.notifier.mark_all_read(a, f.int("child_id", False))


async def ws_preferences(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.notifier.preferences(a)


async def ws_preference_set(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return await s.notifier.set_preference(a, f.int("child_id", False), f.str("kind"), f.bool("enabled"))


async def ws_ping(s: ChatService, a: Actor, f: Fields) -> dict[str, Any]:
    return {"pong": True}


async def ws_signout(s: ChatService, a: Actor, f: Fields) -> None:
    await s.sign_out(a)


HANDLERS: dict[str, Handler] = {
    "conversation.create": ws_create,
    "conversation.rename": ws_rename,
    "conversation.add": ws_add,
    "conversation.remove": ws_remove,
    "conversation.leave": ws_leave,
    "conversation.list": ws_list,
    "conversation.lock": ws_lock,
    "conversation.unlock": ws_unlock,
    "conversation.history": ws_history,
    "message.send": ws_send,
    "message.edit": ws_edit,
    "message.retract": ws_retract,
    "reaction.add": ws_react_add,
    "reaction.remove": ws_react_remove,
    "read": ws_read,
    "typing": ws_typing,
    "announcement.post": ws_announce,
    "announcement.read": ws_announcement_read,
    "announcement.react": ws_announcement_react,
    "announcement.unreact": ws_announcement_unreact,
    "announcement.reply": ws_announcement_reply,
    "announcement.list": ws_announcements,
    "collective.send": ws_collective,
    "collective.status": ws_collective_status,
    "notification.list": ws_notifications,
    "notification.open": ws_notification_open,
    "notification.read_all": ws_notifications_read,
    "preferences.get": ws_preferences,
    "preferences.set": ws_preference_set,
    "ping": ws_ping,
    "signout": ws_signout,
}
# Cheap or ephemeral frames that do not draw from the main rate-limit bucket.
TYPING = "typing"


def _origin_ok(settings: Settings, origin: str | None) -> bool:
    if origin is None:
        return True  # not a browser: native apps and servers authenticate by token only
    allowed = settings.origins
    return "*" in allowed or origin.rstrip("/") in allowed


class Session:
    """One WebSocket session: the reader loop and the per-connection limits."""

    # Thousands live at once, mostly idle: no per-instance __dict__.
    __slots__ = ("service", "settings", "websocket", "actor", "bucket", "typing_bucket", "started", "conn")

    def __init__(self, service: ChatService, settings: Settings, websocket: WebSocket, actor: Actor) -> None:
        self.service = service
        self.settings = settings
        self.websocket = websocket
        self.actor = actor
        self.bucket: Bucket | None = None
        self.typing_bucket: Bucket | None = None
        self.started = False
        self.conn = fastpath.new_connection(actor.id, actor.language, websocket.send_text, self._close,
                                            settings.send_queue_frames, actor.issued_at, actor.expires_at,
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

    def _limit(self, frame_type: str) -> None:
        """Per connection and per person token buckets; raise RateLimited with the wait."""
        now = time.monotonic()
        s = self.settings
        if frame_type == TYPING:
            self.typing_bucket, wait = take(self.typing_bucket, now, s.typing_per_second, s.typing_per_second * 2)
            if wait:
                raise RateLimited(wait)
            return
        self.bucket, wait = take(self.bucket, now, s.rate_per_second, s.rate_burst)
        if wait:
            raise RateLimited(wait)
        limit_person(self.websocket.app.state, self.actor.id)

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
            latest = await self.service.positions(self.actor.id)
            reasons = await self.service.resume_checks(self.actor.id, positions)
            conversations = await self.service.list_conversations(self.actor)  # after latest: its last_seq >= them
        except BaseException:
            await self.service.hub.unregister_audiences(self.conn)
            raise
        self.started = True
        for view in replayed:
            self.service.hub.send(self.conn, dumps({"type": "announcement", "announcement": view}))
        resumed, reset = [], []
        for conversation_id, position in positions.items():
            reason = reasons[conversation_id]
            if reason is not None:
                # Reload over HTTP up to last_seq; live delivery starts after it.
                entry = {"conversation_id": conversation_id, "reason": reason}
                if conversation_id in latest:
                    entry["last_seq"] = latest[conversation_id]
                reset.append(entry)
                continue
            self.service.hub.track(self.conn, conversation_id, position, replay=True)
            resumed.append(conversation_id)
        for conversation_id, last_seq in latest.items():
            if conversation_id not in resumed:
                self.service.hub.track(self.conn, conversation_id, last_seq)
        return {"resumed": resumed, "reset": reset, "conversations": conversations}

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

    async def handle(self, raw: str) -> None:
        request_id: Any = None
        try:
            if len(raw) > self.settings.max_frame_bytes or len(raw.encode()) > self.settings.max_frame_bytes:
                raise BadRequest("request.too_large", size=len(raw.encode()), limit=self.settings.max_frame_bytes)
            data = parse(raw)
            request_id = data.get("id")
            if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, (str, int))):
                request_id = None
                raise BadRequest("request.wrong_type", field="id", expected="string or integer", got="other")
            fields = Fields(data)
            frame_type = fields.str("type")
            self._limit(frame_type)
            if frame_type == "resume":
                if self.started:
                    raise BadRequest("request.invalid", detail="resume must be the first frame of a connection")
                result = await self.start(fields.int_map("positions"), fields.int("announcements_after", False))
                self.service.hub.send(self.conn, reply(request_id, **result))
                return
            handler = HANDLERS.get(frame_type)
            if handler is None:
                raise BadRequest("request.unknown_type", type=frame_type[:64])
            if not self.started:
                await self.start({})
            started = time.perf_counter()
            result = await handler(self.service, self.actor, fields)
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
    service: ChatService = app.state.service
    settings: Settings = app.state.settings
    headers = Headers(scope=websocket.scope)
    # Browsers always send Origin; a cross-site page must not reach the socket
    # with the user's credentials (cross-site WebSocket hijacking).
    if not _origin_ok(settings, headers.get("origin")):
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
        actor = await service.authenticate(token)
        conversation_ids = await service.active_conversation_ids(actor.id)
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


# -- the application -------------------------------------------------------------------------------
STATIC = Path(__file__).with_name("static")
# The widget loads only its own files and talks only to this server.
WIDGET_CSP = ("default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' blob: data:; "
              "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'")


SOCKET_KEY = "chat.socket"
WS_PATH = "/ws"


class WebSocketFastPath:
    """Pure ASGI middleware, the outermost: the hub's way to the socket.

    Starlette's error middleware passes WebSocket scopes through untouched, so
    here ``send`` is still the server's own: its protocol object is noted in
    the scope for the hub's direct writes (see :class:`chat.hub.Connection`).
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

    def __init__(self, app) -> None:
        self.app = app

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


def create_app(settings: Settings, service: ChatService | None = None, migrate: bool = True) -> Starlette:
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
        app.state.service = ChatService(settings, engine)
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
        Route("/api/auth/signout", endpoint(http_signout), methods=["POST"]),
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
    from chat.web_archive import ROUTES as ARCHIVE_ROUTES
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
