"""HTTP routes of conversations: list, create, read, history, send, uploads
and attachment downloads."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chat.errors import BadRequest, Forbidden
from chat.app import App
from chat.protocol import HISTORY_LIMIT
from chat.people import Actor
from chat.web.params import json_body, origin_ok, path_id, query_int
from chat.web.responses import attachment_response


async def http_conversations(service: App, actor: Actor, request: Request) -> Any:
    if request.method == "POST":
        fields = await json_body(request)
        return await service.membership.create(
            actor, fields.int_list("participants"), fields.int("child_id", required=False), fields.str("name", False))
    return {"conversations": await service.reading.list_conversations(actor)}


async def http_conversation(service: App, actor: Actor, request: Request) -> Any:
    return await service.reading.conversation(actor, path_id(request, "conversation_id"))


async def http_events(service: App, actor: Actor, request: Request) -> Any:
    frames = await service.reading.history(
        actor, path_id(request, "conversation_id"),
        after=query_int(request, "after"), before=query_int(request, "before"),
        limit=query_int(request, "limit", HISTORY_LIMIT),
    )
    # The stored frames are JSON already: join them without decoding.
    return Response('{"events":[' + ",".join(frames) + "]}", media_type="application/json")


async def http_send(service: App, actor: Actor, request: Request) -> Any:
    fields = await json_body(request)
    return await service.sending.send(
        actor, path_id(request, "conversation_id"), fields.str("client_id"), fields.str("text", False, ""),
        fields.str_list("attachments", required=False))


async def http_upload(service: App, actor: Actor, request: Request) -> Any:
    """R7: the raw file as the request body (``?name=`` gives its name), streamed to
    disk within the 20 MB limit and checked by content.  CSRF-safe: it needs the
    bearer token in the Authorization header, which no cross-site form can send."""
    if not origin_ok(request.app.state.settings, request.headers.get("origin")):
        raise Forbidden("origin.forbidden", origin=request.headers.get("origin", "")[:100])
    declared = request.headers.get("content-length")
    try:
        length = int(declared) if declared is not None else None
    except ValueError:
        raise BadRequest("request.wrong_type", field="Content-Length", expected="integer", got=declared[:20]) from None
    stored = await service.store.receive(request.stream(), length, request.query_params.get("name"))
    return JSONResponse({"upload": await service.uploads.upload(actor, stored)}, status_code=201)


async def http_attachment(service: App, actor: Actor, request: Request) -> Any:
    upload = await service.uploads.for_download(actor, request.path_params["upload_id"])
    return attachment_response(service, upload)
