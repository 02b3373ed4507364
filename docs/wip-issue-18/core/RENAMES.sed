# issue 18 (core): ChatService split into chat.app.App + chat.people + chat.schools + chat.conversations.*
# Apply to chat/web*.py (or chat/web/*.py) and tests/*.py:  sed -E -i -f RENAMES.sed FILES
# ("service" below also matches server.service, self.service, app.state.service; "s." the ws handlers' first argument)
# (and o.other, other, first, a: worker objects in tests; by hand: test_outage monkeypatches server.service.reading.positions)
s/\b(service|s|other|first|a)\.authenticate\(/\1.people.authenticate(/g
s/\b(service|s|other|first|a)\.sign_out\(/\1.people.sign_out(/g
s/\b(service|s|other|first|a)\.me\(/\1.people.me(/g
s/\b(service|s|other|first|a)\.contacts\(/\1.people.contacts(/g
s/\b(service|s|other|first|a)\.demo_people\(/\1.people.demo_people(/g
s/\b(service|s|other|first|a)\.demo_token\(/\1.people.demo_token(/g
s/\b(service|s|other|first|a)\.mint_token\(/\1.people.mint_token(/g
s/\b(service|s|other|first|a)\.create_conversation\(/\1.membership.create(/g
s/\b(service|s|other|first|a)\.rename_conversation\(/\1.membership.rename(/g
s/\b(service|s|other|first|a)\.add_participants\(/\1.membership.add(/g
s/\b(service|s|other|first|a)\.remove_participant\(/\1.membership.remove(/g
s/\b(service|s|other|first|a)\.leave_conversation\(/\1.membership.leave(/g
s/\b(service|s|other|first|a)\.set_lock\(/\1.membership.set_lock(/g
s/\b(service|s|other|first|a)\.send_message\b/\1.sending.send/g
s/\b(service|s|other|first|a)\._send_one\(/\1.sending.send_alone(/g
s/\b(service|s|other|first|a)\.sender\b/\1.sending/g
s/\b(service|s|other|first|a)\.edit_message\(/\1.messages.edit(/g
s/\b(service|s|other|first|a)\.retract_message\(/\1.messages.retract(/g
s/\b(service|s|other|first|a)\.react\(/\1.messages.react(/g
s/\b(service|s|other|first|a)\.typing\(/\1.messages.typing(/g
s/\b(service|s|other|first|a)\.mark_read\(/\1.messages.mark_read(/g
s/\b(service|s|other|first|a)\.list_conversations\(/\1.reading.list_conversations(/g
s/\b(service|s|other|first|a)\.conversation\(/\1.reading.conversation(/g
s/\b(service|s|other|first|a)\.history\(/\1.reading.history(/g
s/\b(service|s|other|first|a)\.replay\(/\1.reading.replay(/g
s/\b(service|s|other|first|a)\.positions\(/\1.reading.positions(/g
s/\b(service|s|other|first|a)\.active_conversation_ids\(/\1.reading.active_conversation_ids(/g
s/\b(service|s|other|first|a)\.resume_checks\(/\1.reading.resume_checks(/g
s/\b(service|s|other|first|a)\.refresh_connections\b/\1.reading.refresh_connections/g
s/\b(service|s|other|first|a)\.upload\(/\1.uploads.upload(/g
s/\b(service|s|other|first|a)\.attachment_for_download\(/\1.uploads.for_download(/g
s/\b(service|s|other|first|a)\.collect_uploads\(/\1.uploads.collect(/g
s/\b(service|s|other|first|a)\.school_features\(/\1.schools.school_features(/g
s/\b(service|s|other|first|a)\.require_feature\(/\1.schools.require_feature(/g
s/\b(service|s|other|first|a)\._features\b/\1.schools.features/g
s/\b(service|s|other|first|a)\._checkpoint_task\b/\1.checkpoint_task/g
s/from chat\.service import HISTORY_DEFAULT, Actor, ChatService/from chat.app import App\nfrom chat.conversations.reading import HISTORY_DEFAULT\nfrom chat.people import Actor/
s/from chat\.service import Actor, ChatService/from chat.app import App\nfrom chat.people import Actor/
s/from chat\.service import ChatService/from chat.app import App/
s/from chat\.service import UPLOAD_TTL_SECONDS/from chat.conversations.uploads import UPLOAD_TTL_SECONDS/
s/from chat import service as service_module/from chat.policies import resume as service_module/
s/service_module\._SUMMARY_LAST/queries.SUMMARY_LAST/g
s/from chat\.sending import _existing/from chat.storage.queries import existing_messages as _existing/
s/from chat\.sending import/from chat.conversations.sending import/
s/\bChatService\b/App/g
# Not a sed job (port by hand into the WebSocket session's start(), chat/web/ws.py):
# the resume plan is decided by chat.policies.resume.plan(positions, reasons, latest) ->
# ResumePlan(resumed, reset, live); start() only tracks plan.resumed (replay=True, from
# positions[cid]) then plan.live, and answers {"resumed": plan.resumed, "reset": plan.reset, ...}.
