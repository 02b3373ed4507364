"""Two hub processes sharing PostgreSQL and Redis, as in production: what a client
on one sends reaches a client on the other live; membership is enforced on
every worker; a killed worker loses no accepted message."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.client import WAIT, WSClient
from chat.accounts.throttle import LIMITS
from tests.conftest import JEAN, MARIE, NADIA, SECRET, broker_barrier, child_id, person_by_email


# The checkout under test, whatever copy of the package is installed.
REPO = Path(__file__).resolve().parent.parent


class Worker:
    def __init__(self, process: subprocess.Popen, port: int) -> None:
        self.process = process
        self.port = port
        self.ws_url = f"ws://127.0.0.1:{port}/ws"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


async def start_worker(settings, cwd: Path) -> Worker:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "REDIS_PREFIX": settings.redis_prefix,
        "SECRET_KEY": SECRET,
        "LOG_LEVEL": "warning",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "chat", "serve", "--port", "0"], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return Worker(process, await listening_port(process))


async def listening_port(process: subprocess.Popen) -> int:
    """The port of the ``listening on http://HOST:PORT`` line ``serve`` prints once bound and migrated."""
    loop = asyncio.get_running_loop()
    lines = []
    while not (lines and lines[-1].startswith("listening on ")):
        line = await asyncio.wait_for(loop.run_in_executor(None, process.stdout.readline), 60)
        if not line:
            process.kill()
            raise AssertionError(f"serve did not start: {''.join(lines)!r}")
        lines.append(line)
    return int(lines[-1].rsplit(":", 1)[1])


@pytest.fixture
async def workers(backend, settings, engine, service, tmp_path):
    if backend != "real":
        pytest.skip("several processes share PostgreSQL + Redis; the in-process broker is per process")
    started = [await start_worker(settings, tmp_path), await start_worker(settings, tmp_path)]
    yield started
    for worker in started:
        if worker.process.poll() is None:
            worker.process.terminate()
            try:
                worker.process.wait(10)
            except subprocess.TimeoutExpired:
                worker.kill()


async def connect(service, worker: Worker, email: str, positions: dict[int, int] | None = None) -> WSClient:
    person = await person_by_email(service, email)
    client = await WSClient.open(worker.ws_url, (await service.accounts.open_session(person.id, "test"))["access_token"])
    client.barrier = broker_barrier(service, person.id)  # through the Redis the workers share
    await client.start(positions or {})
    return client


async def until(condition, what: str) -> None:
    """Poll ``condition`` until it holds, within WAIT seconds (a bound, not a timing)."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_client_on_one_worker_receives_live_what_a_client_on_the_other_sends(workers, service):
    a, b = workers
    marie, nadia = await connect(service, a, MARIE), await connect(service, b, NADIA)
    nadia_id = (await person_by_email(service, NADIA)).id
    created = await marie.request("conversation.create", child_id=await child_id(service, "Léa"),
                                  participants=[nadia_id])
    cid = created["conversation"]["id"]
    assert (await nadia.next("conversation.joined"))["conversation"]["id"] == cid
    await nadia.request("message.send", conversation_id=cid, client_id="from-b", text="Bonjour de B")
    event = await marie.event("message.new")
    assert event["message"]["text"] == "Bonjour de B" and event["seq"] == 2
    await marie.request("message.send", conversation_id=cid, client_id="from-a", text="Bonjour de A")
    assert (await nadia.event("message.new"))["message"]["text"] == "Bonjour de B"  # her own, echoed to her devices
    assert (await nadia.event("message.new"))["message"]["text"] == "Bonjour de A"
    await marie.close()
    await nadia.close()


async def test_a_member_removed_on_one_worker_gets_nothing_more_on_the_other(workers, service):
    a, b = workers
    marie, jean = await connect(service, a, MARIE), await connect(service, b, JEAN)
    people = [(await person_by_email(service, e)).id for e in (NADIA, JEAN)]
    created = await marie.request("conversation.create", child_id=await child_id(service, "Léa"), participants=people)
    cid = created["conversation"]["id"]
    await jean.event("conversation.created")
    await marie.request("conversation.remove", conversation_id=cid, person_id=people[1])
    await jean.next("conversation.left")
    await marie.request("message.send", conversation_id=cid, client_id="private", text="Plus pour Jean")
    assert [e["kind"] for e in await jean.events()] == ["member.removed"]
    await marie.close()
    await jean.close()


async def test_a_killed_worker_loses_no_accepted_message_and_its_clients_resume_elsewhere(workers, service):
    a, b = workers
    marie, nadia = await connect(service, a, MARIE), await connect(service, b, NADIA)
    nadia_id = (await person_by_email(service, NADIA)).id
    created = await marie.request("conversation.create", child_id=await child_id(service, "Léa"),
                                  participants=[nadia_id])
    cid = created["conversation"]["id"]
    ack = await marie.request("message.send", conversation_id=cid, client_id="acked", text="Accepté avant la panne")
    a.kill()  # worker A dies without any shutdown
    for i in range(3):
        await nadia.request("message.send", conversation_id=cid, client_id=f"n{i}", text=f"Pendant la panne {i}")
    marie = await connect(service, b, MARIE, {cid: ack["seq"]})  # the widget reconnects to the surviving worker
    texts = [(await marie.event("message.new"))["message"]["text"] for _ in range(3)]  # the replay, all of it
    assert texts == [f"Pendant la panne {i}" for i in range(3)]
    assert await marie.events() == []  # nothing twice
    history = await nadia.request("conversation.history", conversation_id=cid, after=0)
    assert "Accepté avant la panne" in [e["message"]["text"] for e in history["events"] if e["kind"] == "message.new"]
    await marie.close()
    await nadia.close()


def children_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


async def test_serve_with_two_workers_shares_one_port_and_replaces_a_dead_worker(backend, settings, engine, service,
                                                                              tmp_path):
    """`serve --workers 2`: one address, two processes, fan-out through Redis; a
    worker that dies is replaced and its clients resume on the same address."""
    if backend != "real":
        pytest.skip("several processes share PostgreSQL + Redis")
    env = {**os.environ, "PYTHONPATH": str(REPO), "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "REDIS_PREFIX": settings.redis_prefix, "SECRET_KEY": SECRET, "LOG_LEVEL": "warning"}
    supervisor = subprocess.Popen([sys.executable, "-m", "chat", "serve", "--port", "0", "--workers", "2"],
                                  cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        address = Worker(supervisor, await listening_port(supervisor))
        await until(lambda: len(children_of(supervisor.pid)) == 2, "the supervisor did not start two workers")
        first = children_of(supervisor.pid)
        clients = [await connect(service, address, email) for email in (MARIE, NADIA, MARIE, NADIA)]
        nadia_id = (await person_by_email(service, NADIA)).id
        created = await clients[0].request("conversation.create", child_id=await child_id(service, "Léa"),
                                           participants=[nadia_id])
        cid = created["conversation"]["id"]
        ack = await clients[1].request("message.send", conversation_id=cid, client_id="w", text="Deux processus")
        for client in clients:  # every connection, whichever worker holds it, gets it once
            event = await client.event("message.new")
            assert event["seq"] == ack["seq"]
        os.kill(first[0], signal.SIGKILL)

        def replaced() -> bool:
            now = children_of(supervisor.pid)
            return len(now) == 2 and first[0] not in now

        await until(replaced, "the dead worker was not replaced")
        again = await connect(service, address, MARIE, {cid: ack["seq"] - 1})
        assert (await again.event("message.new"))["message"]["text"] == "Deux processus"
        for client in [*clients, again]:
            try:
                await client.close()
            except Exception:
                pass
    finally:
        supervisor.terminate()
        try:
            supervisor.wait(20)
        except subprocess.TimeoutExpired:
            supervisor.kill()


async def test_ending_a_session_on_one_worker_closes_its_socket_on_the_other_and_throttling_is_shared(
        workers, service):
    """R21 across processes: Marie's phone is on worker A, her laptop on worker B; the
    laptop ends the phone's session through B, and A closes the phone's socket.  Then
    password guesses spread over both workers count against one limit (Redis)."""
    a, b = workers
    marie = await person_by_email(service, MARIE)
    phone_tokens = await service.accounts.open_session(marie.id, "phone")
    laptop_tokens = await service.accounts.open_session(marie.id, "laptop")
    phone = await WSClient.open(a.ws_url, phone_tokens["access_token"])
    await phone.start({})
    laptop = await WSClient.open(b.ws_url, laptop_tokens["access_token"])
    await laptop.start({})
    bearer = {"Authorization": f"Bearer {laptop_tokens['access_token']}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{b.port}") as on_b:
        ended = await on_b.delete(f"/api/sessions/{phone_tokens['session_id']}", headers=bearer)
        assert ended.json() == {"ended": 1}
    assert (await phone.next("signed_out"))["type"] == "signed_out"
    assert (await laptop.request("ping"))["pong"] is True
    await laptop.close()

    limit = LIMITS["password.account"].attempts
    answers = []
    for n in range(limit + 1):
        worker = (a, b)[n % 2]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{worker.port}") as http:
            answers.append((await http.post("/api/auth/signin", json={"email": JEAN, "password": "Wrong-guess-1"}))
                           .json()["error"]["code"])
    assert answers == ["auth.invalid_credentials"] * limit + ["auth.throttled"]
