"""Building a notifier for a test, on the test's clock and channels, and putting
it in the service's place (wherever the service's parts hold it)."""

from __future__ import annotations

from collections.abc import Sequence

from chat.clock import SYSTEM, Clock
from chat.config import Settings
from chat.mail import Channel
from chat.notifications import Notifier
from chat.service import ChatService


def notifier_for(service: ChatService, settings: Settings | None = None, *, clock: Clock = SYSTEM,
                 channels: Sequence[Channel] | None = None) -> Notifier:
    """A notifier over the service's database and broker (its own lease owner)."""
    return Notifier(sessions=service.sessions, hub=service.hub, people=service.people_facts,
                    database=service.database, settings=settings or service.settings, clock=clock,
                    channels=channels)


def install_notifier(service: ChatService, notifier: Notifier) -> Notifier:
    """``notifier`` in place of the service's: for the sends and for announcements."""
    service.notifier = service.announcements.notifier = notifier
    return notifier
