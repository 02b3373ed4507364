"""HTTP routes about people: me, contacts, and the demo's picker."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chat.config import Settings
from chat.errors import ChatError, NotFound
from chat.frames import dumps
from chat.app import App
from chat.people import Actor
from chat.web.params import json_body, language, query_int
from chat.web.responses import error_response


async def http_me(service: App, actor: Actor, request: Request) -> Any:
    return await service.people.me(actor)


async def http_language(service: App, actor: Actor, request: Request) -> Any:
    """R22: ``PUT /api/me/language`` {"language": "fr" | "en"}."""
    fields = await json_body(request)
    return {"language": await service.people.set_language(actor, fields.str("language")[:20])}


async def http_contacts(service: App, actor: Actor, request: Request) -> Any:
    return {"contacts": await service.people.contacts(actor, query_int(request, "child_id"))}


async def demo_people(request: Request) -> Response:
    """Demo mode only: the people the widget's picker offers (R20 sign-in is elsewhere)."""
    settings: Settings = request.app.state.settings
    answer_language = language(request)
    if not settings.demo:
        return error_response(NotFound("demo.off"), answer_language)
    service: App = request.app.state.service
    if request.method == "POST":
        try:
            fields = await json_body(request)
            tokens = await service.accounts.open_session(fields.int("person_id"), "demo")
        except ChatError as exc:
            return error_response(exc, answer_language)
        return JSONResponse({"token": tokens["access_token"], **tokens})
    return Response(dumps({"people": await service.people.demo_people()}), media_type="application/json")
