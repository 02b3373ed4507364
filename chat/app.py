"""The composition root: the one place that builds every part, hands each what it
uses, and starts and stops them.

Nothing else constructs a service.  Built from the settings and the engine:
the ORM sessions and the database's health, the hub (fan-out, replay through
:mod:`chat.conversations.reading`), the attachment store, the school rules,
people, the conversation use cases (membership, messages, the send path,
reading, uploads), announcements, collective sends, the notifier and the
metrics.  The web layer reaches the use cases through the attributes named
here (``app.people``, ``app.sending``, ``app.reading``…).
"""

from __future__ import annotations

import asyncio

import redis.asyncio as redis
from sqlalchemy.ext.asyncio import AsyncEngine

from chat import people as directory
from chat.accounts.children import Children
from chat.accounts.service import Accounts
from chat.accounts.throttle import Counter, DatabaseCounter, RedisCounter, Throttle
from chat import schools as school_rules
from chat.announcements import Announcements
from chat.attachments import AttachmentStore
from chat.collective import CollectiveSends
from chat.clock import SYSTEM
from chat.config import Settings
from chat.conversations.membership import Membership
from chat.conversations.messages import Messages
from chat.conversations.reading import Reading
from chat.conversations.sending import PIPELINE, Sending
from chat.conversations.uploads import UPLOAD_GC_INTERVAL_SECONDS, Uploads
from chat.hub import Hub
from chat.mail import create_mailer
from chat.metrics import Metrics
from chat.notifications import Notifier
from chat.people import Actor, People
from chat.schools import Schools
from chat.storage.db import is_sqlite, session_factory, sqlite_checkpointer
from chat.storage.health import DatabaseHealth
from chat.tasks import cancel_and_wait, every


class App:
    """Every part of one worker process, built and wired; :meth:`start` and :meth:`stop`."""

    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = session_factory(engine)
        # An outage of the database answers service.unavailable, logged once (chat.storage.health).
        self.database = DatabaseHealth(engine)
        self.store = AttachmentStore(settings.attachments_dir)
        self.schools = Schools()
        self.gc_task: asyncio.Task | None = None
        self.checkpoint_task: asyncio.Task | None = None
        self.checkpointer = None
        # What direction's archive (chat.archive) calls on the object it is given (this one).
        self.require_direction = school_rules.require_direction
        self.audit = school_rules.audit

        self.reading = Reading(engine=engine, sessions=self.sessions)
        self.hub = Hub(settings.broker_url, self.reading.replay, settings.redis_prefix,
                       refresh=self.reading.refresh_connections, database=self.database)
        self.reading.hub = self.hub  # the outage refresh joins and leaves through it
        notifier = self._notifier = Notifier(sessions=self.sessions, hub=self.hub, people=directory.require_people,
                                             database=self.database, settings=settings)
        self.people = People(settings=settings, engine=engine, sessions=self.sessions)
        self.redis: redis.Redis | None = None  # the throttle's client, when REDIS_URL is set
        self.throttle = Throttle(self._counter())
        self.accounts = Accounts(settings=settings, sessions=self.sessions, clock=SYSTEM,
                                 mailer=create_mailer(settings.smtp_url, settings.smtp_timeout_seconds),
                                 throttle=self.throttle, publish_person=self.hub.publish_person,
                                 show_code=show_demo_code if settings.demo and not settings.smtp_url else None)
        self.children = Children(sessions=self.sessions, clock=SYSTEM, throttle=self.throttle,
                                 secret_key=settings.secret_key)
        self.membership = Membership(engine=engine, sessions=self.sessions, hub=self.hub, schools=self.schools,
                                     notifier=notifier)
        self.messages = Messages(sessions=self.sessions, hub=self.hub, schools=self.schools, notifier=notifier)
        self.sending = Sending(engine=engine, hub=self.hub, schools=self.schools,
                               notifier=notifier, database=self.database,
                               pipeline=1 if is_sqlite(settings.database_url) else PIPELINE)
        self.uploads = Uploads(sessions=self.sessions, store=self.store)
        self.announcements = Announcements(
            sessions=self.sessions, engine=engine, hub=self.hub, notifier=notifier, people=directory.require_people,
            require_feature=self.schools.require_feature, school_features=self.schools.school_features,
            is_direction_of=school_rules.is_direction_of)
        self.collective = CollectiveSends(
            sessions=self.sessions, hub=self.hub, people=directory.require_people,
            require_feature=self.schools.require_feature, database=self.database,
            create_conversation=self.membership.create, send_message=self.sending.send, make_actor=Actor)
        self.metrics = Metrics(self.hub)
        self.hub.on_fanout = self.metrics.fanout.observe

    def _counter(self) -> Counter:
        """Where throttled attempts are counted: Redis when there is one (every worker
        sees the same counts), else the database."""
        if self.settings.redis_url:
            self.redis = redis.Redis.from_url(self.settings.redis_url)
            return RedisCounter(self.redis, self.settings.redis_prefix)
        return DatabaseCounter(self.sessions, SYSTEM)

    @property
    def notifier(self) -> Notifier:
        """The notifier (R15–R17) every conversation use case hands its notifications to."""
        return self._notifier

    @notifier.setter
    def notifier(self, notifier: Notifier) -> None:
        """Put ``notifier`` in place of the current one (already stopped) in every part that uses it."""
        self._notifier = notifier
        for part in (self.membership, self.messages, self.sending, self.announcements):
            part.notifier = notifier

    async def start(self) -> None:
        self.store.ensure()
        await self.hub.start()
        self.gc_task = every(UPLOAD_GC_INTERVAL_SECONDS, self.uploads.collect_stale,
                             name="upload garbage collection", reported=self.database.outage)
        self.checkpointer = sqlite_checkpointer(self.settings.database_url, self.settings.sqlite_checkpoint_seconds)
        if self.checkpointer is not None:  # SQLite: the WAL is checkpointed off the event loop
            self.checkpoint_task = asyncio.create_task(self.checkpointer.run())
        self.metrics.start()
        self.notifier.start()  # R15: held notifications that came due meanwhile go out now
        self.collective.start()  # R14: jobs survive a restart, and a dead worker's jobs are taken up

    async def stop(self) -> None:
        await self.accounts.stop()
        if self.redis is not None:
            await self.redis.aclose()
        await self.collective.stop()
        await self.notifier.stop()
        await cancel_and_wait(self.gc_task, self.checkpoint_task)
        await self.metrics.stop()
        await self.hub.stop()
        await self.database.stop()


def show_demo_code(email: str, purpose: str, code: str) -> None:
    """Demo mode without SMTP: the e-mailed code on the console, so that a person
    trying the hub can go through the steps (never outside demo mode)."""
    print(f"demo: the {purpose} code for {email} is {code}", flush=True)
