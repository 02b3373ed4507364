"""The WebSocket dispatch table: one handler per client frame type
(docs/protocol.md section 5).

A handler reads the frame's fields, calls the service and returns the reply's
fields (or None for no reply unless the frame had an id).  No rule lives here.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from chat.errors import BadRequest
from chat.frames import Fields, parse
from chat.service import HISTORY_DEFAULT, Actor, ChatService

Handler = Callable[[ChatService, Actor, Fields], Awaitable[dict[str, Any] | None]]


async def ws_create(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return {"conversation": await service.create_conversation(actor, fields.int_list("participants"),
                                                              fields.int("child_id", False), fields.str("name", False))}


async def ws_rename(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.rename_conversation(actor, fields.int("conversation_id"), fields.str("name", required=False))


async def ws_add(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.add_participants(actor, fields.int("conversation_id"), fields.int_list("participants"),
                                    fields.bool("share_history", required=False, default=False))


async def ws_remove(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.remove_participant(actor, fields.int("conversation_id"), fields.int("person_id"))


async def ws_leave(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.leave_conversation(actor, fields.int("conversation_id"))


async def ws_send(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.send_message(actor, fields.int("conversation_id"), fields.str("client_id"),
                                      fields.str("text", False, ""), fields.str_list("attachments", required=False))


async def ws_edit(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.edit_message(actor, fields.int("message_id"), fields.str("text"))


async def ws_retract(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.retract_message(actor, fields.int("message_id"))


async def ws_react_add(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.react(actor, fields.int("message_id"), fields.str("emoji"), add=True)


async def ws_react_remove(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.react(actor, fields.int("message_id"), fields.str("emoji"), add=False)


async def ws_read(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.mark_read(actor, fields.int("conversation_id"), fields.int("seq"))


async def ws_typing(service: ChatService, actor: Actor, fields: Fields) -> None:
    await service.typing(actor, fields.int("conversation_id"))


async def ws_lock(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.set_lock(actor, fields.int("conversation_id"), True, fields.str("reason", required=False))


async def ws_unlock(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.set_lock(actor, fields.int("conversation_id"), False)


async def ws_list(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return {"conversations": await service.list_conversations(actor)}


async def ws_history(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    frames = await service.history(actor, fields.int("conversation_id"), after=fields.int("after", False),
                                   before=fields.int("before", False),
                                   limit=fields.int("limit", False, HISTORY_DEFAULT))
    return {"events": [parse(frame) for frame in frames]}


async def ws_announce(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    audience = fields.data.get("audience")
    if audience is None:
        raise BadRequest("request.missing_field", field="audience")
    return await service.announcements.post(actor, audience, fields.str("text"),
                                            fields.bool("urgent", required=False, default=False))


async def ws_announcement_read(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.announcements.mark_read(actor, fields.int("announcement_id"))


async def ws_announcement_react(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.announcements.react(actor, fields.int("announcement_id"), fields.str("emoji"), add=True)


async def ws_announcement_unreact(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.announcements.react(actor, fields.int("announcement_id"), fields.str("emoji"), add=False)


async def ws_announcement_reply(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    service.announcements.refuse_reply()
    return {}


async def ws_announcements(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return {"announcements": await service.announcements.mine(actor, before=fields.int("before", False),
                                                              after=fields.int("after", False),
                                                              limit=fields.int("limit", False, 50))}


async def ws_collective(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.collective.create(actor, fields.str("client_id"), fields.str("text"),
                                           fields.int_list("students", required=False),
                                           fields.int_list("groups", required=False))


async def ws_collective_status(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.collective.status(actor, fields.int("send_id"))


async def ws_notifications(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.notifier.feed(actor, fields.int("child_id", False), fields.int("before", False),
                                       fields.int("limit", False, 30))


async def ws_notification_open(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return {"notification": await service.notifier.open(actor, fields.int("notification_id"))}


async def ws_notifications_read(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.notifier.mark_all_read(actor, fields.int("child_id", False))


async def ws_preferences(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.notifier.preferences(actor)


async def ws_preference_set(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return await service.notifier.set_preference(actor, fields.int("child_id", False), fields.str("kind"),
                                                 fields.bool("enabled"))


async def ws_ping(service: ChatService, actor: Actor, fields: Fields) -> dict[str, Any]:
    return {"pong": True}


async def ws_signout(service: ChatService, actor: Actor, fields: Fields) -> None:
    await service.sign_out(actor)


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
