"""Delivery channels for notifications that wait for a person who is not there.

One small interface, :class:`Channel` (``deliver(person, items, digest, key)``,
with a ``name`` and a ``timeout``), and two implementations: e-mail (real SMTP
with ``aiosmtplib``, or the log on embedded defaults) and a webhook (a JSON
POST to a push gateway — push to phones is out of reach here, so a gateway
would take it from there).

E-mails never carry message text, only who wrote and where (an e-mail is not
a secure channel; the text stays in the app).  A channel makes one attempt and
raises if it fails: the notifier (chat.notifications) cuts each attempt off
after the channel's timeout and retries a failed one later from the database,
never inline and never on the path of a client's request.  ``key`` is the same
for every attempt at one digest on one channel (the e-mail's ``Message-ID``,
the push's ``Idempotency-Key``), so that a receiver can drop the copy a crash
between its answer and our record of it would make.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from chat.i18n import notification_text

log = logging.getLogger("chat.mail")


@dataclass(frozen=True)
class Recipient:
    id: int
    name: str
    email: str
    language: str


class Channel(Protocol):
    name: str  # the delivery rows' channel: "email", "push" ("frame" is the notifier's own)
    timeout: float  # seconds one attempt may take, everything included

    async def deliver(self, person: Recipient, items: list[dict[str, Any]], digest: bool, key: str) -> None: ...


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class LogMailer:
    """Embedded default: the e-mail is written to the log instead of being sent."""

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    async def send(self, message: EmailMessage) -> None:
        self.sent.append(message)
        del self.sent[:-100]  # bounded: the last hundred, for a look in development
        if message["Sensitivity"] == "Private":  # a code (chat.accounts.mails): never in the log
            log.info("e-mail (not sent: no SMTP_URL) to=%s subject=%r (private: body not logged)",
                     message["To"], message["Subject"])
            return
        log.info("e-mail (not sent: no SMTP_URL) to=%s subject=%r\n%s", message["To"], message["Subject"],
                 message.get_content())


class SmtpMailer:
    """Real SMTP: ``smtp://user:password@host:port`` (``smtps://`` for implicit TLS;
    ``?starttls=1`` to upgrade a plain connection)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parsed = urlparse(url)
        self.timeout = timeout
        self.hostname = parsed.hostname or "localhost"
        self.port = parsed.port or (465 if parsed.scheme == "smtps" else 25)
        self.username = unquote(parsed.username) if parsed.username else None
        self.password = unquote(parsed.password) if parsed.password else None
        self.use_tls = parsed.scheme == "smtps"
        self.start_tls = "starttls=1" in (parsed.query or "")

    async def send(self, message: EmailMessage) -> None:
        import aiosmtplib

        await aiosmtplib.send(
            message, hostname=self.hostname, port=self.port, username=self.username, password=self.password,
            use_tls=self.use_tls, start_tls=self.start_tls, timeout=self.timeout,
        )


def create_mailer(url: str, timeout: float = 30.0) -> Mailer:
    return SmtpMailer(url, timeout) if url else LogMailer()


class EmailChannel:
    name = "email"

    def __init__(self, mailer: Mailer, sender: str, app_url: str, timeout: float = 30.0) -> None:
        self.mailer = mailer
        self.sender = sender
        self.app_url = app_url
        self.timeout = timeout
        self.domain = (parseaddr(sender)[1].rpartition("@")[2] or "localhost").strip("<>")

    def compose(self, person: Recipient, items: list[dict[str, Any]], digest: bool, key: str = "") -> EmailMessage:
        """One e-mail per person and digest: everything that waited (R15), or what
        stayed unread.  Its ``Message-ID`` comes from ``key``: a copy sent again
        after a crash has the same one."""
        language = person.language
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = person.email
        if key:
            message["Message-ID"] = f"<notification-{key}@{self.domain}>"
        key = "mail.digest_subject" if digest else "mail.subject"
        message["Subject"] = notification_text(key, language, {"count": len(items)})
        lines = [notification_text("mail.greeting", language, {"name": person.name}), ""]
        if digest:
            lines += [notification_text("mail.digest_intro", language, {"count": len(items)}), ""]
        lines += [f"• {item['text'][language]}" for item in items]
        lines += ["", notification_text("mail.open_app", language, {"url": self.app_url}), "",
                  notification_text("mail.footer", language, {})]
        message.set_content("\n".join(lines))
        message["Content-Language"] = language
        return message

    async def deliver(self, person: Recipient, items: list[dict[str, Any]], digest: bool, key: str) -> None:
        await self.mailer.send(self.compose(person, items, digest, key))


class WebhookChannel:
    """POSTs ``{"key": …, "person": …, "digest": …, "notifications": […]}`` to a
    push gateway, with the key also as the ``Idempotency-Key`` header; any 2xx
    answer is success."""

    name = "push"

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout

    async def deliver(self, person: Recipient, items: list[dict[str, Any]], digest: bool, key: str) -> None:
        import httpx

        async with httpx.AsyncClient(timeout=self.timeout) as client:
            response = await client.post(self.url, headers={"Idempotency-Key": key}, json={
                "key": key, "person": {"id": person.id, "language": person.language},
                "digest": digest, "notifications": items})
            response.raise_for_status()
