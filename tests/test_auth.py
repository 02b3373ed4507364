"""Authentication end to end: bearer tokens on HTTP and WebSocket, and R21
sign-out (every token of the person revoked, every open socket closed)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets

from chat import auth
from chat.hub import CLOSE_UNAUTHENTICATED
from tests.client import WAIT, WSClient
from tests.conftest import MARIE, NADIA, SECRET, person_by_email


async def marie_token(server, **mint_args) -> str:
    """An access token of Marie's, in a new session of hers; ``mint_args`` change how it is
    minted (another secret, person, lifetime…) while it still names that real session."""
    marie = await person_by_email(server.service, MARIE)
    tokens = await server.service.accounts.open_session(marie.id, "test")
    if not mint_args:
        return tokens["access_token"]
    args = dict(secret=SECRET, person_id=marie.id, role=marie.role, ttl_seconds=3600,
                session_id=tokens["session_id"]) | mint_args
    return auth.mint(**args)


async def bad_token(server, kind: str) -> str | None:
    """A token that must be refused, and why (the expected error code)."""
    if kind == "auth.missing_token":
        return None
    if kind == "auth.invalid_token":  # forged: signed with another secret
        return await marie_token(server, secret="another-secret-" + "y" * 40)
    if kind == "auth.expired_token":
        return await marie_token(server, ttl_seconds=60, now=time.time() - 3600)
    if kind == "auth.unknown_person":
        return await marie_token(server, person_id=987654)
    raise AssertionError(kind)


BAD_TOKENS = ["auth.missing_token", "auth.invalid_token", "auth.expired_token", "auth.unknown_person"]


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def get_me(server, token: str | None, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url) as http:
        return await http.get("/api/me", headers=bearer(token), **kwargs)


async def expect_closed(ws: websockets.ClientConnection) -> list[dict]:
    """Frames received until the server closes; raises if it does not within WAIT."""
    frames = []
    try:
        while True:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT)))
    except websockets.ConnectionClosed:
        return frames


def close_code(ws: websockets.ClientConnection) -> int | None:
    """The code of the close frame the server sent (None if none was received)."""
    return ws.protocol.close_rcvd.code if ws.protocol.close_rcvd is not None else None


# -- HTTP -----------------------------------------------------------------------------------
async def test_http_with_a_valid_token_answers_who_i_am(server):
    response = await get_me(server, await marie_token(server))
    assert response.status_code == 200
    assert response.json()["name"] == "Marie Tremblay"


@pytest.mark.parametrize("code", BAD_TOKENS)
async def test_http_refuses_a_bad_token_with_401_and_its_reason(server, code):
    response = await get_me(server, await bad_token(server, code))
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]  # French by default; see test_security for the languages


async def test_http_refuses_a_token_in_the_query_string(server):
    """Tokens in URLs end up in access logs and browser history: never accepted."""
    token = await marie_token(server)
    response = await get_me(server, None, params={"token": token})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "auth.missing_token"
    response = await get_me(server, None, params={"access_token": token})
    assert response.status_code == 401


async def test_http_refuses_a_scheme_other_than_bearer(server):
    token = await marie_token(server)
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/api/me", headers={"Authorization": f"Basic {token}"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "auth.missing_token"


# -- WebSocket ---------------------------------------------------------------------------------
@pytest.mark.parametrize("code", BAD_TOKENS)
async def test_websocket_refuses_a_bad_token_with_an_error_frame_then_close_4401(server, code):
    token = await bad_token(server, code)
    async with websockets.connect(server.ws_url, additional_headers=bearer(token)) as ws:
        frames = await expect_closed(ws)
        assert [f["type"] for f in frames] == ["error"]
        assert frames[0]["code"] == code
        assert frames[0]["message"]
        assert close_code(ws) == CLOSE_UNAUTHENTICATED
        assert ws.protocol.close_rcvd.reason == code


async def test_websocket_refuses_a_token_in_the_query_string(server):
    token = await marie_token(server)
    async with websockets.connect(f"{server.ws_url}?token={token}") as ws:
        frames = await expect_closed(ws)
        assert frames[0]["code"] == "auth.missing_token"
        assert close_code(ws) == CLOSE_UNAUTHENTICATED


async def test_browser_authenticates_with_a_bearer_subprotocol_and_gets_chat_v1(server):
    token = await marie_token(server)
    async with websockets.connect(server.ws_url, subprotocols=["chat.v1", f"bearer.{token}"]) as ws:
        assert ws.subprotocol == "chat.v1"
        client = WSClient(ws)
        hello = await client.next("hello")
        assert hello["person"]["name"] == "Marie Tremblay"
        assert (await client.request("ping"))["pong"] is True


async def test_bad_bearer_subprotocol_is_refused_like_a_bad_header(server):
    forged = await bad_token(server, "auth.invalid_token")
    async with websockets.connect(server.ws_url, subprotocols=["chat.v1", f"bearer.{forged}"]) as ws:
        frames = await expect_closed(ws)
        assert frames[0]["code"] == "auth.invalid_token"
        assert close_code(ws) == CLOSE_UNAUTHENTICATED


# -- R21: sign-out ends the session everywhere ----------------------------------------------
async def signed_out_frames(client: WSClient) -> list[dict]:
    frames = list(client.frames)
    client.frames.clear()
    frames += await expect_closed(client.ws)
    return frames


async def test_r21_signout_revokes_every_token_of_the_person_on_http(server):
    phone, laptop = await marie_token(server), await marie_token(server)
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/api/me", headers=bearer(laptop))).status_code == 200
        response = await http.post("/api/auth/signout", headers=bearer(phone))
        assert response.status_code == 200
        assert response.json() == {"signed_out": True}
        for token in (phone, laptop):
            refused = await http.get("/api/me", headers=bearer(token))
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "auth.revoked_token"


async def test_r21_signout_closes_the_persons_open_websockets_with_4401(server):
    phone_token = await marie_token(server)
    phone = await WSClient.open(server.ws_url, phone_token)
    await phone.start({})
    laptop = await server.connect(MARIE)
    async with await server.connect(NADIA) as nadia:
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.post("/api/auth/signout", headers=bearer(phone_token))).status_code == 200
        for device in (phone, laptop):
            frames = await signed_out_frames(device)
            assert frames[-1:] == [{"type": "signed_out"}]
            assert close_code(device.ws) == CLOSE_UNAUTHENTICATED
        # Someone else's connection is untouched.
        assert (await nadia.request("ping"))["pong"] is True


async def test_r21_revoked_token_is_refused_on_websocket(server):
    token = await marie_token(server)
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.post("/api/auth/signout", headers=bearer(token))).status_code == 200
    async with websockets.connect(server.ws_url, additional_headers=bearer(token)) as ws:
        frames = await expect_closed(ws)
        assert frames[0]["code"] == "auth.revoked_token"
        assert close_code(ws) == CLOSE_UNAUTHENTICATED


async def test_r21_token_minted_after_signout_works(server):
    old = await marie_token(server)
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.post("/api/auth/signout", headers=bearer(old))).status_code == 200
        new = await marie_token(server)
        assert (await http.get("/api/me", headers=bearer(new))).status_code == 200
        assert (await http.get("/api/me", headers=bearer(old))).status_code == 401
    async with await WSClient.open(server.ws_url, new) as client:
        assert client.hello["person"]["name"] == "Marie Tremblay"
        assert (await client.request("ping"))["pong"] is True


async def test_r21_signout_frame_over_websocket_ends_every_session(server):
    earlier = await marie_token(server)
    first = await server.connect(MARIE)
    second = await server.connect(MARIE)
    await first.send("signout")
    for device in (first, second):
        frames = await signed_out_frames(device)
        assert {"type": "signed_out"} in frames
        assert close_code(device.ws) == CLOSE_UNAUTHENTICATED
    response = await get_me(server, earlier)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "auth.revoked_token"
