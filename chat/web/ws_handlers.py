"""The WebSocket dispatch table: one handler per client frame type
(docs/protocol.md section 5).

A handler takes its frame decoded into its Struct (:data:`chat.protocol.CLIENT_FRAMES`),
calls the use case and returns the reply's fields (or None for no reply unless
the frame had an id).  No rule lives here.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from chat import protocol
from chat.app import App
from chat.frames import parse
from chat.people import Actor

Handler = Callable[[App, Actor, Any], Awaitable[dict[str, Any] | None]]


async def ws_create(service: App, actor: Actor, frame: protocol.ConversationCreate) -> dict[str, Any]:
    return {"conversation": await service.membership.create(actor, frame.participants, frame.child_id, frame.name)}


async def ws_rename(service: App, actor: Actor, frame: protocol.ConversationRename) -> dict[str, Any]:
    return await service.membership.rename(actor, frame.conversation_id, frame.name)


async def ws_add(service: App, actor: Actor, frame: protocol.ConversationAdd) -> dict[str, Any]:
    return await service.membership.add(actor, frame.conversation_id, frame.participants, frame.share_history)


async def ws_remove(service: App, actor: Actor, frame: protocol.ConversationRemove) -> dict[str, Any]:
    return await service.membership.remove(actor, frame.conversation_id, frame.person_id)


async def ws_leave(service: App, actor: Actor, frame: protocol.ConversationLeave) -> dict[str, Any]:
    return await service.membership.leave(actor, frame.conversation_id)


async def ws_send(service: App, actor: Actor, frame: protocol.MessageSend) -> dict[str, Any]:
    return await service.sending.send(actor, frame.conversation_id, frame.client_id, frame.text, frame.attachments)


async def ws_edit(service: App, actor: Actor, frame: protocol.MessageEdit) -> dict[str, Any]:
    return await service.messages.edit(actor, frame.message_id, frame.text)


async def ws_retract(service: App, actor: Actor, frame: protocol.MessageRetract) -> dict[str, Any]:
    return await service.messages.retract(actor, frame.message_id)


async def ws_react_add(service: App, actor: Actor, frame: protocol.ReactionAdd) -> dict[str, Any]:
    return await service.messages.react(actor, frame.message_id, frame.emoji, add=True)


async def ws_react_remove(service: App, actor: Actor, frame: protocol.ReactionRemove) -> dict[str, Any]:
    return await service.messages.react(actor, frame.message_id, frame.emoji, add=False)


async def ws_read(service: App, actor: Actor, frame: protocol.Read) -> dict[str, Any]:
    return await service.messages.mark_read(actor, frame.conversation_id, frame.seq)


async def ws_typing(service: App, actor: Actor, frame: protocol.Typing) -> None:
    await service.messages.typing(actor, frame.conversation_id)


async def ws_lock(service: App, actor: Actor, frame: protocol.ConversationLock) -> dict[str, Any]:
    return await service.membership.set_lock(actor, frame.conversation_id, True, frame.reason)


async def ws_unlock(service: App, actor: Actor, frame: protocol.ConversationUnlock) -> dict[str, Any]:
    return await service.membership.set_lock(actor, frame.conversation_id, False)


async def ws_list(service: App, actor: Actor, frame: protocol.ConversationList) -> dict[str, Any]:
    return {"conversations": await service.reading.list_conversations(actor)}


async def ws_history(service: App, actor: Actor, frame: protocol.ConversationHistory) -> dict[str, Any]:
    frames = await service.reading.history(actor, frame.conversation_id, after=frame.after, before=frame.before, limit=frame.limit)
    return {"events": [parse(event) for event in frames]}


async def ws_announce(service: App, actor: Actor, frame: protocol.AnnouncementPost) -> dict[str, Any]:
    return await service.announcements.post(actor, frame.audience_value(), frame.text, frame.urgent)


async def ws_announcement_read(service: App, actor: Actor, frame: protocol.AnnouncementRead) -> dict[str, Any]:
    return await service.announcements.mark_read(actor, frame.announcement_id)


async def ws_announcement_react(service: App, actor: Actor, frame: protocol.AnnouncementReact) -> dict[str, Any]:
    return await service.announcements.react(actor, frame.announcement_id, frame.emoji, add=True)


async def ws_announcement_unreact(service: App, actor: Actor, frame: protocol.AnnouncementUnreact) -> dict[str, Any]:
    return await service.announcements.react(actor, frame.announcement_id, frame.emoji, add=False)


async def ws_announcement_reply(service: App, actor: Actor, frame: protocol.AnnouncementReply) -> dict[str, Any]:
    service.announcements.refuse_reply()
    return {}


async def ws_announcements(service: App, actor: Actor, frame: protocol.AnnouncementList) -> dict[str, Any]:
    return {"announcements": await service.announcements.mine(actor, before=frame.before, after=frame.after, limit=frame.limit)}


async def ws_collective(service: App, actor: Actor, frame: protocol.CollectiveSend) -> dict[str, Any]:
    return await service.collective.create(actor, frame.client_id, frame.text, frame.students, frame.groups)


async def ws_collective_status(service: App, actor: Actor, frame: protocol.CollectiveStatus) -> dict[str, Any]:
    return await service.collective.status(actor, frame.send_id)


async def ws_notifications(service: App, actor: Actor, frame: protocol.NotificationList) -> dict[str, Any]:
    return await service.notifier.feed(actor, frame.child_id, frame.before, frame.limit)


async def ws_notification_open(service: App, actor: Actor, frame: protocol.NotificationOpen) -> dict[str, Any]:
    return {"notification": await service.notifier.open(actor, frame.notification_id)}


async def ws_notifications_read(service: App, actor: Actor, frame: protocol.NotificationReadAll) -> dict[str, Any]:
    return await service.notifier.mark_all_read(actor, frame.child_id)


async def ws_preferences(service: App, actor: Actor, frame: protocol.PreferencesGet) -> dict[str, Any]:
    return await service.notifier.preferences(actor)


async def ws_preference_set(service: App, actor: Actor, frame: protocol.PreferencesSet) -> dict[str, Any]:
    return await service.notifier.set_preference(actor, frame.child_id, frame.kind, frame.enabled)


async def ws_ping(service: App, actor: Actor, frame: protocol.Ping) -> dict[str, Any]:
    return {"pong": True}


async def ws_signout(service: App, actor: Actor, frame: protocol.Signout) -> None:
    await service.accounts.sign_out(actor)


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
