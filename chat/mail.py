"""Delivery channels for notifications that wait for a person who is not there.

One small interface, :class:`Channel` (``deliver(person, items, digest)``), and
two implementations: e-mail (real SMTP with ``aiosmtplib``, or the log on
embedded defaults) and a webhook (a JSON POST to a push gateway — push to
phones is out of reach here, so a gateway would take it from there).

E-mails never carry message text, only who wrote and where (an e-mail is not
a secure channel; the text stays in the app).  Sending is retried with
exponential backoff (1 s, 2 s, 4 s, 8 s, 16 s) by the notifier's background
task, never on the path of a client's request.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from chat.i18n import notification_text

log = logging.getLogger("chat.mail")

# Five tries over about half a minute: a busy relay recovers; a dead one is
# retried by the next release pass (the notification stays due).
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)


@dataclass(frozen=True)
class Recipient:
    id: int
    name: str
    email: str
    language: str


class Channel(Protocol):
    async def deliver(self, person: Recipient, items: list[dict[str, Any]], digest: bool) -> None: ...


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class LogMailer:
    """Embedded default: the e-mail is written to the log instead of being sent."""

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    async def send(self, message: EmailMessage) -> None:
        self.sent.append(message)
        del self.sent[:-100]  # bounded: the last hundred, for a look in development
        log.info("e-mail (not sent: no SMTP_URL) to=%s subject=%r\n%s", message["To"], message["Subject"],
                 message.get_content())


class SmtpMailer:
    """Real SMTP: ``smtp://user:password@host:port`` (``smtps://`` for implicit TLS;
    ``?starttls=1`` to upgrade a plain connection)."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
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
            use_tls=self.use_tls, start_tls=self.start_tls, timeout=30,
        )


def create_mailer(url: str) -> Mailer:
    return SmtpMailer(url) if url else LogMailer()


async def with_retries(action, what: str) -> bool:
    """Run ``action()`` until it succeeds or the retries run out; never raises."""
    for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
        if delay:
            await asyncio.sleep(delay)
        try:
            await action()
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s failed (attempt %d): %s", what, attempt + 1, type(exc).__name__)
    return False


class EmailChannel:
    def __init__(self, mailer: Mailer, sender: str, app_url: str) -> None:
        self.mailer = mailer
        self.sender = sender
        self.app_url = app_url

    def compose(self, person: Recipient, items: list[dict[str, Any]], digest: bool) -> EmailMessage:
        """One e-mail per person and pass: a digest of everything that waited (R15)."""
        language = person.language
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = person.email
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

    async def deliver(self, person: Recipient, items: list[dict[str, Any]], digest: bool) -> None:
        await self.mailer.send(self.compose(person, items, digest))


class WebhookChannel:
    """POSTs ``{"person": …, "digest": …, "notifications": […]}`` to a push gateway."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def deliver(self, person: Recipient, items: list[dict[str, Any]], digest: bool) -> None:
        import httpx

        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(self.url, json={
                "person": {"id": person.id, "language": person.language},
                "digest": digest, "notifications": items})
            response.raise_for_status()
