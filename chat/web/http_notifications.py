"""HTTP routes of the notification feed and its preferences."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from chat.app import App
from chat.people import Actor
from chat.protocol import NOTIFICATION_LIMIT
from chat.web.params import json_body, path_id, query_int


async def http_notifications(service: App, actor: Actor, request: Request) -> Any:
    return await service.notifier.feed(actor, query_int(request, "child_id"), query_int(request, "before"),
                                       query_int(request, "limit", NOTIFICATION_LIMIT))


async def http_notification(service: App, actor: Actor, request: Request) -> Any:
    return await service.notifier.open(actor, path_id(request, "notification_id"))


async def http_notifications_read(service: App, actor: Actor, request: Request) -> Any:
    fields = await json_body(request)
    return await service.notifier.mark_all_read(actor, fields.int("child_id", required=False))


async def http_preferences(service: App, actor: Actor, request: Request) -> Any:
    if request.method == "PUT":
        fields = await json_body(request)
        return await service.notifier.set_preference(actor, fields.int("child_id", False), fields.str("kind"),
                                                     fields.bool("enabled"))
    return await service.notifier.preferences(actor)
