"""HTTP routes of direction's archive (R9) and the school's audit log.

Adapters only: parse the query, call :class:`chat.archive.Archive`, render.
Every answer carries ``Cache-Control: no-store``: archived text (retracted
messages included) must not linger in a browser or proxy cache.  There is no
route that changes the audit log, on purpose.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat.archive import HTML_CSP, PAGE_DEFAULT, Archive
from chat.errors import BadRequest
from chat.frames import dumps
from chat.app import App
from chat.people import Actor
from chat.web.endpoint import endpoint
from chat.web.params import path_id, query_int
from chat.web.responses import attachment_response

NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
EXPORT_FORMATS = ("json", "html")


def _json(result: Any) -> Response:
    return Response(dumps(result), media_type="application/json", headers=NO_STORE)


def _query_datetime(request: Request, name: str) -> datetime | None:
    """An ISO 8601 date or date-time (``2026-11-26``, ``2026-11-26T08:00:00-05:00``,
    ``…Z``); without an offset it is read as UTC."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        moment = datetime.fromisoformat(raw)
        if moment.utcoffset() is None:
            return moment.replace(tzinfo=timezone.utc)
        # Compared and stored in UTC: 0001-01-01T00:00+14:00 is a valid date
        # whose instant lies before year 1, and cannot be converted.
        moment.astimezone(timezone.utc)
        return moment
    except (ValueError, OverflowError):
        raise BadRequest("request.wrong_type", field=name, expected="ISO 8601 date-time", got=raw[:40]) from None


def _archive(service: App) -> Archive:
    return Archive(sessions=service.sessions)


async def http_search(service: App, actor: Actor, request: Request) -> Any:
    conversations = await _archive(service).search(
        actor, path_id(request, "school_id"),
        participant=query_int(request, "participant"), child=query_int(request, "child"),
        since=_query_datetime(request, "since"), until=_query_datetime(request, "until"),
        text=request.query_params.get("q"),
        limit=query_int(request, "limit", PAGE_DEFAULT), offset=query_int(request, "offset", 0),
    )
    return _json({"conversations": conversations})


async def http_read(service: App, actor: Actor, request: Request) -> Any:
    return _json(await _archive(service).conversation(actor, path_id(request, "conversation_id")))


async def http_export(service: App, actor: Actor, request: Request) -> Any:
    conversation_id = path_id(request, "conversation_id")
    kind = request.query_params.get("format", "json")
    if kind not in EXPORT_FORMATS:
        raise BadRequest("request.invalid_choice", field="format", expected=" | ".join(EXPORT_FORMATS), got=kind[:20])
    archive = _archive(service)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    # Built from digits only: nothing a person wrote reaches the header.
    filename = f"conversation-{conversation_id}-{stamp}.{kind}"
    headers = NO_STORE | {"Content-Disposition": f'attachment; filename="{filename}"'}
    if kind == "html":
        body = await archive.export_html(actor, conversation_id)
        return Response(body, media_type="text/html; charset=utf-8",
                        headers=headers | {"Content-Security-Policy": HTML_CSP})
    body = await archive.export_json(actor, conversation_id)
    return Response(body, media_type="application/json", headers=headers)


async def http_audit(service: App, actor: Actor, request: Request) -> Any:
    limit, offset = query_int(request, "limit", PAGE_DEFAULT), query_int(request, "offset", 0)
    entries = await _archive(service).audit_log(actor, path_id(request, "school_id"), limit, offset)
    return _json({"entries": entries, "limit": limit, "offset": offset})


async def http_attachment(service: App, actor: Actor, request: Request) -> Any:
    """The same safe download as ``chat.web.http_conversations.http_attachment``, for the direction (audited)."""
    upload = await _archive(service).attachment(actor, request.path_params["upload_id"])
    return attachment_response(service, upload, cache="no-store")


ROUTES = [
    Route("/api/archive/schools/{school_id:id}/conversations", endpoint(http_search)),
    Route("/api/archive/schools/{school_id:id}/audit", endpoint(http_audit)),
    Route("/api/archive/conversations/{conversation_id:id}", endpoint(http_read)),
    Route("/api/archive/conversations/{conversation_id:id}/export", endpoint(http_export)),
    Route("/api/archive/attachments/{upload_id:str}", endpoint(http_attachment)),
]
