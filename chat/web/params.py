"""Reading a request: its language, JSON body, integer query parameters, path
ids, and whether its browser origin is allowed."""

from __future__ import annotations

from typing import Any

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request

from chat.config import Settings
from chat.errors import BadRequest
from chat.frames import Fields, decimal_int64, parse
from chat.i18n import normalise_language
from chat.people import Actor


def language(request: Request, actor: Actor | None = None) -> str:
    """The language of the answer: the signed-in person's, else the request's ``Accept-Language``."""
    if actor is not None:
        return actor.language
    return normalise_language(request.headers.get("accept-language"))


async def json_body(request: Request) -> Fields:
    """The request body as JSON fields, within the frame size limit (``request.too_large``)."""
    body = await request.body()
    if len(body) > request.app.state.settings.max_frame_bytes:
        raise BadRequest("request.too_large", size=len(body), limit=request.app.state.settings.max_frame_bytes)
    return Fields(parse(body.decode("utf-8", errors="replace")))


def query_int(request: Request, name: str, default: int | None = None) -> int | None:
    """A 64-bit integer query parameter, ``default`` when absent or empty, else ``request.wrong_type``."""
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


def origin_ok(settings: Settings, origin: str | None) -> bool:
    """Whether a browser ``Origin`` may reach the API with a person's credentials."""
    if origin is None:
        return True  # not a browser: native apps and servers authenticate by token only
    allowed = settings.origins
    return "*" in allowed or origin.rstrip("/") in allowed
