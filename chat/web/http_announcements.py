"""HTTP routes of announcements (R11–R13), school-system notices (R12) and
collective sends."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chat.auth import bearer_from_headers
from chat.errors import BadRequest, ChatError
from chat.frames import dumps
from chat.app import App
from chat.people import Actor
from chat.protocol import ANNOUNCEMENT_LIMIT
from chat.web.params import json_body, language, path_id, query_int
from chat.web.responses import error_response


async def http_announcements(service: App, actor: Actor, request: Request) -> Any:
    if request.method == "POST":
        fields = await json_body(request)
        audience = fields.data.get("audience")
        if audience is None:
            raise BadRequest("request.missing_field", field="audience")
        result = await service.announcements.post(actor, audience, fields.str("text"),
                                                  fields.bool("urgent", required=False, default=False))
        return JSONResponse(result, status_code=201)
    return {"announcements": await service.announcements.mine(
        actor, before=query_int(request, "before"), after=query_int(request, "after"),
        limit=query_int(request, "limit", ANNOUNCEMENT_LIMIT))}


async def http_announcement(service: App, actor: Actor, request: Request) -> Any:
    return await service.announcements.detail(actor, path_id(request, "announcement_id"))


async def http_integration_notice(request: Request) -> Response:
    """R12: a school system posts a notice with its integration key (server to server)."""
    service: App = request.app.state.service
    answer_language = language(request)
    try:
        key = await service.announcements.authenticate_key(bearer_from_headers(request.headers.get("authorization")))
        fields = await json_body(request)
        fiches = fields.str_list("students", limit=2000)
        result = await service.announcements.notice(key, fields.str("kind"), fields.str("text"), fiches)
    except ChatError as exc:
        return error_response(exc, answer_language)
    return Response(dumps(result), status_code=201, media_type="application/json")


async def http_collective(service: App, actor: Actor, request: Request) -> Any:
    if request.method == "POST":
        fields = await json_body(request)
        result = await service.collective.create(actor, fields.str("client_id"), fields.str("text"),
                                                 fields.int_list("students", required=False),
                                                 fields.int_list("groups", required=False))
        return JSONResponse(result, status_code=202)
    return await service.collective.status(actor, path_id(request, "send_id"))
