"""Accounts end to end (R19, R21), against a real SMTP server (aiosmtpd): the
codes are read from the e-mails received, on both backends.

Every demo person is in the directory without a password: creating an account
is choosing one, proved by the code e-mailed to the address on file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any, AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from chat.accounts.service import Client
from chat.accounts.throttle import LIMITS, Limit, Throttle
from chat.app import App
from chat.clock import ManualClock
from chat.hub import CLOSE_UNAUTHENTICATED
from chat.storage.models import AuditEntry, AuthSession, EmailCode
from tests.client import WSClient
from tests.conftest import JEAN, MARIE, NADIA, serve_service
from tests.mailbox import Mailbox, mailbox  # noqa: F401 - the fixture
from tests.test_auth import bearer, close_code, signed_out_frames

PASSWORD = "Bleuet-des-bois-7"
OTHER_PASSWORD = "Framboise#Sauvage9"
UNKNOWN = "personne@inconnu.test"


@pytest.fixture
async def site(settings, engine, mailbox: Mailbox) -> AsyncIterator["Site"]:
    """The hub serving real HTTP and WebSockets, sending its e-mails to ``mailbox``."""
    service = App(settings.with_(smtp_url=mailbox.url), engine)
    await service.start()
    try:
        async with serve_service(service) as server, httpx.AsyncClient(base_url=server.url) as http:
            yield Site(server, service, mailbox, http)
    finally:
        await service.stop()


class Site:
    def __init__(self, server, service: App, mailbox: Mailbox, http: httpx.AsyncClient) -> None:
        self.server = server
        self.service = service
        self.mailbox = mailbox
        self.http = http

    async def post(self, path: str, token: str | None = None, **body: Any) -> httpx.Response:
        return await self.http.post(path, json=body, headers=bearer(token))

    async def code(self, email: str, step: str, **body: Any) -> str:
        """Take ``step`` (which e-mails a code to ``email``) and return the code received."""
        seen = len(self.mailbox.messages)
        response = await self.post(step, email=email, **body)
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "code_sent"}
        return await self.mailbox.code_for(email, after=seen)

    async def create_account(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        code = await self.code(email, "/api/auth/signup", password=password)
        response = await self.post("/api/auth/signup/verify", email=email, code=code)
        assert response.status_code == 200, response.text
        return response.json()

    async def sign_in(self, email: str, password: str = PASSWORD, user_agent: str = "test") -> dict[str, Any]:
        code = await self.code(email, "/api/auth/signin", password=password)
        response = await self.http.post("/api/auth/signin/verify", json={"email": email, "code": code},
                                        headers={"User-Agent": user_agent})
        assert response.status_code == 200, response.text
        return response.json()

    async def me(self, tokens: dict[str, Any]) -> httpx.Response:
        return await self.http.get("/api/me", headers=bearer(tokens["access_token"]))

    async def socket(self, tokens: dict[str, Any]) -> WSClient:
        client = await WSClient.open(self.server.ws_url, tokens["access_token"])
        await client.start({})
        return client


def error_of(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


# --- creating an account, two-step sign-in (R19) ------------------------------------------
async def test_a_parent_creates_an_account_with_the_code_e_mailed_then_signs_in_in_two_steps(site):
    tokens = await site.create_account(MARIE)
    assert (await site.me(tokens)).json()["email"] == MARIE
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"] and tokens["session_id"]

    # Later: e-mail and password, then a new code.
    wrong = await site.post("/api/auth/signin", email=MARIE, password=OTHER_PASSWORD)
    assert (wrong.status_code, error_of(wrong)) == (401, "auth.invalid_credentials")
    again = await site.sign_in(MARIE)
    assert again["session_id"] != tokens["session_id"]
    async with await site.socket(again) as client:
        assert client.hello["person"]["name"] == "Marie Tremblay"
        assert (await client.request("ping"))["pong"] is True


async def test_the_code_e_mail_is_in_the_person_s_language_and_says_how_long_it_lasts(site):
    seen = len(site.mailbox.messages)
    await site.code(JEAN, "/api/auth/signup", password=PASSWORD)  # Jean reads English
    _, message = site.mailbox.messages[seen]
    assert message["Content-Language"] == "en"
    assert "15 minutes" in message.get_content() and "Your code is" in message.get_content()


async def test_staff_activate_their_account_the_same_way(site):
    tokens = await site.create_account(NADIA)
    assert (await site.me(tokens)).json()["role"] == "teacher"
    assert (await site.me(await site.sign_in(NADIA))).status_code == 200


@pytest.mark.parametrize("password, code", [
    ("Ab1!", "password.too_short"),
    ("bleuet-des-bois-7", "password.no_upper"),
    ("BLEUET-DES-BOIS-7", "password.no_lower"),
    ("BleuetDesBois", "password.no_digit_or_symbol"),
    ("Password1", "password.too_common"),
    ("Soleil2026!", "password.too_common"),
    ("A" + "a1" * 200, "password.too_long"),
])
async def test_each_password_rule_is_refused_with_its_own_code_and_nothing_is_sent(site, password, code):
    for step in ("/api/auth/signup", "/api/auth/password/reset"):
        response = await site.post(step, email=MARIE, password=password, code="000000")
        assert (response.status_code, error_of(response)) == (400, code)
        assert response.json()["error"]["message"]
    await asyncio.sleep(0)
    assert site.mailbox.messages == []


async def test_a_code_expires(site):
    clock = site.service.accounts.clock = ManualClock(time.time())
    code = await site.code(MARIE, "/api/auth/signup", password=PASSWORD)
    await clock.advance(site.service.settings.code_ttl_seconds + 1)
    response = await site.post("/api/auth/signup/verify", email=MARIE, code=code)
    assert (response.status_code, error_of(response)) == (401, "auth.invalid_code")


async def test_a_new_code_voids_the_previous_one(site):
    await site.create_account(MARIE)
    first = await site.code(MARIE, "/api/auth/signin", password=PASSWORD)
    second = await site.code(MARIE, "/api/auth/signin", password=PASSWORD)
    if first != second:  # one chance in a million that they are the same
        response = await site.post("/api/auth/signin/verify", email=MARIE, code=first)
        assert error_of(response) == "auth.invalid_code"
    assert (await site.post("/api/auth/signin/verify", email=MARIE, code=second)).status_code == 200


async def test_a_code_works_once(site):
    code = await site.code(MARIE, "/api/auth/signup", password=PASSWORD)
    assert (await site.post("/api/auth/signup/verify", email=MARIE, code=code)).status_code == 200
    response = await site.post("/api/auth/signup/verify", email=MARIE, code=code)
    assert error_of(response) == "auth.invalid_code"


async def test_five_wrong_codes_void_the_code(site):
    code = await site.code(MARIE, "/api/auth/signup", password=PASSWORD)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for _ in range(5):
        response = await site.post("/api/auth/signup/verify", email=MARIE, code=wrong)
        assert error_of(response) == "auth.invalid_code"
    response = await site.post("/api/auth/signup/verify", email=MARIE, code=code)
    assert error_of(response) == "auth.invalid_code"
    async with site.service.sessions() as session:
        attempts = (await session.execute(select(EmailCode.attempts, EmailCode.spent))).all()
    assert attempts == [(5, True)]


# --- no enumeration -------------------------------------------------------------------------
async def test_unknown_known_and_inactive_e_mails_get_the_same_answers(site):
    await site.create_account(MARIE)  # Marie is active; Nadia is on file, not activated
    answers = {}
    for email in (MARIE, NADIA, UNKNOWN):
        signin = await site.post("/api/auth/signin", email=email, password=OTHER_PASSWORD)
        signup = await site.post("/api/auth/signup", email=email, password=OTHER_PASSWORD)
        forgot = await site.post("/api/auth/password/forgot", email=email)
        verify = await site.post("/api/auth/signin/verify", email=email, code="123456")
        answers[email] = [(r.status_code, r.json()) for r in (signin, signup, forgot, verify)]
    assert answers[MARIE] == answers[NADIA] == answers[UNKNOWN]
    assert answers[UNKNOWN][0] == (401, answers[UNKNOWN][0][1]) and \
        answers[UNKNOWN][0][1]["error"]["code"] == "auth.invalid_credentials"
    # Nobody unknown was e-mailed; the active account was told it exists already (no code).
    await site.mailbox.wait_for(3)
    await asyncio.sleep(0.2)
    addressed = [to for to, _ in site.mailbox.messages]
    assert UNKNOWN not in addressed


# --- forgotten password (R21) ---------------------------------------------------------------
async def test_a_forgotten_password_is_reset_with_an_e_mailed_code_and_every_other_session_ends(site):
    await site.create_account(MARIE)
    laptop = await site.sign_in(MARIE)
    laptop_socket = await site.socket(laptop)
    code = await site.code(MARIE, "/api/auth/password/forgot")
    response = await site.post("/api/auth/password/reset", email=MARIE, code=code, password=OTHER_PASSWORD)
    assert response.status_code == 200, response.text
    phone = response.json()
    frames = await signed_out_frames(laptop_socket)
    assert frames[-1:] == [{"type": "signed_out"}] and close_code(laptop_socket.ws) == CLOSE_UNAUTHENTICATED
    assert error_of(await site.me(laptop)) == "auth.revoked_token"
    assert (await site.me(phone)).status_code == 200
    old = await site.post("/api/auth/signin", email=MARIE, password=PASSWORD)
    assert error_of(old) == "auth.invalid_credentials"
    assert (await site.me(await site.sign_in(MARIE, OTHER_PASSWORD))).status_code == 200


# --- sessions: refresh, reuse, sign-out, the list (R21) ---------------------------------
async def test_a_refresh_credential_rotates_and_a_reused_one_ends_the_session(site):
    tokens = await site.create_account(MARIE)
    response = await site.post("/api/auth/refresh", refresh_token=tokens["refresh_token"])
    assert response.status_code == 200
    rotated = response.json()
    assert rotated["session_id"] == tokens["session_id"]
    assert rotated["refresh_token"] != tokens["refresh_token"]
    assert (await site.me(rotated)).status_code == 200
    client = await site.socket(rotated)

    # The old credential again: someone else holds it.  The whole session ends.
    stolen = await site.post("/api/auth/refresh", refresh_token=tokens["refresh_token"])
    assert (stolen.status_code, error_of(stolen)) == (401, "auth.invalid_refresh")
    assert error_of(await site.me(rotated)) == "auth.revoked_token"
    assert error_of(await site.post("/api/auth/refresh", refresh_token=rotated["refresh_token"])) == \
        "auth.invalid_refresh"
    assert (await signed_out_frames(client))[-1:] == [{"type": "signed_out"}]
    async with site.service.sessions() as session:
        row = await session.get(AuthSession, tokens["session_id"])
    assert row.ended_because == "reuse"
    assert row.refresh_hash != tokens["refresh_token"].partition(".")[2]  # stored hashed


@pytest.mark.parametrize("credential", ["", "nodot", "x" * 40 + ".y", "unknown-session.secret"])
async def test_a_malformed_refresh_credential_is_refused_cleanly(site, credential):
    response = await site.post("/api/auth/refresh", refresh_token=credential)
    assert (response.status_code, error_of(response)) == (401, "auth.invalid_refresh")


async def test_sign_out_on_one_device_closes_the_other_device_s_socket(site):
    await site.create_account(MARIE)
    phone, laptop = await site.sign_in(MARIE, user_agent="phone"), await site.sign_in(MARIE, user_agent="laptop")
    laptop_socket = await site.socket(laptop)
    assert (await site.post("/api/auth/signout", token=phone["access_token"])).status_code == 200
    assert (await signed_out_frames(laptop_socket))[-1:] == [{"type": "signed_out"}]
    assert close_code(laptop_socket.ws) == CLOSE_UNAUTHENTICATED
    for tokens in (phone, laptop):
        assert error_of(await site.me(tokens)) == "auth.revoked_token"
        assert error_of(await site.post("/api/auth/refresh", refresh_token=tokens["refresh_token"])) == \
            "auth.invalid_refresh"


async def test_a_person_lists_their_sessions_and_ends_one_whose_socket_closes(site):
    await site.create_account(MARIE)
    phone = await site.sign_in(MARIE, user_agent="Phone browser")
    laptop = await site.sign_in(MARIE, user_agent="Laptop browser")
    phone_socket, laptop_socket = await site.socket(phone), await site.socket(laptop)
    listed = (await site.http.get("/api/sessions", headers=bearer(laptop["access_token"]))).json()["sessions"]
    by_agent = {s["user_agent"]: s for s in listed}
    assert by_agent["Laptop browser"]["current"] is True and by_agent["Phone browser"]["current"] is False
    assert {"id", "created_at", "last_used_at"} <= set(by_agent["Phone browser"])
    ended = await site.http.delete(f"/api/sessions/{phone['session_id']}", headers=bearer(laptop["access_token"]))
    assert ended.json() == {"ended": 1}
    assert (await signed_out_frames(phone_socket))[-1:] == [{"type": "signed_out"}]
    assert (await laptop_socket.request("ping"))["pong"] is True  # the laptop's session goes on
    again = await site.http.delete(f"/api/sessions/{phone['session_id']}", headers=bearer(laptop["access_token"]))
    assert (again.status_code, error_of(again)) == (404, "auth.session_not_found")
    await laptop_socket.close()


async def test_nobody_ends_someone_else_s_session(site):
    marie = await site.create_account(MARIE)
    jean = await site.create_account(JEAN)
    response = await site.http.delete(f"/api/sessions/{marie['session_id']}", headers=bearer(jean["access_token"]))
    assert error_of(response) == "auth.session_not_found"
    assert (await site.me(marie)).status_code == 200


# --- throttling -------------------------------------------------------------------------------
async def test_password_guesses_are_throttled_per_account_with_a_retry_after_shared_by_workers(site, settings, engine):
    limits = dict(LIMITS, **{"password.account": Limit(3, 900)})
    site.service.accounts.throttle = Throttle(site.service.throttle.counter, limits)
    await site.create_account(MARIE)
    for _ in range(3):
        assert error_of(await site.post("/api/auth/signin", email=MARIE, password="Wrong-guess-1")) == \
            "auth.invalid_credentials"
    refused = await site.post("/api/auth/signin", email=MARIE, password=PASSWORD)  # even the right one now
    assert (refused.status_code, error_of(refused)) == (429, "auth.throttled")
    assert 0 < int(refused.headers["Retry-After"]) <= 900
    assert refused.json()["error"]["fields"]["retry_after"] > 0
    # Another worker (another App on the same database, or the same Redis) counts with this one.
    other = App(site.service.settings, engine)
    other.accounts.throttle = Throttle(other.throttle.counter, limits)
    try:
        with pytest.raises(Exception) as refusal:
            await other.accounts.signin(MARIE, PASSWORD, site_client())
        assert getattr(refusal.value, "code", None) == "auth.throttled"
    finally:
        await other.stop()
    # Another account from another address is not held up.
    assert (await site.post("/api/auth/signin", email=JEAN, password=PASSWORD)).status_code == 401


def site_client() -> Client:
    return Client(address="192.0.2.10", user_agent="other worker")


async def test_code_guesses_are_throttled_per_address(site):
    limits = dict(LIMITS, **{"code.address": Limit(4, 900)})
    site.service.accounts.throttle = Throttle(site.service.throttle.counter, limits)
    for email in (MARIE, JEAN, NADIA, UNKNOWN):
        assert error_of(await site.post("/api/auth/signin/verify", email=email, code="000000")) == "auth.invalid_code"
    refused = await site.post("/api/auth/signin/verify", email="another@inconnu.test", code="000000")
    assert (refused.status_code, error_of(refused)) == (429, "auth.throttled")


# --- what is written down, and what never is -----------------------------------------------
async def test_every_step_is_audited_and_no_secret_reaches_the_audit_log_or_the_log(site, caplog):
    caplog.set_level(logging.DEBUG)
    tokens = await site.create_account(MARIE)
    await site.post("/api/auth/signin", email=MARIE, password="Wrong-guess-1")
    await site.post("/api/auth/signin", email=UNKNOWN, password="Wrong-guess-2")
    signed_in = await site.sign_in(MARIE)
    refreshed = (await site.post("/api/auth/refresh", refresh_token=signed_in["refresh_token"])).json()
    await site.post("/api/auth/signout", token=refreshed["access_token"])
    async with site.service.sessions() as session:
        entries = (await session.execute(select(AuditEntry.action, AuditEntry.target, AuditEntry.details)
                                         .order_by(AuditEntry.id))).all()
    actions = [action for action, _, _ in entries]
    for expected in ("account.code_sent", "account.activated", "auth.signin", "auth.signin_failed",
                     "auth.session_ended"):
        assert expected in actions, actions
    codes = [await site.mailbox.code_for(MARIE, after=i) for i in range(len(site.mailbox.messages))
             if site.mailbox.messages[i][0] == MARIE]
    secrets = [PASSWORD, "Wrong-guess-1", "Wrong-guess-2", tokens["access_token"], tokens["refresh_token"],
               refreshed["refresh_token"], *codes]
    written = json.dumps(entries, default=str) + "\n".join(r.getMessage() for r in caplog.records)
    for secret in secrets:
        assert not re.search(rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])", written), "a secret was written"
    assert UNKNOWN not in written  # an unknown e-mail is audited by a digest, not as typed


async def test_an_open_socket_takes_a_refreshed_token_and_refuses_another_session_s(site):
    tokens = await site.create_account(MARIE)
    client = await site.socket(tokens)
    (conn,) = site.service.hub.by_person[tokens["person"]["id"]]
    refreshed = (await site.post("/api/auth/refresh", refresh_token=tokens["refresh_token"])).json()
    answer = await client.request("token.renew", token=refreshed["access_token"])
    assert answer["expires_at"] == conn.expires_at >= site.service.settings.token_ttl_seconds
    other = await site.sign_in(MARIE)  # another session of the same person
    refused = await client.refused("token.renew", token=other["access_token"])
    assert refused["code"] == "auth.invalid_token"
    assert (await client.refused("token.renew", token="not-a-token"))["code"] == "auth.invalid_token"
    assert conn.expires_at == answer["expires_at"]  # unchanged by the refusals, and still open
    assert (await client.request("ping"))["pong"] is True
    await client.close()
