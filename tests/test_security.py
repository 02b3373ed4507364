"""Security end to end: the WebSocket Origin check (cross-site WebSocket
hijacking), rate limiting, texts in the person's language (R22), message text
stored and delivered as given (never HTML), and logs free of message text and
tokens."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import httpx
import pytest
import websockets
from sqlalchemy import select

from chat.storage.models import Message
from tests.client import WAIT, WSClient
from tests.conftest import JEAN, MARIE, NADIA, child_id, person_by_email


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def conversation_with_nadia(server, client: WSClient) -> int:
    nadia = await person_by_email(server.service, NADIA)
    answer = await client.request("conversation.create", child_id=await child_id(server.service, "Léa"),
                                  participants=[nadia.id])
    return answer["conversation"]["id"]


# -- Origin (CSWSH) ---------------------------------------------------------------------------
@pytest.mark.parametrize("origin", ["http://evil.test", "http://school.test.evil.test", "https://school.test", "null"])
async def test_websocket_from_a_foreign_origin_is_refused_with_403(server, origin):
    token = await server.token(MARIE)
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(server.ws_url, origin=origin, additional_headers=bearer(token))
    response = refused.value.response
    assert response.status_code == 403
    error = json.loads(response.body)["error"]
    assert error["code"] == "origin.forbidden"
    assert error["message"] == f"Origine « {origin} » non autorisée."


@pytest.mark.parametrize("origin", ["http://school.test", None], ids=["allowed-origin", "no-origin"])
async def test_websocket_from_an_allowed_origin_or_without_origin_is_accepted(server, origin):
    token = await server.token(MARIE)
    async with await WSClient.open(server.ws_url, token, origin=origin) as client:
        assert client.hello["person"]["name"] == "Marie Tremblay"
        assert (await client.request("ping"))["pong"] is True


# -- rate limiting ---------------------------------------------------------------------------
class RateClock:
    """The rate limiter's clock (``time.monotonic`` as chat.web.limits reads it), moved
    only by the test: a slow machine cannot refill a bucket behind its back."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name: str):
        return getattr(time, name)


@pytest.fixture
def rate_clock(monkeypatch) -> RateClock:
    from chat.web import limits

    clock = RateClock()
    monkeypatch.setattr(limits, "time", clock)
    return clock


async def test_frames_past_the_burst_are_rate_limited_and_the_connection_stays_open(server, rate_clock):
    burst = int(server.settings.rate_burst)
    sent = burst * 2  # the clock stands still: nothing refills the bucket
    async with await server.connect(MARIE) as client:
        ids = [await client.send("ping") for _ in range(sent)]
        answers = [await client.reply(request_id) for request_id in ids]
        limited = [a for a in answers if a["type"] == "error"]
        assert [a["type"] for a in answers] == ["ok"] * (burst - 1) + ["error"] * (sent - burst + 1)  # the
        # burst passes (the resume frame took one token), then every frame is refused
        for answer in limited:
            assert answer["code"] == "rate_limited"
            assert answer["fields"]["retry_after"] > 0
            assert answer["message"].startswith("Trop de requêtes")
        # Still open: after waiting as told, the next request passes.
        for _ in range(3):
            rate_clock.now += limited[-1]["fields"]["retry_after"]
            answer = await client.reply(await client.send("ping"))
            if answer["type"] == "ok":
                break
            limited.append(answer)  # rounding left a sliver of a token to wait for
        assert answer == {"type": "ok", "id": answer["id"], "pong": True}


async def test_rate_limited_writes_are_not_performed(server, rate_clock):
    burst = int(server.settings.rate_burst)
    async with await server.connect(MARIE) as client:
        cid = await conversation_with_nadia(server, client)
        # Pings empty the bucket, so the writes right behind them meet an empty bucket...
        pings = [await client.send("ping") for _ in range(burst * 2)]
        refused = [await client.send("message.send", conversation_id=cid, client_id=f"m{n}", text=f"n° {n}")
                   for n in range(5)]
        for request_id in pings:
            await client.reply(request_id)
        answers = [await client.reply(request_id) for request_id in refused]
        # ...and the ones sent once the bucket has refilled for five pass.
        rate_clock.now += 5.5 / server.settings.rate_per_second
        passed = [await client.send("message.send", conversation_id=cid, client_id=f"m{n}", text=f"n° {n}")
                  for n in range(5, 10)]
        answers += [await client.reply(request_id) for request_id in passed]
    assert [a.get("code") for a in answers] == ["rate_limited"] * 5 + [None] * 5
    accepted = {a["client_id"] for a in answers if a["type"] == "ok"}
    assert accepted == {f"m{n}" for n in range(5, 10)}
    async with server.service.sessions() as session:
        stored = set((await session.execute(select(Message.client_id).where(
            Message.conversation_id == cid))).scalars().all())
    assert stored == accepted


# -- R22: French by default, English for English speakers --------------------------------------
async def test_r22_http_errors_are_french_by_default_and_english_when_asked(server):
    async with httpx.AsyncClient(base_url=server.url) as http:
        french = (await http.get("/api/me")).json()["error"]
        english = (await http.get("/api/me", headers={"Accept-Language": "en-CA,en;q=0.9"})).json()["error"]
    assert french["code"] == english["code"] == "auth.missing_token"
    assert french["message"] == "Authentification requise : aucun jeton fourni."
    assert english["message"] == "Authentication required: no token was given."


@pytest.mark.parametrize("email, expected", [
    (MARIE, "Conversation introuvable ou inaccessible : 999999."),
    (JEAN, "Conversation not found or not accessible: 999999."),
], ids=["fr", "en"])
async def test_r22_http_errors_speak_the_persons_language(server, email, expected):
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/api/conversations/999999", headers=bearer(await server.token(email)))
    assert response.status_code == 404
    assert response.json()["error"] == {"code": "conversation.not_found", "message": expected,
                                        "fields": {"conversation_id": 999999}}


@pytest.mark.parametrize("email, expected", [
    (MARIE, "Le message est vide."),
    (JEAN, "The message is empty."),
], ids=["fr", "en"])
async def test_r22_websocket_errors_speak_the_persons_language(server, email, expected):
    async with await server.connect(email) as client:
        answer = await client.refused("message.send", conversation_id=1, client_id="c", text=" ")
    assert answer["code"] == "message.text_empty"
    assert answer["message"] == expected


async def test_r22_unauthenticated_websocket_error_follows_accept_language(server):
    async with websockets.connect(server.ws_url, additional_headers={"Accept-Language": "en"}) as ws:
        client = WSClient(ws)
        error = await client.next("error")
    assert error["message"] == "Authentication required: no token was given."


# -- text is data, never markup ------------------------------------------------------------------
HOSTILE = ('<script>alert("x")</script><img src=x onerror=alert(1)> &amp; &lt;b&gt; '
           "<b>gras</b> 'apostrophe' \"guillemets\" \\ \u2028 {{7*7}} ${7*7} %s")


async def test_html_in_a_message_is_stored_and_delivered_exactly_as_given(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        cid = await conversation_with_nadia(server, marie)
        sent = await marie.request("message.send", conversation_id=cid, client_id="html", text=HOSTILE)
        live = await nadia.event("message.new")
        assert live["message"]["text"] == HOSTILE
        history = await nadia.request("conversation.history", conversation_id=cid, after=0)
        assert [e["message"]["text"] for e in history["events"] if e["kind"] == "message.new"] == [HOSTILE]
    async with server.service.sessions() as session:
        assert (await session.get(Message, sent["message_id"])).text == HOSTILE
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get(f"/api/conversations/{cid}/events", headers=bearer(await server.token(NADIA)))
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == "application/json"
    assert "&lt;script" not in response.text
    events = response.json()["events"]
    assert [e["message"]["text"] for e in events if e["kind"] == "message.new"] == [HOSTILE]


# -- logs ---------------------------------------------------------------------------------------
# The test's own client libraries log what they send at DEBUG; only the server's logs count.
CLIENT_LOGGERS = ("websockets.client", "httpx", "httpcore")


async def talk(server, token: str, marker: str) -> None:
    """Sign in by header and by subprotocol, send and edit a message whose text
    starts with ``marker``, be refused once, read the history over HTTP."""
    async with await WSClient.open(server.ws_url, token) as marie, await server.connect(NADIA) as nadia:
        await marie.start({})
        cid = await conversation_with_nadia(server, marie)
        # "text" first, so that even a log line cut after a few dozen characters would show it.
        await marie.send_raw(json.dumps({"text": f"{marker} Léa a une allergie aux arachides",
                                         "type": "message.send", "id": "secret", "conversation_id": cid,
                                         "client_id": "secret"}))
        sent = await marie.reply("secret")
        assert sent["type"] == "ok"
        await nadia.event("message.new")
        await marie.request("message.edit", message_id=sent["message_id"], text=f"{marker} (modifié)")
        await nadia.event("message.edited")
        await marie.refused("message.send", conversation_id=cid, client_id="too-long", text=marker * 200)
    async with websockets.connect(server.ws_url, subprotocols=["chat.v1", f"bearer.{token}"]) as browser:
        assert json.loads(await browser.recv())["type"] == "hello"
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get(f"/api/conversations/{cid}/events", headers=bearer(token))).status_code == 200
        assert (await http.get("/api/me", headers=bearer(token + "x"))).status_code == 401


async def logged_while_talking(server, caplog, uvicorn_level: int | None = None) -> tuple[list, str, str]:
    """The server's log records during :func:`talk`, with the secrets to look for."""
    marker = uuid.uuid4().hex
    token = await server.token(MARIE)
    caplog.set_level(logging.DEBUG)
    if uvicorn_level is not None:
        caplog.set_level(uvicorn_level, logger="uvicorn.error")
        caplog.set_level(uvicorn_level, logger="uvicorn.access")
    # uvicorn's loggers do not propagate to the root logger: listen to them directly.
    uvicorn_loggers = [logging.getLogger("uvicorn"), logging.getLogger("uvicorn.access")]
    for logger in uvicorn_loggers:
        logger.addHandler(caplog.handler)
    try:
        # Prove the capture works at DEBUG, for the server's loggers and uvicorn's alike.
        probes = [logging.getLogger("chat.web"), logging.getLogger("uvicorn.error")]
        for logger in probes:
            logger.debug("capture probe %s", marker[:8])
        captured = {(r.name, r.getMessage()) for r in caplog.records}
        for logger in probes[: 1 if uvicorn_level is None else 2]:
            assert (logger.name, f"capture probe {marker[:8]}") in captured, f"{logger.name} is not captured"
        caplog.clear()
        await talk(server, token, marker)
    finally:
        for logger in uvicorn_loggers:
            logger.removeHandler(caplog.handler)
    return [r for r in caplog.records if not r.name.startswith(CLIENT_LOGGERS)], marker, token


def leaks(records: list[logging.LogRecord], *secrets: str) -> list[str]:
    found = []
    for record in records:
        rendered = f"{record.getMessage()} {record.exc_text or ''} {record.stack_info or ''}"
        if any(secret in rendered for secret in secrets):
            found.append(f"{record.name}:{record.levelname}: {rendered[:160]}")
    return found


async def test_logs_at_debug_never_contain_message_text_or_tokens(server, caplog):
    records, marker, token = await logged_while_talking(server, caplog)
    signature = token.rsplit(".", 1)[1]
    assert not leaks(records, marker, token, signature), "\n".join(leaks(records, marker, token, signature))


async def test_server_debug_trace_never_contains_message_text_or_tokens(server, caplog):
    """LOG_LEVEL=debug also hands "debug" to uvicorn (chat/__main__.py): its
    WebSocket trace must not write the Authorization header, the bearer
    subprotocol or frame contents."""
    records, marker, token = await logged_while_talking(server, caplog, uvicorn_level=logging.DEBUG)
    records = [r for r in records if r.name.startswith("uvicorn")]
    assert records, "uvicorn logged nothing: the test would prove nothing"
    signature = token.rsplit(".", 1)[1]
    assert not leaks(records, marker, token, signature), "\n".join(leaks(records, marker, token, signature))


async def test_metrics_count_connections_deliveries_and_send_latency_without_message_text(server):
    import httpx as _httpx

    from tests.conftest import MARIE as _MARIE, NADIA as _NADIA, child_id as _child_id, person_by_email as _person

    async with await server.connect(_MARIE) as marie, await server.connect(_NADIA) as nadia:
        nadia_id = (await _person(server.service, _NADIA)).id
        created = await marie.request("conversation.create", child_id=await _child_id(server.service, "Léa"),
                                      participants=[nadia_id])
        await marie.request("message.send", conversation_id=created["conversation"]["id"], client_id="m",
                            text="secret-metrics-text")
        await nadia.event("message.new")
        async with _httpx.AsyncClient(base_url=server.url) as http:
            body = (await http.get("/metrics")).text
    assert "chat_connections 2.0" in body
    delivered = next(float(line.split()[1]) for line in body.splitlines() if line.startswith("chat_deliveries_total"))
    assert delivered >= 2
    assert 'chat_send_ack_seconds_count 1.0' in body
    assert "chat_held_notifications" in body and "secret-metrics-text" not in body


async def test_metrics_show_garbage_collector_pauses_and_event_loop_lag(server):
    """What holds a whole worker up: the collector's pauses, by generation, and
    how late the event loop's timer fires (a sample every 100 ms)."""
    import gc

    import httpx as _httpx

    def count(body: str, name: str) -> float:
        return next(float(line.split()[1]) for line in body.splitlines() if line.startswith(name))

    full = 'chat_gc_pause_seconds_count{generation="2"}'
    lag = "chat_event_loop_lag_seconds_count"
    async with _httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:
        before = (await http.get("/metrics")).text
        gc.collect()
        after = (await http.get("/metrics")).text
        assert count(after, full) >= count(before, full) + 1
        deadline = asyncio.get_running_loop().time() + WAIT
        while count(after, lag) < count(before, lag) + 2:  # two samples taken since, however late they come
            assert asyncio.get_running_loop().time() < deadline, "the event loop lag is not sampled"
            await asyncio.sleep(0.1)
            after = (await http.get("/metrics")).text
