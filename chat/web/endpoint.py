"""The wrapper of every authenticated HTTP route: bearer token, rate limit,
the handler, the result or the domain error as JSON."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from chat.auth import bearer_from_headers
from chat.errors import ChatError
from chat.frames import dumps
from chat.app import App
from chat.people import Actor
from chat.web.limits import limit_person
from chat.web.params import language
from chat.web.responses import error_response


def endpoint(handler: Callable[[App, Actor, Request], Awaitable[Any]]) -> Callable:
    """Authenticate, call the service, render the result or the error as JSON."""

    async def route(request: Request) -> Response:
        service: App = request.app.state.service
        actor: Actor | None = None
        try:
            token = bearer_from_headers(request.headers.get("authorization"))
            actor = await service.people.authenticate(token)
            limit_person(request.app.state, actor.id)
            result = await handler(service, actor, request)
        except ChatError as exc:
            return error_response(exc, language(request, actor))
        if isinstance(result, Response):
            return result
        return Response(dumps(result), media_type="application/json")

    return route
