"""Delivery guarantees: resume without gap or duplicate, explicit reset when a
position cannot be honoured, gap filling, slow consumers, per-event authorisation."""

from __future__ import annotations

import asyncio

import pytest

from chat import hub as hub_module
from chat.hub import CLOSE_SLOW_CONSUMER, Connection, DirectConnection, Hub, text_frame
from chat.policies import resume as service_module
from tests.client import WAIT, WSClient
from tests.conftest import BOTH_PATHS, JEAN, MARIE, NADIA, REDIS_URL, actor_for, child_id, person_by_email


async def conversation_with_nadia(server, marie) -> int:
    nadia = await person_by_email(server.service, NADIA)
    answer = await marie.request("conversation.create", child_id=await child_id(server.service, "Léa"),
                                 participants=[nadia.id])
    return answer["conversation"]["id"]


@BOTH_PATHS
async def test_resume_after_disconnect_delivers_exactly_the_missed_events_then_live_ones(server):
    async with await server.connect(NADIA) as nadia:
        marie = await server.connect(MARIE)
        cid = await conversation_with_nadia(server, marie)
        await marie.request("message.send", conversation_id=cid, client_id="before", text="Avant")
        seen = [(await marie.event())["seq"] for _ in range(2)]
        assert seen == [1, 2]
        assert await marie.events() == []
        await marie.close()  # the laptop closes

        for i in range(5):
            await nadia.request("message.send", conversation_id=cid, client_id=f"away-{i}", text=f"Pendant {i}")

        marie = await server.connect(MARIE, start=False)
        answer = await marie.start({cid: seen[-1]})
        assert answer["resumed"] == [cid] and answer["reset"] == []
        await nadia.request("message.send", conversation_id=cid, client_id="live", text="En direct")
        events = [await marie.event() for _ in range(6)]  # the replay runs on its own: wait for all of it
        assert [e["seq"] for e in events] == [3, 4, 5, 6, 7, 8]  # no gap, no duplicate
        assert [e["message"]["text"] for e in events] == [f"Pendant {i}" for i in range(5)] + ["En direct"]
        assert await marie.events() == []  # and nothing after
        await marie.close()


async def test_resume_from_an_unknown_position_tells_the_client_to_reload(server):
    async with await server.connect(MARIE) as marie:
        cid = await conversation_with_nadia(server, marie)
    client = await server.connect(MARIE, start=False)
    answer = await client.start({cid: 999, 424242: 0})
    assert {(r["conversation_id"], r["reason"]) for r in answer["reset"]} == {
        (cid, "unknown_position"), (424242, "not_member")}
    assert answer["resumed"] == []
    # The reset conversation still goes live after its last_seq.
    async with await server.connect(NADIA) as nadia:
        await nadia.request("message.send", conversation_id=cid, client_id="after-reset", text="Toujours en direct")
    event = await client.event("message.new")
    assert event["seq"] == 2 and event["message"]["text"] == "Toujours en direct"
    await client.close()


@BOTH_PATHS
async def test_one_resume_replays_some_conversations_and_resets_others(server):
    """The checks of every named conversation are one read; each gets its own answer."""
    async with await server.connect(MARIE) as marie:
        replayed = await conversation_with_nadia(server, marie)
        unknown = await conversation_with_nadia(server, marie)
        await marie.request("message.send", conversation_id=replayed, client_id="missed", text="Pendant l'absence")
    client = await server.connect(MARIE, start=False)
    answer = await client.start({replayed: 1, unknown: 50})
    assert answer["resumed"] == [replayed]
    assert answer["reset"] == [{"conversation_id": unknown, "reason": "unknown_position", "last_seq": 1}]
    event = await client.event()
    assert (event["conversation_id"], event["seq"], event["message"]["text"]) == (replayed, 2, "Pendant l'absence")
    assert await client.events() == []
    await client.close()


async def test_resume_too_far_behind_tells_the_client_to_reload(server, monkeypatch):
    monkeypatch.setattr(service_module, "RESUME_MAX_EVENTS", 3)
    async with await server.connect(MARIE) as marie:
        cid = await conversation_with_nadia(server, marie)
        for i in range(4):
            await marie.request("message.send", conversation_id=cid, client_id=f"m{i}", text="x")
    client = await server.connect(MARIE, start=False)
    answer = await client.start({cid: 0})
    assert answer["reset"] == [{"conversation_id": cid, "reason": "too_old", "last_seq": 5}]
    # The reload path: history pages over HTTP/WS still serve everything.
    history = await client.request("conversation.history", conversation_id=cid, after=0, limit=200)
    assert [e["seq"] for e in history["events"]] == [1, 2, 3, 4, 5]
    await client.close()


@BOTH_PATHS
async def test_resume_of_a_conversation_one_was_removed_from_is_refused(server):
    jean_id = (await person_by_email(server.service, JEAN)).id
    async with await server.connect(MARIE) as marie:
        nadia_id = (await person_by_email(server.service, NADIA)).id
        answer = await marie.request("conversation.create", child_id=await child_id(server.service, "Léa"),
                                     participants=[nadia_id, jean_id])
        cid = answer["conversation"]["id"]
        await marie.request("conversation.remove", conversation_id=cid, person_id=jean_id)
        await marie.request("message.send", conversation_id=cid, client_id="secret", text="Après le retrait")
    jean = await server.connect(JEAN, start=False)
    answer = await jean.start({cid: 1})
    assert answer["reset"] == [{"conversation_id": cid, "reason": "not_member"}]
    assert await jean.events() == []
    await jean.close()


async def test_history_pages_forward_and_backward(server):
    async with await server.connect(MARIE) as marie:
        cid = await conversation_with_nadia(server, marie)
        for i in range(6):
            await marie.request("message.send", conversation_id=cid, client_id=f"h{i}", text=f"m{i}")
        newest = await marie.request("conversation.history", conversation_id=cid, limit=3)
        assert [e["seq"] for e in newest["events"]] == [5, 6, 7]
        older = await marie.request("conversation.history", conversation_id=cid, before=5, limit=3)
        assert [e["seq"] for e in older["events"]] == [2, 3, 4]
        forward = await marie.request("conversation.history", conversation_id=cid, after=4, limit=2)
        assert [e["seq"] for e in forward["events"]] == [5, 6]


# -- the hub alone: gap fill, duplicates, slow consumers --------------------------------------------
class FakeLog:
    """An in-memory event log standing in for the database behind the hub's gap fill."""

    def __init__(self) -> None:
        self.frames: dict[int, str] = {}

    async def replay(self, person_id: int, conversation_id: int, after: int, limit: int):
        return [(s, f) for s, f in sorted(self.frames.items()) if s > after][:limit]


def recording_connection(person_id: int, max_queue: int = 100) -> tuple[Connection, list[str]]:
    sent: list[str] = []

    async def send(frame: str) -> None:
        sent.append(frame)

    async def close(code: int, reason: str) -> None:
        return None

    return Connection(person_id, "fr", send, close, max_queue), sent


@pytest.fixture(params=["memory", "redis"])
async def hub_log(request):
    log = FakeLog()
    url = "memory://" if request.param == "memory" else REDIS_URL
    hub = Hub(url, log.replay, redis_prefix=f"test-hub-{id(log)}")
    await hub.start()
    yield hub, log
    await hub.stop()


async def wait_for(predicate, timeout: float = WAIT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


async def barrier(hub: Hub, person_id: int, sent: list[str]) -> None:
    """Wait until a marker published now on the person's channel has reached
    ``sent``: whatever the broker carried for that person before it is there
    too (the broker keeps the order of publishes), so the list is complete."""
    await hub.publish_person(person_id, "frame", "barrier")
    await wait_for(lambda: "barrier" in sent)
    sent.remove("barrier")


async def test_hub_fills_a_gap_from_the_log_and_drops_duplicates(hub_log):
    hub, log = hub_log
    conn, sent = recording_connection(7)
    await hub.register(conn, [1])
    hub.track(conn, 1, 0)
    for seq in (1, 2, 3):
        log.frames[seq] = f"frame-{seq}"
    await hub.publish_event(1, 1, [7], "frame-1")
    await hub.publish_event(1, 3, [7], "frame-3")  # 2 was committed but its publish was lost
    await hub.publish_event(1, 1, [7], "frame-1")  # a duplicate
    await wait_for(lambda: len(sent) >= 3)
    await hub.publish_event(1, 2, [7], "frame-2")  # late arrival of 2: already filled
    log.frames[4] = "frame-4"
    await hub.publish_event(1, 4, [7], "frame-4")
    await wait_for(lambda: len(sent) >= 4)
    await barrier(hub, 7, sent)
    assert sent == ["frame-1", "frame-2", "frame-3", "frame-4"]


async def test_hub_resync_after_a_broker_outage_fetches_what_was_never_delivered(hub_log):
    hub, log = hub_log
    conn, sent = recording_connection(3)
    await hub.register(conn, [2])
    hub.track(conn, 2, 0)
    for seq in (1, 2, 3):  # committed while the broker was down: never published
        log.frames[seq] = f"lost-{seq}"
    await hub._resync()
    await wait_for(lambda: len(sent) == 3)
    assert sent == ["lost-1", "lost-2", "lost-3"]


async def test_hub_delivers_only_to_the_members_named_by_the_event(hub_log):
    hub, log = hub_log
    member, to_member = recording_connection(1)
    removed, to_removed = recording_connection(2)
    for conn in (member, removed):
        await hub.register(conn, [5])
        hub.track(conn, 5, 0)
    log.frames[1] = "e1"
    await hub.publish_event(5, 1, [1, 2], "e1")
    await wait_for(lambda: to_member and to_removed)
    log.frames[2] = "e2"
    await hub.publish_event(5, 2, [1], "e2")  # person 2 is no longer a member at seq 2
    await wait_for(lambda: len(to_member) == 2)
    await barrier(hub, 1, to_member)
    await barrier(hub, 2, to_removed)
    assert to_member == ["e1", "e2"] and to_removed == ["e1"]


async def test_slow_consumer_is_closed_with_4008_and_others_keep_receiving(hub_log):
    hub, log = hub_log
    closed: list[int] = []
    never = asyncio.Event()

    async def stuck_send(frame: str) -> None:
        await never.wait()  # a client that stopped reading: the socket never drains

    async def record_close(code: int, reason: str) -> None:
        closed.append(code)

    slow = Connection(1, "fr", stuck_send, record_close, max_queue=5)
    fast, received = recording_connection(2)
    for conn in (slow, fast):
        await hub.register(conn, [9])
        hub.track(conn, 9, 0)
    for seq in range(1, 21):
        log.frames[seq] = f"f{seq}"
        await hub.publish_event(9, seq, [1, 2], f"f{seq}")
    await wait_for(lambda: len(received) == 20 and closed)
    assert closed == [CLOSE_SLOW_CONSUMER]
    assert slow.queued <= 5  # the outbox never grew past its bound
    assert received == [f"f{seq}" for seq in range(1, 21)]
    assert hub.stats["slow_consumers"] == 1


async def small_buffer_client(server, email: str, person_id: int):
    """A client with small kernel buffers on both sides (4 KiB) that reads only
    when asked (``max_queue=1``), and the hub's connection for it."""
    import socket

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    host, port = server.ws_url.split("/")[2].split(":")
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    client = await WSClient.open(server.ws_url, await server.token(email), sock=sock, max_queue=1)
    (conn,) = server.service.hub.by_person[person_id]
    assert conn._socket is not None  # frames go straight to the transport
    conn._socket.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return client, conn


async def test_slow_websocket_client_is_disconnected_without_harming_others(server):
    """End to end: Jean's client stops reading; once the server holds more unsent
    bytes for him than his bound, he is closed with 4008 while Nadia receives
    everything, and Jean resumes without loss."""
    import websockets

    jean_id = (await person_by_email(server.service, JEAN)).id
    nadia_id = (await person_by_email(server.service, NADIA)).id
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        answer = await marie.request("conversation.create", child_id=await child_id(server.service, "Léa"),
                                     participants=[nadia_id, jean_id])
        cid = answer["conversation"]["id"]
        # A client that stops reading: what it does not take piles up in the server's transport.
        jean, target = await small_buffer_client(server, JEAN, jean_id)
        await jean.start({})
        target._limit = 64  # KiB of unsent bytes (SEND_QUEUE_FRAMES × 1 KiB)
        transport = target._socket.transport
        filler = text_frame(b'{"type":"filler","pad":"' + b"x" * 8000 + b'"}')
        for _ in range(400):  # up to 3.2 MB: far more than the socket buffers
            if transport.get_write_buffer_size() > 4 * 64 * 1024:
                break
            transport.write(filler)
        assert target.push('{"type":"filler"}') is False  # past the bound: refused
        for i in range(8):
            await marie.request("message.send", conversation_id=cid, client_id=f"s{i}", text=f"m{i}")
        await wait_for(lambda: target.close_code is not None)
        assert target.close_code == CLOSE_SLOW_CONSUMER
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await jean.ws.recv()
        assert closed.value.rcvd.code == CLOSE_SLOW_CONSUMER
        texts = [(await nadia.event("message.new"))["message"]["text"] for _ in range(8)]
        assert texts == [f"m{i}" for i in range(8)]
        assert [e for e in await nadia.events() if e["kind"] == "message.new"] == []  # each once
        jean = await server.connect(JEAN, start=False)
        await jean.start({cid: 1})
        texts = [(await jean.event("message.new"))["message"]["text"] for _ in range(8)]  # the replay, all of it
        assert texts == [f"m{i}" for i in range(8)]
        assert [e for e in await jean.events() if e["kind"] == "message.new"] == []  # and once
        await jean.close()


async def test_a_long_replay_follows_the_clients_pace_instead_of_closing_it(server):
    """Resuming over 1.5 MB of long messages (more than the 1 MiB bound, with
    small socket buffers): the replay waits for the socket to drain, and the
    client gets every message, in order, without a 4008."""
    marie, jean_actor = await actor_for(server.service, MARIE), await actor_for(server.service, JEAN)
    nadia_id = (await person_by_email(server.service, NADIA)).id
    cid = (await server.service.membership.create(
        marie, [nadia_id, jean_actor.id], await child_id(server.service, "Léa")))["id"]
    text = "é" * 3900  # ~7.8 KB of UTF-8 each
    for i in range(200):
        await server.service.sending.send(marie, cid, f"long{i}", f"{i}:{text}")
    jean, target = await small_buffer_client(server, JEAN, jean_actor.id)
    await jean.start({cid: 1})
    seen = []
    while len(seen) < 200:
        event = await jean.next("event")
        if event["kind"] == "message.new":
            seen.append(int(event["message"]["text"].split(":")[0]))
    assert seen == list(range(200))
    assert target.close_code is None and server.service.hub.stats["slow_consumers"] == 0
    await jean.close()


@pytest.mark.parametrize("settings", ["off"], indirect=True)
async def test_outbox_path_closes_a_stalled_sender_with_4008(server):
    """The queued path (a server without direct socket access): a send that never
    completes lets the outbox fill to its bound, then the connection is closed."""
    jean_id = (await person_by_email(server.service, JEAN)).id
    nadia_id = (await person_by_email(server.service, NADIA)).id
    async with await server.connect(MARIE) as marie:
        answer = await marie.request("conversation.create", child_id=await child_id(server.service, "Léa"),
                                     participants=[nadia_id, jean_id])
        cid = answer["conversation"]["id"]
        jean = await server.connect(JEAN)
        (target,) = server.service.hub.by_person[jean_id]
        stall = asyncio.Event()

        async def stalled(frame: str) -> None:  # the socket no longer drains
            await stall.wait()

        target._send = stalled
        target._limit = 3
        for i in range(8):
            await marie.request("message.send", conversation_id=cid, client_id=f"s{i}", text=f"m{i}")
        await wait_for(lambda: target.close_code is not None)
        assert target.close_code == CLOSE_SLOW_CONSUMER
        assert target.queued <= 3
        stall.set()
        await jean.close()


# -- after a broker outage, and when tokens expire ----------------------------------------------------
async def closed_code(client: WSClient) -> int:
    import websockets

    try:
        while True:
            await asyncio.wait_for(client.ws.recv(), WAIT)
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code


@BOTH_PATHS
async def test_refresh_after_an_outage_applies_a_lost_removal(server):
    """The `leave` person message was lost: the refresh unsubscribes from the database's truth."""
    from sqlalchemy import update

    from chat.storage.models import Participant

    jean_id = (await person_by_email(server.service, JEAN)).id
    nadia_id = (await person_by_email(server.service, NADIA)).id
    async with await server.connect(MARIE) as marie, await server.connect(JEAN) as jean:
        answer = await marie.request("conversation.create", child_id=await child_id(server.service, "Léa"),
                                     participants=[nadia_id, jean_id])
        cid = answer["conversation"]["id"]
        await jean.event("conversation.created")
        async with server.service.sessions() as session, session.begin():
            await session.execute(update(Participant).where(
                Participant.conversation_id == cid, Participant.person_id == jean_id).values(active=False))
        await server.service.reading.refresh_connections()
        left = await jean.next("conversation.left")
        assert left["conversation_id"] == cid
        (conn,) = server.service.hub.by_person[jean_id]
        assert cid not in conn.positions


@BOTH_PATHS
async def test_refresh_after_an_outage_closes_connections_of_a_person_who_signed_out(server):
    import time as clock

    from sqlalchemy import update

    from chat.storage.models import AuthSession

    marie = await server.connect(MARIE)
    marie_id = marie.hello["person"]["id"]
    async with server.service.sessions() as session, session.begin():  # as a sign-out the broker did not carry
        await session.execute(update(AuthSession).where(AuthSession.person_id == marie_id)
                              .values(ended_at=clock.time(), ended_because="signout"))
    await server.service.reading.refresh_connections()
    assert (await marie.next("signed_out"))["type"] == "signed_out"
    assert await closed_code(marie) == 4401


@BOTH_PATHS
async def test_a_connection_is_closed_when_its_token_expires(server):
    import time as clock

    marie = await server.connect(MARIE)
    (conn,) = server.service.hub.by_person[marie.hello["person"]["id"]]
    assert server.service.hub.close_expired(clock.time()) == 0  # still valid
    assert server.service.hub.close_expired(conn.expires_at) == 1  # the moment it expires
    error = await marie.next("error")
    assert error["code"] == "auth.expired_token"
    assert await closed_code(marie) == 4401


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_text_frame_is_what_a_websocket_client_reads(size):
    """The one framing the hub writes itself (RFC 6455 §5.2), read back by the
    `websockets` client protocol at each length encoding's edges."""
    from websockets.client import ClientProtocol
    from websockets.frames import Opcode
    from websockets.protocol import State
    from websockets.uri import parse_uri

    client = ClientProtocol(parse_uri("ws://127.0.0.1/ws"), max_size=None, state=State.OPEN)
    payload = ("é" * size).encode()[:size] if size % 2 == 0 else b"a" * size
    client.receive_data(text_frame(payload))
    (event,) = client.events_received()
    assert event.opcode is Opcode.TEXT and event.fin and bytes(event.data) == payload


class _Transport:
    """A transport that records each write (what the hub hands the kernel at once)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


class _DirectSocket:
    """What a direct connection needs of uvicorn's protocol object."""

    def __init__(self, transport) -> None:
        self.transport = transport
        self.close_sent = False


def direct_connection(person_id: int = 1) -> tuple[Connection, _Transport]:
    transport = _Transport()

    async def send(frame: str) -> None:
        raise AssertionError("a direct socket never uses the outbox")

    async def close(code: int, reason: str) -> None:
        transport.writes.append(b"<close %d>" % code)

    return DirectConnection(person_id, "fr", send, close, 100, socket=_DirectSocket(transport)), transport


def frames(*texts: str) -> bytes:
    return b"".join(text_frame(t.encode()) for t in texts)


# Loop turns an end of turn may take at most (the hub writes two callbacks after it).
END_OF_TURN_STEPS = 100


async def end_of_turn() -> None:
    """Return once what the sockets held in this turn has been written.  A sentinel
    socket holds a frame after theirs; held sockets are written in the order they
    were held, in one pass at the end of the turn, so once the sentinel's frame is
    out, theirs are too.  Loop steps are counted, never seconds: the answer does not
    depend on how busy the machine is, nor on how many callbacks the hub chains."""
    sentinel, written = direct_connection(0)
    sentinel.push("end of turn", hold=True)
    for _ in range(END_OF_TURN_STEPS):
        if written.writes:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"held frames not written within {END_OF_TURN_STEPS} loop steps")


async def test_frames_held_in_one_turn_leave_as_one_write_in_their_order():
    conn, transport = direct_connection()
    for text in ("a", "b", "c"):
        assert conn.push(text, hold=True)
    assert transport.writes == []  # held until the turn's end
    await end_of_turn()
    assert transport.writes == [frames("a", "b", "c")]


async def test_a_frame_not_held_writes_the_held_ones_first():
    """A replay's frames are not held (they follow the socket's pace): what was
    held before them is written first, so the order is kept."""
    conn, transport = direct_connection()
    conn.push("a", hold=True)
    conn.push("b", hold=True)
    conn.push("replayed")
    conn.push("c", hold=True)
    await end_of_turn()
    assert transport.writes == [frames("a", "b"), frames("replayed"), frames("c")]


async def test_held_frames_are_bounded_per_turn():
    conn, transport = direct_connection()
    total = hub_module.MAX_HELD_FRAMES + 3
    for i in range(total):
        conn.push(f"f{i}", hold=True)
    await end_of_turn()
    assert [len(w) for w in transport.writes] == [
        len(frames(*(f"f{i}" for i in range(hub_module.MAX_HELD_FRAMES)))),
        len(frames(*(f"f{i}" for i in range(hub_module.MAX_HELD_FRAMES, total))))]
    assert b"".join(transport.writes) == frames(*(f"f{i}" for i in range(total)))


async def test_a_close_sends_the_held_frames_before_the_close_frame():
    """A last notice (signed out) pushed just before the close still reaches the client."""
    conn, transport = direct_connection()
    conn.push("signed_out", hold=True)
    await conn.close(4401, "signed out")
    await end_of_turn()
    assert transport.writes == [frames("signed_out"), b"<close 4401>"]


async def test_nothing_held_is_written_to_a_socket_that_closed_meanwhile():
    conn, transport = direct_connection()
    conn.push("late", hold=True)
    transport.closing = True  # the peer went away before the turn ended
    await end_of_turn()
    assert transport.writes == []


@BOTH_PATHS
async def test_a_senders_own_message_and_its_ok_reach_it_once_each_the_message_first_in_process(server):
    """The sender gets its message's event and the ``ok``, each once, and
    nothing else.  In process the batch fans the message out before it wakes
    the sender's request, so the message comes first; with Redis it comes
    back from the broker on its own and may come either side (protocol §4)."""
    marie = await server.connect(MARIE)
    cid = await conversation_with_nadia(server, marie)
    await marie.event("conversation.created")
    await marie.drain()
    request_id = await marie.send("message.send", conversation_id=cid, client_id="one", text="Bonjour")
    arrived = [await marie.next(), await marie.next()]
    arrived += await marie.drain()
    assert sorted((f["type"], f.get("kind")) for f in arrived) == [("event", "message.new"), ("ok", None)]
    answer = next(f for f in arrived if f["type"] == "ok")
    event = next(f for f in arrived if f["type"] == "event")
    assert answer["id"] == request_id and answer["duplicate"] is False
    assert (event["seq"], event["message"]["id"], event["message"]["text"]) == (
        answer["seq"], answer["message_id"], "Bonjour")
    if not server.settings.redis_url:
        assert [f["type"] for f in arrived] == ["event", "ok"]
    await marie.close()


async def test_a_socket_refusing_its_held_frames_does_not_keep_others_from_theirs():
    refusing, refused = direct_connection(1)
    fine, transport = direct_connection(2)

    def broken(data: bytes) -> None:
        raise RuntimeError("transport closed")

    refused.write = broken
    refusing.push("a", hold=True)
    fine.push("b", hold=True)
    await end_of_turn()
    assert transport.writes == [frames("b")]
    assert refusing.state is hub_module.ConnectionState.CLOSED  # the reader loop sees the end
    fine.push("c", hold=True)  # the next turn is written as usual
    await end_of_turn()
    assert transport.writes == [frames("b"), frames("c")]
