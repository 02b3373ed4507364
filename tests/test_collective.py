"""Collective sends (R14): one message, each family in its own private
conversation, answers stay private; a resumable, idempotent job."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from chat.app import App
from chat.clock import ManualClock
from chat.storage.models import CollectiveSend, Group, Message, Student
from tests.client import WAIT
from tests.conftest import DIRECTION, MARIE, NADIA, actor_for


async def group_students(service, code: str) -> list[int]:
    async with service.sessions() as session:
        return list((await session.execute(select(Student.id).join(Group, Group.id == Student.group_id)
                                           .where(Group.code == code).order_by(Student.id))).scalars().all())


async def wait_done(service, send_id: int) -> CollectiveSend:
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        async with service.sessions() as session:
            job = await session.get(CollectiveSend, send_id)
        if job.status == "done":
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"collective send {send_id} did not finish: {job.done}/{job.total}")
        await asyncio.sleep(0.02)


async def messages_with(service, text: str) -> list[Message]:
    async with service.sessions() as session:
        return list((await session.execute(select(Message).where(Message.text == text))).scalars().all())


async def test_each_family_gets_the_message_in_its_own_conversation_and_answers_stay_private(server):
    service = server.service
    students = await group_students(service, "ERA-301")
    async with await server.connect(NADIA) as nadia, await server.connect(MARIE) as marie:
        answer = await nadia.request("collective.send", client_id="sortie-1", text="Sortie vendredi : autorisation?",
                                     groups=[(await group_of(service, "ERA-301"))])
        assert answer["send"]["total"] == len(students) == 5
        job = await wait_done(service, answer["send"]["id"])
        assert job.done == 5
        progress = await nadia.next("collective.progress")
        while progress["status"] != "done":  # published once the job is marked done
            progress = await nadia.next("collective.progress")
        assert progress == {"type": "collective.progress", "send_id": job.id, "done": 5, "total": 5,
                            "status": "done"}
        assert [f for f in await nadia.drain() if f["type"] == "collective.progress"] == []  # the last one
        sent = await messages_with(service, "Sortie vendredi : autorisation?")
        assert len(sent) == 5 and len({m.conversation_id for m in sent}) == 5  # one private conversation each
        event = await marie.event("message.new")
        assert event["message"]["text"] == "Sortie vendredi : autorisation?"
        reply = await marie.request("message.send", conversation_id=event["conversation_id"], client_id="oui",
                                    text="Oui, Léa peut y aller.")
        assert reply["seq"] > event["seq"]
    status = await service.collective.status(await actor_for(service, NADIA), job.id)
    others = [f["conversation_id"] for f in status["families"] if f["conversation_id"] != event["conversation_id"]]
    async with service.sessions() as session:
        leaked = (await session.execute(select(func.count()).select_from(Message).where(
            Message.conversation_id.in_(others), Message.text == "Oui, Léa peut y aller."))).scalar_one()
    assert leaked == 0


async def group_of(service, code: str) -> int:
    async with service.sessions() as session:
        return (await session.execute(select(Group.id).where(Group.code == code))).scalar_one()


async def test_a_retried_collective_send_is_not_sent_twice(service):
    nadia = await actor_for(service, NADIA)
    students = await group_students(service, "ERA-301")
    first = await service.collective.create(nadia, "retry", "Rappel : photo mardi", students)
    again = await service.collective.create(nadia, "retry", "Rappel : photo mardi", students)
    assert again["duplicate"] is True and again["send"]["id"] == first["send"]["id"]
    await wait_done(service, first["send"]["id"])
    assert len(await messages_with(service, "Rappel : photo mardi")) == 5


async def test_a_send_interrupted_mid_way_and_restarted_delivers_exactly_once_to_each_family(settings, engine):
    first_worker = App(settings, engine)
    await first_worker.start()
    nadia = await actor_for(first_worker, NADIA)
    students = await group_students(first_worker, "ERA-301")
    created = await first_worker.collective.create(nadia, "crash", "Conseil d'établissement ce soir", students,
                                                   start=False)
    send_id = created["send"]["id"]
    await first_worker.collective.run(send_id, stop_after=2)  # two families, then the worker dies
    async with first_worker.sessions() as session:
        job = await session.get(CollectiveSend, send_id)
    # It also died after posting to the third family but before recording it.
    await first_worker.collective.deliver_one(nadia, job, students[2])
    await first_worker.stop()
    assert len(await messages_with(first_worker, "Conseil d'établissement ce soir")) == 3

    # The lease of the dead worker must run out before anyone else takes the job.
    async with first_worker.sessions() as session, session.begin():
        (await session.get(CollectiveSend, send_id)).lease_until = 0.0

    second_worker = App(settings, engine)
    await second_worker.start()  # resumes running jobs at start-up
    try:
        job = await wait_done(second_worker, send_id)
        assert job.done == job.total == 5
        sent = await messages_with(second_worker, "Conseil d'établissement ce soir")
        assert len(sent) == 5 and len({m.conversation_id for m in sent}) == 5
    finally:
        await second_worker.stop()


async def test_two_workers_do_not_run_the_same_job_at_once(settings, engine):
    a, b = App(settings, engine), App(settings, engine)
    nadia = await actor_for(a, NADIA)
    created = await a.collective.create(nadia, "lease", "Une seule fois", await group_students(a, "ERA-301"),
                                        start=False)
    send_id = created["send"]["id"]
    assert await a.collective._lease(send_id) is True
    assert await b.collective._lease(send_id) is False  # held by a
    await asyncio.gather(a.collective.run(send_id), b.collective.run(send_id))
    assert len(await messages_with(a, "Une seule fois")) == 5


async def test_parents_cannot_send_collectively_and_teachers_only_to_their_groups(server):
    service = server.service
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        refused = await marie.refused("collective.send", client_id="x", text="Bonjour à tous",
                                      students=await group_students(service, "ERA-301"))
        assert refused["code"] == "forbidden"
        other = await group_students(service, "ERA-101")
        refused = await nadia.refused("collective.send", client_id="y", text="Pas mes élèves", students=other)
        assert refused["code"] == "collective.not_allowed"
    async with service.sessions() as session:
        assert (await session.execute(select(CollectiveSend))).first() is None


async def test_a_job_of_several_steps_reuses_each_familys_conversation_and_skips_a_locked_one(service, monkeypatch):
    """Families go FAMILIES_PER_STEP at a time (here 2, so five families take
    three steps).  A second send to the same families finds the conversations of
    the first (members exactly the sender and the guardians); the family whose
    conversation direction locked meanwhile (R10) is recorded with no message,
    and the others of its step still get theirs."""
    from chat import collective as collective_module

    monkeypatch.setattr(collective_module, "FAMILIES_PER_STEP", 2)
    nadia = await actor_for(service, NADIA)
    direction = await actor_for(service, DIRECTION)
    students = await group_students(service, "ERA-301")
    first = await service.collective.create(nadia, "step-1", "Premier envoi", students)
    await wait_done(service, first["send"]["id"])
    before = await service.collective.status(nadia, first["send"]["id"])
    conversation_of = {f["student_id"]: f["conversation_id"] for f in before["families"]}
    assert len(set(conversation_of.values())) == 5
    locked_student = students[1]
    await service.membership.set_lock(direction, conversation_of[locked_student], True, "enquête")

    second = await service.collective.create(nadia, "step-2", "Deuxième envoi", students)
    job = await wait_done(service, second["send"]["id"])
    assert job.done == job.total == 5
    after = await service.collective.status(nadia, second["send"]["id"])
    for family in after["families"]:
        assert family["delivered"]
        if family["student_id"] == locked_student:
            assert family["conversation_id"] is None and family["message_id"] is None
        else:
            assert family["conversation_id"] == conversation_of[family["student_id"]]  # the same conversation
            assert family["message_id"] is not None
    sent = await messages_with(service, "Deuxième envoi")
    assert sorted(m.conversation_id for m in sent) == sorted(
        c for s, c in conversation_of.items() if s != locked_student)


async def test_a_step_that_outlasts_the_lease_keeps_it(service, monkeypatch):
    """The lease is renewed while a step runs, not only between steps: another
    worker cannot take the job while a slow step is still delivering.  The
    lease's clock is the test's: it moves only when the test moves it, and each
    move waits for the renewal it calls for, so a busy machine changes nothing."""
    from chat import collective as collective_module

    clock = ManualClock(1_000_000.0)
    monkeypatch.setattr(service.collective, "clock", clock)
    monkeypatch.setattr(collective_module, "LEASE_SECONDS", 0.3)
    nadia = await actor_for(service, NADIA)
    created = await service.collective.create(nadia, "slow", "Lent", await group_students(service, "ERA-301"),
                                              start=False)
    send_id = created["send"]["id"]
    send = service.collective.send_message
    sending, finish = asyncio.Event(), asyncio.Event()

    async def slow_send(*args, **kwargs):
        sending.set()
        await finish.wait()  # the step lasts until the test has looked
        return await send(*args, **kwargs)

    async def lease_until() -> float:
        async with service.sessions() as session:
            return (await session.get(CollectiveSend, send_id)).lease_until

    monkeypatch.setattr(service.collective, "send_message", slow_send)
    other = App(service.settings, service.engine)
    other.collective.clock = clock  # another worker, on the same clock
    running = asyncio.create_task(service.collective.run(send_id))
    await sending.wait()
    for _ in range(3):  # 0.6 s in all, twice the lease: without renewal it would have run out
        await clock.advance(0.2)
        deadline = asyncio.get_running_loop().time() + WAIT
        while await lease_until() < clock.time() + 0.3 - 1e-6:  # renewed from the new time on
            assert asyncio.get_running_loop().time() < deadline, "the lease was not renewed during the step"
            await asyncio.sleep(0.02)
    assert await other.collective._lease(send_id) is False
    finish.set()
    await running
    job = await wait_done(service, send_id)
    assert job.done == 5 and len(await messages_with(service, "Lent")) == 5


async def test_a_family_failing_unexpectedly_stops_the_job_after_recording_the_others(service, monkeypatch):
    """A database error on one family (not a refusal): the rest of its step is
    recorded, the job stays running, and running it again finishes it with one
    message per family."""
    nadia = await actor_for(service, NADIA)
    students = await group_students(service, "ERA-301")
    created = await service.collective.create(nadia, "boom", "Une erreur", students, start=False)
    send_id = created["send"]["id"]
    send = service.collective.send_message

    async def failing_send(actor, conversation_id, client_id, text):
        if client_id.endswith(f"-{students[2]}"):
            raise RuntimeError("database went away")
        return await send(actor, conversation_id, client_id, text)

    monkeypatch.setattr(service.collective, "send_message", failing_send)
    with pytest.raises(RuntimeError):
        await service.collective.run(send_id)
    async with service.sessions() as session:
        job = await session.get(CollectiveSend, send_id)
    assert job.status == "running" and job.done == 4
    monkeypatch.setattr(service.collective, "send_message", send)
    await service.collective.run(send_id)
    job = await wait_done(service, send_id)
    assert job.done == 5
    sent = await messages_with(service, "Une erreur")
    assert len(sent) == 5 and len({m.conversation_id for m in sent}) == 5
