"""Group commit of ``message.send`` (chat/sending.py): sends that wait together
share a transaction, yet each is checked, numbered and answered as if alone,
and a refused one changes nothing."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from chat.app import App
from chat.attachments import StoredFile
from chat.conversations import sending
from chat.errors import ChatError
from chat.frames import parse
from chat.storage.models import Event, Message, Upload
from tests.conftest import DIRECTION, JEAN, MARIE, NADIA, actor_for, child_id, other_parent_email


async def stored_seqs(service, cid: int) -> list[int]:
    async with service.sessions() as session:
        return list((await session.execute(
            select(Event.seq).where(Event.conversation_id == cid).order_by(Event.seq))).scalars().all())


async def message_count(service) -> int:
    async with service.sessions() as session:
        return (await session.execute(select(func.count()).select_from(Message))).scalar_one()


async def outcome(coroutine):
    try:
        return await coroutine
    except ChatError as exc:
        return exc.code


async def test_one_batch_numbers_each_conversation_and_refuses_only_the_bad_sends(service):
    marie, nadia, jean, direction = [await actor_for(service, e) for e in (MARIE, NADIA, JEAN, DIRECTION)]
    stranger = await actor_for(service, await other_parent_email(service))
    lea = await child_id(service, "Léa")
    first = (await service.membership.create(marie, [nadia.id, jean.id], lea))["id"]
    second = (await service.membership.create(marie, [nadia.id], lea))["id"]
    locked = (await service.membership.create(jean, [nadia.id], lea))["id"]
    await service.membership.set_lock(direction, locked, True, "pause")
    before = await message_count(service)
    batches = service.sending.batches

    sends = []
    for i in range(6):
        sends.append(service.sending.send(marie, first, f"a{i}", f"premier {i}"))
        sends.append(service.sending.send(nadia, second, f"b{i}", f"second {i}"))
    sends.append(service.sending.send(stranger, first, "x", "intrus"))      # not a member (R1)
    sends.append(service.sending.send(jean, locked, "l", "verrouillée"))    # locked (R10)
    sends.append(service.sending.send(jean, 999_999, "u", "inconnue"))      # no such conversation
    sends.append(service.sending.send(jean, first, "j", "Jean aussi"))
    results = await asyncio.gather(*(outcome(s) for s in sends))

    assert results[12:15] == ["conversation.not_found", "conversation.locked", "conversation.not_found"]
    acks = [r for r in results if isinstance(r, dict)]
    assert len(acks) == 13 and not any(a["duplicate"] for a in acks)
    # Sends submitted together went out in fewer transactions than sends.
    assert service.sending.batches - batches < 13
    # Gap-free per conversation, in submission order, nothing written for the refused.
    assert [r["seq"] for r in results[0:12:2]] + [results[15]["seq"]] == list(range(2, 9))
    assert [r["seq"] for r in results[1:12:2]] == list(range(2, 8))
    assert await stored_seqs(service, first) == list(range(1, 9))
    assert await stored_seqs(service, second) == list(range(1, 8))
    assert await stored_seqs(service, locked) == [1, 2]  # created, then locked: no message
    assert await message_count(service) == before + 13
    # Each member's own message counts as read; the others' are unread.
    listed = {c["id"]: c for c in await service.reading.list_conversations(jean)}
    assert listed[first]["unread"] == 0
    listed = {c["id"]: c for c in await service.reading.list_conversations(nadia)}
    assert listed[first]["unread"] == 7


async def test_a_repeated_client_id_in_one_batch_is_one_message(service):
    marie, nadia = [await actor_for(service, e) for e in (MARIE, NADIA)]
    lea = await child_id(service, "Léa")
    cid = (await service.membership.create(marie, [nadia.id], lea))["id"]
    other = (await service.membership.create(marie, [nadia.id], lea, name="Autre"))["id"]
    before = await message_count(service)
    one, again, elsewhere = await asyncio.gather(
        outcome(service.sending.send(marie, cid, "same", "Bonjour")),
        outcome(service.sending.send(marie, cid, "same", "Bonjour")),
        outcome(service.sending.send(marie, other, "same", "Bonjour")),
    )
    assert one["message_id"] == again["message_id"] and one["seq"] == again["seq"] == 2
    assert (one["duplicate"], again["duplicate"]) == (False, True)
    assert elsewhere == "message.client_id_reused"
    assert await message_count(service) == before + 1
    # A later retry is answered from the database, as a duplicate.
    retry = await service.sending.send(marie, cid, "same", "Bonjour")
    assert retry["message_id"] == one["message_id"] and retry["duplicate"] is True


async def test_two_workers_racing_on_one_client_id_commit_one_message(service, settings, engine):
    """Two services on one database (two workers) get the same retry at once:
    one message, and both answers name it."""
    other = App(settings, engine)
    await other.start()
    try:
        marie, nadia = [await actor_for(service, e) for e in (MARIE, NADIA)]
        cid = (await service.membership.create(marie, [nadia.id], await child_id(service, "Léa")))["id"]
        before = await message_count(service)
        for i in range(5):
            a, b = await asyncio.gather(service.sending.send(marie, cid, f"race{i}", "Bonjour"),
                                        other.sending.send(marie, cid, f"race{i}", "Bonjour"))
            assert a["message_id"] == b["message_id"]
            assert sorted([a["duplicate"], b["duplicate"]]) == [False, True]
        assert await message_count(service) == before + 5
        assert await stored_seqs(service, cid) == list(range(1, 7))
    finally:
        await other.stop()


async def test_sends_with_and_without_attachments_interleave_gap_free(service):
    """A send with attachments goes through the same batches as the others (R7:
    its uploads checked and attached in the batch's transaction): they share the
    conversation's seq counter, and each upload is attached to its own message."""
    marie, nadia = [await actor_for(service, e) for e in (MARIE, NADIA)]
    cid = (await service.membership.create(marie, [nadia.id], await child_id(service, "Léa")))["id"]
    uploads = [(await service.uploads.upload(marie, StoredFile(f"{i:064x}", 1000 + i, "application/pdf",
                                                                 f"note{i}.pdf")))["id"] for i in range(5)]
    sends = [service.sending.send(marie if i % 2 else nadia, cid, f"i{i}", f"texte {i}") for i in range(20)]
    sends += [service.sending.send(marie, cid, f"file{i}", f"pièce {i}", [upload]) for i, upload in enumerate(uploads)]
    acks = await asyncio.gather(*sends)
    assert sorted(a["seq"] for a in acks) == list(range(2, 27))
    assert await stored_seqs(service, cid) == list(range(1, 27))
    async with service.sessions() as session:
        attached = {u.id: (u.message_id, u.conversation_id) for u in
                    (await session.execute(select(Upload).where(Upload.id.in_(uploads)))).scalars()}
    assert attached == {upload: (ack["message_id"], cid) for upload, ack in zip(uploads, acks[20:])}
    frames = await service.reading.history(marie, cid, limit=30)
    events = [parse(frame) for frame in frames]
    shown = {e["message"]["client_id"]: e["message"]["attachments"] for e in events if e["kind"] == "message.new"}
    assert [[a["name"] for a in shown[f"file{i}"]] for i in range(5)] == [[f"note{i}.pdf"] for i in range(5)]
    assert shown["i0"] == []


async def test_two_sends_at_once_cannot_attach_the_same_upload(service):
    """R7: an upload is attached once, whether the two sends are written in one
    transaction or in two: the second is refused, the first goes through."""
    marie, nadia = [await actor_for(service, e) for e in (MARIE, NADIA)]
    cid = (await service.membership.create(marie, [nadia.id], await child_id(service, "Léa")))["id"]
    upload = (await service.uploads.upload(marie, StoredFile("ab" * 32, 10, "application/pdf", "x.pdf")))["id"]
    first, second = await asyncio.gather(
        service.sending.send(marie, cid, "one", "", [upload]), service.sending.send(marie, cid, "two", "", [upload]),
        return_exceptions=True)
    assert first["seq"] == 2
    assert isinstance(second, ChatError) and second.code == "attachment.already_used"
    assert await stored_seqs(service, cid) == [1, 2]


async def test_a_repeat_of_a_refused_send_is_refused_even_when_the_first_was_cancelled(service):
    """The first of two sends with one client_id was cancelled (its socket closed)
    and is refused (locked, R10): the repeat gets the same refusal, never an
    answer naming a message that does not exist."""
    from chat.conversations.sending import Send

    jean, nadia, direction = [await actor_for(service, e) for e in (JEAN, NADIA, DIRECTION)]
    cid = (await service.membership.create(jean, [nadia.id], await child_id(service, "Léa")))["id"]
    await service.membership.set_lock(direction, cid, True)
    loop = asyncio.get_running_loop()
    first = Send(jean, cid, "k", "texte", loop.create_future())
    again = Send(jean, cid, "k", "texte", loop.create_future())
    first.future.cancel()
    await service.sending._run([first, again])
    with pytest.raises(ChatError) as refused:
        again.future.result()
    assert refused.value.code == "conversation.locked"
    assert await stored_seqs(service, cid) == [1, 2]  # created, locked: nothing more


async def test_a_send_cancelled_before_its_batch_is_not_written(service):
    marie, nadia = [await actor_for(service, e) for e in (MARIE, NADIA)]
    cid = (await service.membership.create(marie, [nadia.id], await child_id(service, "Léa")))["id"]
    before = await message_count(service)
    kept = asyncio.ensure_future(service.sending.send(marie, cid, "kept", "reste"))
    dropped = asyncio.ensure_future(service.sending.send(marie, cid, "dropped", "annulé"))
    await asyncio.sleep(0)  # both have joined the queue; the batch has not run yet
    dropped.cancel()
    assert (await kept)["seq"] == 2
    assert await message_count(service) == before + 1
    assert await stored_seqs(service, cid) == [1, 2]


async def test_the_retry_lookup_finds_each_pair_in_the_unique_index_without_scanning_the_messages(
        service, backend):
    """A batch first looks up its (author, client_id) pairs among the committed
    messages.  Written as a row-value ``IN (VALUES …)``, SQLite scanned the whole
    unique index for it — a batch then cost time in proportion to every message
    ever sent.  The lookup joins the pairs instead; SQLite's plan searches the
    index once per pair.  (PostgreSQL's plan depends on its statistics: a tiny
    test table is scanned whatever the query, so only the answer is checked there.)"""
    from chat.storage.queries import existing_messages as _existing

    marie, nadia = [await actor_for(service, e) for e in (MARIE, NADIA)]
    cid = (await service.membership.create(marie, [nadia.id], await child_id(service, "Léa")))["id"]
    sent = await service.sending.send(marie, cid, "c-1", "Bonjour")
    statement = _existing(2)
    params = {"a0": marie.id, "c0": "c-1", "a1": nadia.id, "c1": "absent"}
    async with service.sessions() as session:
        found = (await session.execute(statement, params)).all()
        if backend == "embedded":
            compiled = statement.compile(dialect=session.bind.dialect)
            connection = await session.connection()
            plan = [row[-1] for row in (await connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {compiled}", tuple(params[name] for name in compiled.positiontup))).all()]
    assert [(row.id, row.author_id, row.client_id) for row in found] == [(sent["message_id"], marie.id, "c-1")]
    if backend == "embedded":
        assert any(step.startswith("SEARCH m USING") and "author_id=? AND client_id=?" in step for step in plan), plan
        assert not any(step.startswith("SCAN m") for step in plan), plan


@pytest.fixture
def no_linger(monkeypatch):
    """Batches never linger for company (chat.sending.BUSY_WINDOW): that wait is in
    real time, so how many sends it gathers depended on how busy the machine was,
    and the counts below with it.  What is left is the pipeline rule, decided by the
    order of events on the loop (each wave arrives one loop turn after the last)."""
    monkeypatch.setattr(sending, "BUSY_WINDOW", 0.0)


async def test_batches_written_at_once_keep_each_conversation_in_arrival_order(service, backend, no_linger):
    """On PostgreSQL several batches are written at once (chat.sending.PIPELINE),
    each on its own connection; on SQLite one at a time.  Waves of sends to one
    conversation, each wave arriving while the previous ones are still being
    written: every send gets its own seq, the seqs have no gap, and a later
    wave's are all after an earlier wave's — batches lock the conversation in
    the order they were taken (chat.sending._Turn); without that, a batch that
    got its connection sooner took the seqs first (seen here about every run)."""
    LINGER_ENOUGH, PIPELINE = sending.LINGER_ENOUGH, sending.PIPELINE

    marie, nadia, jean = [await actor_for(service, e) for e in (MARIE, NADIA, JEAN)]
    cid = (await service.membership.create(marie, [nadia.id, jean.id], await child_id(service, "Léa")))["id"]
    waves, size = [], 2 * LINGER_ENOUGH  # enough waiting for another batch beside the one being written
    for w in range(12):
        waves.append([asyncio.ensure_future(service.sending.send(
            (marie, nadia, jean)[k % 3], cid, f"w{w}-{k}", f"vague {w}, message {k}")) for k in range(size)])
        await asyncio.sleep(0)  # the drain takes this wave as a batch before the next one arrives
    answers = [[await sent for sent in wave] for wave in waves]
    seqs = [[a["seq"] for a in wave] for wave in answers]
    flat = sorted(seq for wave in seqs for seq in wave)
    assert flat == list(range(flat[0], flat[0] + 12 * size))  # one seq each, no gap
    for earlier, later in zip(seqs, seqs[1:]):
        assert max(earlier) < min(later), seqs
    assert await stored_seqs(service, cid) == list(range(1, flat[-1] + 1))
    # The waves did overlap on PostgreSQL: each waits for its database round
    # trips while the next is taken (how many at once depends on timing).
    if backend == "embedded":
        assert service.sending.writing_peak == 1
    else:
        assert 2 <= service.sending.writing_peak <= PIPELINE


async def test_a_few_sends_arriving_during_a_batch_wait_for_it_and_go_together(service, backend, no_linger):
    """A second batch may be written beside the first at once, a third or more
    only once enough sends wait for it (LINGER_ENOUGH per batch in flight beyond
    the first): a few sends arriving while two batches are written wait for one
    of them and share the next.  On PostgreSQL, starting a batch for every two
    or three sends kept eight batches in flight at a quarter of capacity; their
    round trips, interleaved on one event loop, made each batch 20-40 ms long
    (p50 send -> receive 25 ms, p99 80-120 ms), where batches of ten take 8 ms
    (bench/)."""
    marie, nadia, jean = [await actor_for(service, e) for e in (MARIE, NADIA, JEAN)]
    cid = (await service.membership.create(marie, [nadia.id, jean.id], await child_id(service, "Léa")))["id"]
    batches = service.sending.batches
    waves = []
    for w in range(6):
        waves.append([asyncio.ensure_future(service.sending.send(
            (marie, nadia, jean)[k], cid, f"few{w}-{k}", f"vague {w}")) for k in range(3)])
        await asyncio.sleep(0)
    seqs = sorted([(await sent)["seq"] for wave in waves for sent in wave])
    assert seqs == list(range(seqs[0], seqs[0] + 18))
    assert service.sending.writing_peak <= 2  # never a third batch beside the first two
    assert service.sending.batches - batches < 6  # the waves that arrived meanwhile went together
