"""Accounts (R19, R21): create an account, sign in in two steps, forgotten
password, refresh, sign out, see and end one's sessions.

No answer tells whether an e-mail is known: ``signup`` and ``forgot`` always
answer that a code was sent (one is, when it can be used); ``signin`` answers
``auth.invalid_credentials`` alike for an unknown e-mail, a wrong password
and an account not yet activated, after the same Argon2 work; a code step
answers ``auth.invalid_code`` alike for an unknown e-mail and a wrong code.
Every step is throttled per account and per client address
(chat.accounts.throttle), and written to the audit log without the password,
the code or any token.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from sqlalchemy import select

from chat import auth
from chat.accounts import sessions as devices
from chat.accounts.codes import Codes
from chat.accounts.hashing import hash_password, needs_rehash, sha256, verify_password
from chat.accounts.mails import already_active_mail, code_mail
from chat.accounts.throttle import Throttle
from chat.clock import Clock
from chat.config import Settings
from chat.errors import BadRequest, NotFound, Unauthenticated
from chat.frames import dumps
from chat.mail import Mailer
from chat.people import Actor
from chat.policies import passwords
from chat.schools import audit
from chat.storage.models import Person

log = logging.getLogger("chat.accounts")


@dataclass(frozen=True)
class Client:
    """Who is asking, as far as the request tells: for throttling and the session list."""

    address: str | None = None
    user_agent: str = ""


def normal_email(email: str) -> str:
    return email.strip().lower()


def email_target(email: str) -> str:
    """How an e-mail that matches no one is named in the audit log: not as typed (people
    type passwords into the e-mail field)."""
    return f"email:{sha256(normal_email(email))[:16]}"


class Accounts:
    def __init__(self, *, settings: Settings, sessions: Any, clock: Clock, mailer: Mailer, throttle: Throttle,
                 publish_person: Callable[..., Awaitable[None]],
                 show_code: Callable[[str, str, str], None] | None = None) -> None:
        self.settings = settings
        self.sessions = sessions
        self.clock = clock
        self.mailer = mailer
        self.throttle = throttle
        self.publish_person = publish_person
        self.show_code = show_code  # demo mode: the code on the console
        self.codes = Codes(settings.secret_key, settings.code_ttl_seconds)
        self.sending: set[asyncio.Task] = set()

    # --- steps -------------------------------------------------------------

    async def signup(self, email: str, password: str, client: Client) -> dict[str, Any]:
        """R19: a person the directory knows chooses a password; the account is
        activated by the code e-mailed to them (:meth:`signup_verify`)."""
        refused = passwords.refusal(password)
        if refused:
            raise BadRequest(refused)
        email = normal_email(email)
        await self.throttle.check("send", email, client.address)
        pending = await hash_password(password)  # for everyone: the same time
        async with self.sessions() as session, session.begin():
            person = await self._person(session, email)
            if person is not None and person.password_hash is None:
                code = await self.codes.issue(session, person.id, "signup", self.clock.time(), pending)
                audit(session, person, None, "account.code_sent", f"person:{person.id}", purpose="signup")
            else:
                code = None
                audit(session, person, None, "account.signup_refused",
                      f"person:{person.id}" if person else email_target(email),
                      reason="active" if person else "not_on_file")
        if code is not None:
            await self._send_code(person, "signup", code)
        elif person is not None:
            await self._mail(already_active_mail(self.settings.mail_from, person.email, person.name,
                                                 person.language, self.settings.app_url))
        return {"status": "code_sent"}

    async def signup_verify(self, email: str, code: str, client: Client) -> dict[str, Any]:
        return await self._with_code(email, code, "signup", client)

    async def signin(self, email: str, password: str, client: Client) -> dict[str, Any]:
        """R19, first step: e-mail and password; a code is e-mailed for the second."""
        email = normal_email(email)
        await self.throttle.check("password", email, client.address)
        async with self.sessions() as session:
            person = await self._person(session, email)
        stored = person.password_hash if person is not None else None
        if not await verify_password(stored, password):
            async with self.sessions() as session, session.begin():
                audit(session, person, None, "auth.signin_failed",
                      f"person:{person.id}" if person else email_target(email),
                      reason="password" if stored else ("not_activated" if person else "not_on_file"))
            raise Unauthenticated("auth.invalid_credentials")
        await self.throttle.check("send", email, client.address)
        rehashed = await hash_password(password) if needs_rehash(stored) else None
        async with self.sessions() as session, session.begin():
            row = await session.get(Person, person.id)
            if rehashed:
                row.password_hash = rehashed
            code = await self.codes.issue(session, person.id, "signin", self.clock.time())
            audit(session, person, None, "account.code_sent", f"person:{person.id}", purpose="signin")
        await self._send_code(person, "signin", code)
        return {"status": "code_sent"}

    async def signin_verify(self, email: str, code: str, client: Client) -> dict[str, Any]:
        return await self._with_code(email, code, "signin", client)

    async def forgot(self, email: str, client: Client) -> dict[str, Any]:
        """A code to set a new password (:meth:`reset`), e-mailed if the e-mail is known."""
        email = normal_email(email)
        await self.throttle.check("send", email, client.address)
        async with self.sessions() as session, session.begin():
            person = await self._person(session, email)
            code = None
            if person is not None:
                code = await self.codes.issue(session, person.id, "reset", self.clock.time())
            audit(session, person, None, "account.code_sent" if person else "account.reset_refused",
                  f"person:{person.id}" if person else email_target(email), purpose="reset")
        if code is not None:
            await self._send_code(person, "reset", code)
        return {"status": "code_sent"}

    async def reset(self, email: str, code: str, password: str, client: Client) -> dict[str, Any]:
        """A new password with the code from :meth:`forgot`: every session of the
        person ends (R21), and this device gets a new one."""
        refused = passwords.refusal(password)
        if refused:
            raise BadRequest(refused)
        new_hash = await hash_password(password)
        return await self._with_code(email, code, "reset", client, new_hash)

    async def _with_code(self, email: str, code: str, purpose: str, client: Client,
                         new_hash: str | None = None) -> dict[str, Any]:
        """The second step of ``purpose``: check the code, apply what it allows, start a session."""
        email = normal_email(email)
        await self.throttle.check("code", email, client.address)
        now = self.clock.time()
        ended: list[str] = []
        async with self.sessions() as session, session.begin():
            person = await self._person(session, email)
            row = await self.codes.take(session, person.id if person else None, purpose, code.strip(), now)
            if row is None:
                audit(session, person, None, "auth.code_refused",
                      f"person:{person.id}" if person else email_target(email), purpose=purpose)
            else:
                if purpose == "signup":
                    person.password_hash = row.pending_hash
                    audit(session, person, None, "account.activated", f"person:{person.id}")
                elif purpose == "reset":
                    person.password_hash = new_hash
                    ended = await devices.end(session, person.id, now, "reset")
                    audit(session, person, None, "account.password_reset", f"person:{person.id}",
                          sessions_ended=len(ended))
                issued = devices.start(session, person.id, client.user_agent, now, self.settings.session_ttl_seconds)
                audit(session, person, None, "auth.signin", f"person:{person.id}", via=purpose,
                      session_id=issued.session_id)
        if row is None:
            raise Unauthenticated("auth.invalid_code")
        if ended:
            await self._close(person.id, ended)
        return self._tokens(person, issued)

    # --- sessions (R21) -----------------------------------------------------

    async def refresh(self, refresh_token: str, client: Client) -> dict[str, Any]:
        """A new access token and a new refresh credential for the old one (rotation);
        an old one shown again ends its session (theft detection)."""
        now = self.clock.time()
        async with self.sessions() as session, session.begin():
            rotation = await devices.rotate(session, refresh_token, now, self.settings.session_ttl_seconds)
            row = rotation.row
            person = await session.get(Person, row.person_id) if row is not None else None
            if rotation.ended:
                audit(session, person, None, "auth.session_ended", f"person:{row.person_id}",
                      session_id=row.id, because=row.ended_because)
        if rotation.ended:
            await self._close(row.person_id, [row.id])
        if rotation.issued is None or person is None:
            raise Unauthenticated("auth.invalid_refresh")
        return self._tokens(person, rotation.issued)

    async def sign_out(self, actor: Actor) -> dict[str, Any]:
        """R21: sign-out ends the person's sessions on the server, not only on this
        device: every token is refused from now on and every socket closes, on
        every worker (one session alone ends from the session list)."""
        return await self._end(actor, "signout")

    async def end_session(self, actor: Actor, session_id: str) -> dict[str, Any]:
        result = await self._end(actor, "ended", only=session_id)
        if not result["ended"]:
            raise NotFound("auth.session_not_found")
        return result

    async def _end(self, actor: Actor, because: str, only: str | None = None) -> dict[str, Any]:
        now = self.clock.time()
        async with self.sessions() as session, session.begin():
            ended = await devices.end(session, actor.id, now, because, only=only)
            for session_id in ended:
                audit(session, actor, None, "auth.session_ended", f"person:{actor.id}", session_id=session_id,
                      because=because, by=actor.session_id)
        if ended:
            await self._close(actor.id, ended)
        return {"ended": len(ended)}

    async def list_sessions(self, actor: Actor) -> dict[str, Any]:
        async with self.sessions() as session:
            rows = await devices.live(session, actor.id, self.clock.time())
        return {"sessions": [{"id": r.id, "user_agent": r.user_agent, "created_at": r.created_at,
                              "last_used_at": r.last_used_at, "current": r.id == actor.session_id} for r in rows]}

    async def open_session(self, person_id: int, user_agent: str) -> dict[str, Any]:
        """A session without the steps: the operator's ``chat token`` and demo mode's picker."""
        async with self.sessions() as session, session.begin():
            person = await session.get(Person, person_id)
            if person is None:
                raise NotFound("person.not_found", person_id=person_id)
            issued = devices.start(session, person.id, user_agent, self.clock.time(), self.settings.session_ttl_seconds)
            audit(session, person, None, "auth.signin", f"person:{person.id}", via=user_agent,
                  session_id=issued.session_id)
        return self._tokens(person, issued)

    # --- helpers ------------------------------------------------------------

    def _tokens(self, person: Person, issued: devices.Issued) -> dict[str, Any]:
        ttl = self.settings.token_ttl_seconds
        return {"access_token": auth.mint(self.settings.secret_key, person.id, person.role, ttl,
                                          issued.session_id, now=self.clock.time()),
                "token_type": "Bearer", "expires_in": ttl, "refresh_token": issued.refresh_token,
                "session_id": issued.session_id,
                "person": {"id": person.id, "name": person.name, "role": person.role, "language": person.language}}

    async def _close(self, person_id: int, session_ids: list[str]) -> None:
        await self.publish_person(person_id, "close", dumps({"type": "signed_out"}), sessions=session_ids)

    async def _person(self, session: Any, email: str) -> Person | None:
        return (await session.execute(select(Person).where(Person.email == email))).scalar_one_or_none()

    async def _send_code(self, person: Person, purpose: str, code: str) -> None:
        minutes = max(1, round(self.settings.code_ttl_seconds / 60))
        await self._mail(code_mail(self.settings.mail_from, person.email, person.name, person.language,
                                   purpose, code, minutes))
        if self.show_code is not None:
            self.show_code(person.email, purpose, code)

    async def _mail(self, message: Any) -> None:
        """Send in the background: the answer must not wait for the relay, or its time
        would tell a known e-mail from an unknown one.  A relay that fails is logged
        (without the e-mail's body) and the person asks for a new code."""
        task = asyncio.create_task(self._deliver(message), name="account e-mail")
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def _deliver(self, message: Any) -> None:
        try:
            await asyncio.wait_for(self.mailer.send(message), self.settings.smtp_timeout_seconds)
        except Exception as exc:  # noqa: BLE001 - any relay failure; the person asks again
            log.warning("an account e-mail could not be sent: %s", type(exc).__name__)

    async def stop(self) -> None:
        """Let the e-mails under way finish (each within the SMTP timeout)."""
        if self.sending:
            await asyncio.gather(*self.sending, return_exceptions=True)

