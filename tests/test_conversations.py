"""Conversations end to end (R1–R5), over a real server and real WebSockets."""

from __future__ import annotations

from sqlalchemy import select

from chat.storage.models import Participant
from tests.conftest import (
    DIRECTION,
    JEAN,
    MARIE,
    NADIA,
    PAUL,
    SECRETARIAT,
    TRANSPORT,
    actor_for,
    child_id,
    other_parent_email,
    person_by_email,
)


async def ids(server, *emails: str) -> list[int]:
    return [(await person_by_email(server.service, e)).id for e in emails]


async def create(client, server, child: str, *emails: str, name: str | None = None) -> dict:
    answer = await client.request(
        "conversation.create", child_id=await child_id(server.service, child), participants=await ids(server, *emails),
        name=name)
    return answer["conversation"]


async def test_parent_starts_conversation_with_childs_teacher_who_sees_it_live(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        conversation = await create(marie, server, "Léa", NADIA)
        joined = await nadia.next("conversation.joined")
        assert joined["conversation"]["id"] == conversation["id"]
        created = await nadia.event("conversation.created")
        assert created["seq"] == 1
        assert {m["name"] for m in created["members"]} == {"Marie Tremblay", "Nadia Chabot"}
        assert created["system"]["fr"] == "Marie Tremblay a créé la conversation."
        assert conversation["notice"]["fr"]  # R11: the response-delay notice comes with it


async def test_r1_conversation_without_school_staff_is_refused(server):
    async with await server.connect(MARIE) as marie:
        answer = await marie.refused("conversation.create", child_id=await child_id(server.service, "Léa"),
                                     participants=await ids(server, JEAN))
        assert answer["code"] == "conversation.no_staff"
        assert answer["message"].startswith("Une conversation doit")
        assert (await marie.request("conversation.list"))["conversations"] == []


async def test_r1_transport_operator_does_not_count_as_school_staff(server):
    async with await server.connect(NADIA) as nadia:
        answer = await nadia.refused("conversation.create", child_id=await child_id(server.service, "Léa"),
                                     participants=await ids(server, TRANSPORT))
        assert answer["code"] == "conversation.invitee_not_allowed"


async def test_r2_parent_may_invite_the_childs_other_guardian_and_school_staff(server):
    async with await server.connect(MARIE) as marie:
        conversation = await create(marie, server, "Léa", NADIA, JEAN, DIRECTION, SECRETARIAT)
        assert len(conversation["members"]) == 5


async def test_r2_parent_may_not_invite_parents_of_other_students(server):
    stranger = await other_parent_email(server.service)
    async with await server.connect(MARIE) as marie:
        answer = await marie.refused("conversation.create", child_id=await child_id(server.service, "Léa"),
                                     participants=await ids(server, NADIA, stranger))
        assert answer["code"] == "conversation.invitee_not_allowed"
        assert answer["fields"]["person_id"] == (await ids(server, stranger))[0]


async def test_r2_parent_may_not_invite_a_teacher_who_does_not_teach_the_child(server):
    async with await server.connect(MARIE) as marie:
        answer = await marie.refused("conversation.create", child_id=await child_id(server.service, "Léa"),
                                     participants=await ids(server, PAUL))
        assert answer["code"] == "conversation.invitee_not_allowed"


async def test_r2_parent_acts_only_for_their_own_child(server):
    async with await server.connect(JEAN) as jean:
        # Noah is Marie's son, not Jean's.
        answer = await jean.refused("conversation.create", child_id=await child_id(server.service, "Noah"),
                                    participants=await ids(server, DIRECTION))
        assert answer["code"] == "conversation.child_not_yours"
        assert answer["message"] == "You are not a guardian of this child."  # Jean reads English (R22)


async def test_r3_any_member_renames_a_group_conversation(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        conversation = await create(marie, server, "Léa", NADIA, JEAN, name="Sortie au musée")
        assert conversation["name"] == "Sortie au musée"
        await nadia.request("conversation.rename", conversation_id=conversation["id"], name="Sortie — 3e année")
        renamed = await marie.event("conversation.renamed")
        assert renamed["name"] == "Sortie — 3e année"
        assert "Nadia Chabot" in renamed["system"]["fr"]


async def test_r4_added_member_with_history_sees_earlier_messages(server):
    async with await server.connect(MARIE) as marie:
        conversation = await create(marie, server, "Léa", NADIA)
        cid = conversation["id"]
        await marie.request("message.send", conversation_id=cid, client_id="m1", text="Avant l'ajout")
        async with await server.connect(JEAN) as jean:
            await marie.request("conversation.add", conversation_id=cid, participants=await ids(server, JEAN),
                                share_history=True)
            added = await jean.event("member.added")
            assert added["history_shared"] is True
            assert "partagé" in added["system"]["fr"] and "shared" in added["system"]["en"]
            history = await jean.request("conversation.history", conversation_id=cid, after=0)
            texts = [e["message"]["text"] for e in history["events"] if e["kind"] == "message.new"]
            assert texts == ["Avant l'ajout"]


async def test_r4_added_member_without_history_sees_only_what_follows(server):
    async with await server.connect(MARIE) as marie:
        conversation = await create(marie, server, "Léa", NADIA)
        cid = conversation["id"]
        await marie.request("message.send", conversation_id=cid, client_id="m1", text="Privé avant l'ajout")
        async with await server.connect(JEAN) as jean:
            await marie.request("conversation.add", conversation_id=cid, participants=await ids(server, JEAN),
                                share_history=False)
            added = await jean.event("member.added")
            assert added["history_shared"] is False
            assert "sans l'historique" in added["system"]["fr"]
            await marie.request("message.send", conversation_id=cid, client_id="m2", text="Après l'ajout")
            assert (await jean.event("message.new"))["message"]["text"] == "Après l'ajout"
            history = await jean.request("conversation.history", conversation_id=cid)
            texts = [e["message"]["text"] for e in history["events"] if e["kind"] == "message.new"]
            assert texts == ["Après l'ajout"]
            assert history["events"][0]["kind"] == "member.added"


async def test_r4_only_eligible_people_can_be_added(server):
    stranger = await other_parent_email(server.service)
    async with await server.connect(MARIE) as marie:
        conversation = await create(marie, server, "Léa", NADIA)
        answer = await marie.refused("conversation.add", conversation_id=conversation["id"],
                                     participants=await ids(server, stranger), share_history=True)
        assert answer["code"] == "conversation.invitee_not_allowed"
        assert len((await marie.request("conversation.list"))["conversations"][0]["members"]) == 2


async def test_r5_only_the_creator_removes_participants(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        conversation = await create(marie, server, "Léa", NADIA, JEAN)
        answer = await nadia.refused("conversation.remove", conversation_id=conversation["id"],
                                     person_id=(await ids(server, JEAN))[0])
        assert answer["code"] == "conversation.not_creator"
        await marie.request("conversation.remove", conversation_id=conversation["id"],
                            person_id=(await ids(server, JEAN))[0])
        removed = await nadia.event("member.removed")
        assert removed["person"] == (await ids(server, JEAN))[0]


async def test_r5_r1_creator_cannot_remove_the_last_staff_member(server):
    async with await server.connect(MARIE) as marie:
        conversation = await create(marie, server, "Léa", NADIA, JEAN)
        answer = await marie.refused("conversation.remove", conversation_id=conversation["id"],
                                     person_id=(await ids(server, NADIA))[0])
        assert answer["code"] == "conversation.no_staff"
        members = (await marie.request("conversation.list"))["conversations"][0]["members"]
        assert "Nadia Chabot" in {m["name"] for m in members}


async def test_r5_r1_last_staff_member_cannot_leave_but_a_parent_can(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        conversation = await create(marie, server, "Léa", NADIA)
        answer = await nadia.refused("conversation.leave", conversation_id=conversation["id"])
        assert answer["code"] == "conversation.no_staff"
        await marie.request("conversation.leave", conversation_id=conversation["id"])
        left = await nadia.event("member.left")
        assert left["system"]["fr"] == "Marie Tremblay a quitté la conversation."
        assert (await marie.next("conversation.left"))["conversation_id"] == conversation["id"]


async def test_removed_member_receives_nothing_more_and_cannot_read_history(server):
    async with await server.connect(MARIE) as marie, await server.connect(JEAN) as jean:
        conversation = await create(marie, server, "Léa", NADIA, JEAN)
        cid = conversation["id"]
        await jean.event("conversation.created")
        await marie.request("conversation.remove", conversation_id=cid, person_id=(await ids(server, JEAN))[0])
        await jean.next("conversation.left")
        await marie.request("message.send", conversation_id=cid, client_id="after", text="Jean ne doit pas lire ceci")
        # Jean is told of his own removal, and then nothing more.
        assert [f["kind"] for f in await jean.events()] == ["member.removed"]
        answer = await jean.refused("conversation.history", conversation_id=cid)
        assert answer["code"] == "conversation.not_found"
        answer = await jean.refused("message.send", conversation_id=cid, client_id="x", text="encore moi")
        assert answer["code"] == "conversation.not_found"
        async with server.service.sessions() as session:
            row = await session.get(Participant, (cid, (await ids(server, JEAN))[0]))
            assert row.active is False  # R9: the membership is kept, only marked inactive
            count = len((await session.execute(select(Participant).where(Participant.conversation_id == cid))).all())
            assert count == 3


async def test_the_list_finds_each_conversation_s_newest_message_at_the_end_of_its_index(service, backend):
    """Every connection's start lists the person's conversations with their newest
    message.  That message is looked up at the end of the (conversation, seq)
    index, conversation by conversation — not by a MAX … GROUP BY that reads
    every message of every conversation — and it is the newest one.  (The plan
    is checked on SQLite; PostgreSQL's depends on its statistics.)"""
    from chat.storage import direct, queries

    marie, nadia = [await actor_for(service, e) for e in (MARIE, NADIA)]
    cid = (await service.membership.create(marie, [nadia.id], await child_id(service, "Léa")))["id"]
    for k in range(3):
        await service.sending.send(marie if k % 2 else nadia, cid, f"m{k}", f"Message {k}")
    listed = {c["id"]: c for c in await service.reading.list_conversations(marie)}
    assert listed[cid]["last_message"]["text"] == "Message 2"
    if backend == "embedded":
        # The statement as the list runs it (on the driver's connection, chat.storage.direct).
        params = {"ids": [cid]}
        compiled = direct.plan(queries.SUMMARY_LAST, service.engine.dialect, params)
        assert "ORDER BY message.seq DESC" in compiled.sql
        async with service.engine.connect() as connection:
            plan = [row[-1] for row in (await connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {compiled.sql}", tuple(compiled.args(params)))).all()]
        assert any("USING COVERING INDEX ix_message_conversation_seq (conversation_id=?)" in step
                   for step in plan), plan
        assert not any("TEMP B-TREE" in step or step.startswith("SCAN message") for step in plan), plan
