"""Messages end to end: send, idempotency, edit (R8, R9), retract (R8, R9),
reactions (R6), read markers and unread counts, typing."""

from __future__ import annotations

from sqlalchemy import func, select

from chat.storage.models import Event, Message, MessageVersion, Reaction
from tests.conftest import JEAN, MARIE, NADIA, actor_for, child_id, person_by_email


async def start_conversation(server, marie, *emails: str) -> int:
    people = [(await person_by_email(server.service, e)).id for e in emails or (NADIA,)]
    answer = await marie.request("conversation.create", child_id=await child_id(server.service, "Léa"),
                                 participants=people)
    return answer["conversation"]["id"]


async def count(server, model, *where) -> int:
    async with server.service.sessions() as session:
        return (await session.execute(select(func.count()).select_from(model).where(*where))).scalar_one()


async def test_message_is_committed_before_it_is_acknowledged_and_delivered(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        cid = await start_conversation(server, marie)
        ack = await marie.request("message.send", conversation_id=cid, client_id="c-1", text="Léa a de la fièvre.")
        async with server.service.sessions() as session:
            stored = await session.get(Message, ack["message_id"])
        assert stored is not None and stored.text == "Léa a de la fièvre." and stored.seq == ack["seq"]
        event = await nadia.event("message.new")
        assert event["seq"] == ack["seq"] == 2
        assert event["message"] == {"id": ack["message_id"], "client_id": "c-1", "author": marie.hello["person"]["id"],
                                    "text": "Léa a de la fièvre.", "created_at": ack["created_at"], "version": 1,
                                    "attachments": []}


async def test_retried_send_with_the_same_client_id_returns_the_same_message_and_delivers_once(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        cid = await start_conversation(server, marie)
        first = await marie.request("message.send", conversation_id=cid, client_id="retry-me", text="Bonjour")
        again = await marie.request("message.send", conversation_id=cid, client_id="retry-me", text="Bonjour")
        assert again["message_id"] == first["message_id"] and again["seq"] == first["seq"]
        assert (first["duplicate"], again["duplicate"]) == (False, True)
        assert [(await nadia.event())["kind"] for _ in range(2)] == ["conversation.created", "message.new"]
        assert await nadia.events() == []  # delivered once
        assert await count(server, Message, Message.conversation_id == cid) == 1


async def test_a_client_id_cannot_be_reused_in_another_conversation(server):
    async with await server.connect(MARIE) as marie:
        first = await start_conversation(server, marie)
        second = await start_conversation(server, marie, NADIA, JEAN)
        await marie.request("message.send", conversation_id=first, client_id="same", text="un")
        answer = await marie.refused("message.send", conversation_id=second, client_id="same", text="deux")
        assert answer["code"] == "message.client_id_reused"
        assert await count(server, Message, Message.conversation_id == second) == 0


async def test_r8_author_edits_and_r9_every_earlier_version_is_kept(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        cid = await start_conversation(server, marie)
        sent = await marie.request("message.send", conversation_id=cid, client_id="e", text="Version 1")
        await marie.request("message.edit", message_id=sent["message_id"], text="Version 2")
        edited = await marie.request("message.edit", message_id=sent["message_id"], text="Version 3")
        assert edited["version"] == 3
        events = [await nadia.event("message.edited") for _ in range(2)]
        assert [e["message"]["text"] for e in events] == ["Version 2", "Version 3"]
        assert [e for e in await nadia.events() if e["kind"] == "message.edited"] == []
        async with server.service.sessions() as session:
            versions = (await session.execute(select(MessageVersion.version, MessageVersion.text).where(
                MessageVersion.message_id == sent["message_id"]).order_by(MessageVersion.version))).all()
            message = await session.get(Message, sent["message_id"])
        assert [tuple(v) for v in versions] == [(1, "Version 1"), (2, "Version 2")]
        assert message.text == "Version 3" and message.edited_at is not None


async def test_r8_only_the_author_edits_or_retracts(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        cid = await start_conversation(server, marie)
        sent = await marie.request("message.send", conversation_id=cid, client_id="m", text="À moi")
        assert (await nadia.refused("message.edit", message_id=sent["message_id"], text="Non"))["code"] == "message.not_author"
        assert (await nadia.refused("message.retract", message_id=sent["message_id"]))["code"] == "message.not_author"
        async with server.service.sessions() as session:
            assert (await session.get(Message, sent["message_id"])).text == "À moi"


async def test_r8_retracted_message_is_hidden_from_members_but_r9_kept_in_the_archive(server):
    secret = "Texte à retirer 4f7d"
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        cid = await start_conversation(server, marie)
        sent = await marie.request("message.send", conversation_id=cid, client_id="r", text=secret)
        await marie.request("message.edit", message_id=sent["message_id"], text=secret + " (modifié)")
        await marie.request("message.retract", message_id=sent["message_id"])
        retracted = await nadia.event("message.retracted")
        assert retracted["message"] == {"id": sent["message_id"], "author": marie.hello["person"]["id"], "text": "",
                                        "retracted": True}
        assert retracted["system"] == {"fr": "Message retiré", "en": "Message removed"}
        history = await nadia.request("conversation.history", conversation_id=cid, after=0)
        assert secret not in str(history)
        assert [e["message"]["retracted"] for e in history["events"] if e["kind"] == "message.new"] == [True]
        listed = (await nadia.request("conversation.list"))["conversations"][0]
        assert listed["last_message"]["retracted"] is True and listed["last_message"]["text"] == ""
        answer = await marie.refused("message.edit", message_id=sent["message_id"], text="encore")
        assert answer["code"] == "message.retracted"
        async with server.service.sessions() as session:
            message = await session.get(Message, sent["message_id"])
            versions = (await session.execute(select(MessageVersion.text).where(
                MessageVersion.message_id == message.id))).scalars().all()
        assert message.retracted_at is not None and message.text == secret + " (modifié)"
        assert versions == [secret]


async def test_r6_reactions_add_and_remove_with_counts_and_who_reacted(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        cid = await start_conversation(server, marie, NADIA, JEAN)
        async with await server.connect(JEAN) as jean:
            sent = await nadia.request("message.send", conversation_id=cid, client_id="n", text="Sortie vendredi")
            first = await marie.request("reaction.add", message_id=sent["message_id"], emoji="👍")
            second = await jean.request("reaction.add", message_id=sent["message_id"], emoji="👍")
            assert (first["count"], second["count"]) == (1, 2)
            again = await jean.request("reaction.add", message_id=sent["message_id"], emoji="👍")
            assert again == again | {"count": 2, "changed": False}
            reactions = [(await nadia.event("reaction.added"))["reaction"] for _ in range(2)]
            assert [(r["person"], r["count"]) for r in reactions] == [
                (marie.hello["person"]["id"], 1), (jean.hello["person"]["id"], 2)]
            assert [e for e in await nadia.events() if e["kind"].startswith("reaction.")] == []  # not the repeat
            removed = await marie.request("reaction.remove", message_id=sent["message_id"], emoji="👍")
            assert removed["count"] == 1
            event = await nadia.event("reaction.removed")
            assert event["reaction"] == {"message_id": sent["message_id"], "emoji": "👍",
                                         "person": marie.hello["person"]["id"], "count": 1}
            assert await count(server, Reaction, Reaction.message_id == sent["message_id"]) == 1


async def test_unread_counts_follow_messages_and_read_markers_across_devices(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        cid = await start_conversation(server, marie)
        async with await server.connect(NADIA) as nadia_phone:
            for i in range(3):
                await marie.request("message.send", conversation_id=cid, client_id=f"u{i}", text=f"Message {i}")
            listed = (await nadia.request("conversation.list"))["conversations"][0]
            assert listed["unread"] == 3 and listed["last_message"]["text"] == "Message 2"
            assert (await marie.request("conversation.list"))["conversations"][0]["unread"] == 0  # own messages
            answer = await nadia.request("read", conversation_id=cid, seq=listed["last_seq"] - 1)
            assert answer["unread"] == 1
            synced = await nadia_phone.next("read")
            assert synced == {"type": "read", "conversation_id": cid, "seq": listed["last_seq"] - 1, "unread": 1}
            await nadia.request("read", conversation_id=cid, seq=1)  # never moves back
            assert (await nadia.request("conversation.list"))["conversations"][0]["unread"] == 1


async def test_typing_reaches_the_others_and_is_never_stored(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        cid = await start_conversation(server, marie)
        await nadia.event("conversation.created")
        before = await count(server, Event, Event.conversation_id == cid)
        await marie.send("typing", conversation_id=cid)
        typing = await nadia.next("typing")
        assert typing == {"type": "typing", "conversation_id": cid, "person": marie.hello["person"]["id"]}
        assert [f for f in await marie.drain() if f.get("type") == "typing"] == []
        assert await count(server, Event, Event.conversation_id == cid) == before


async def test_unread_counts_only_what_a_member_may_see_by_others_and_not_retracted(service):
    """The unread count of each list entry: messages by others after the read
    marker, from the member's first visible seq (R4: added without history), a
    retracted one left out (R8), the member's own never counted."""
    marie, nadia, jean = [await actor_for(service, e) for e in (MARIE, NADIA, JEAN)]
    cid = (await service.membership.create(marie, [nadia.id], await child_id(service, "Léa")))["id"]
    for k in range(3):
        await service.sending.send(nadia, cid, f"before-{k}", f"Avant {k}")
    await service.membership.add(marie, cid, [jean.id], share_history=False)
    kept = await service.sending.send(nadia, cid, "after-0", "Après 0")
    retracted = await service.sending.send(nadia, cid, "after-1", "Après 1")
    await service.messages.retract(nadia, retracted["message_id"])

    def unread(listing):
        return {c["id"]: c["unread"] for c in listing}[cid]

    assert unread(await service.reading.list_conversations(jean)) == 1  # "Après 0" only
    assert unread(await service.reading.list_conversations(marie)) == 4  # Nadia's, less the retracted one
    assert unread(await service.reading.list_conversations(nadia)) == 0  # her own
    answer = await service.messages.mark_read(jean, cid, kept["seq"])
    assert answer["unread"] == 0 and unread(await service.reading.list_conversations(jean)) == 0
