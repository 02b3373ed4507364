"""Building a notifier for a test, on the test's clock and channels, and putting
it in the service's place (wherever the service's parts hold it)."""

from __future__ import annotations

from collections.abc import Sequence

from chat.clock import SYSTEM, Clock
from chat.config import Settings
from chat.mail import Channel
from chat.app import App
from chat.notifications import Notifier
from chat.people import require_people


def notifier_for(service: App, settings: Settings | None = None, *, clock: Clock = SYSTEM,
                 channels: Sequence[Channel] | None = None) -> Notifier:
    """A notifier over the service's database and broker (its own lease owner)."""
    return Notifier(sessions=service.sessions, hub=service.hub, people=require_people,
                    database=service.database, settings=settings or service.settings, clock=clock,
                    channels=channels)


def install_notifier(service: App, notifier: Notifier) -> Notifier:
    """``notifier`` in place of the service's, in every part that uses it (App.notifier)."""
    service.notifier = notifier
    return notifier
