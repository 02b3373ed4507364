"""The hub's operations: what a person can do, checked, committed, then fanned out.

Every write follows one order (non-negotiable 3): check with the pure rules in
:mod:`chat.policies`, write in one transaction that also appends the
conversation event with its gap-free ``seq``, commit, and only then publish to
the hub and answer the client.  A refused action raises a :class:`ChatError`
before anything is written.

Web adapters (``chat.web``) call these methods and move data; no rule lives
there.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import datetime, timezone
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import orjson
from sqlalchemy import (BigInteger, String, and_, bindparam, case, cast, func, insert, literal, null, select,
                        union_all, update)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from chat.clock import utcnow
from chat import auth
from chat.announcements import Announcements
from chat.collective import CollectiveSends
from chat.config import Settings
from chat.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthenticated
from chat.frames import dumps, event_frame, timestamp
from chat.hub import CLOSE_UNAUTHENTICATED, Hub
from chat.i18n import system_text
from chat.notifications import Notifier, Pending
from chat.attachments import AttachmentStore, StoredFile
from chat.policies import attachments as attachment_rules
from chat.policies import features, membership, messages
from chat.policies.facts import ChildFacts, PersonFacts, Role
from chat.storage import direct
from chat.storage.db import is_sqlite, session_factory, sqlite_checkpointer
from chat.storage.health import DatabaseHealth
from chat.tasks import cancel_and_wait
from chat.storage.models import (
    AuditEntry,
    Conversation,
    Event,
    Group,
    Guardianship,
    Message,
    MessageVersion,
    Participant,
    Person,
    Reaction,
    School,
    StaffSchool,
    Student,
    TeacherGroup,
    Upload,
)

log = logging.getLogger("chat.service")

# A client that was away for more than this many events reloads the
# conversation over HTTP instead of replaying it frame by frame.
RESUME_MAX_EVENTS = 1000
# History pages: 50 by default, 200 at most (about one screen to a few screens).
HISTORY_DEFAULT = 50
HISTORY_MAX = 200
# An upload not attached to a message within a day is garbage-collected: the
# widget attaches within seconds; a day covers a composer left open overnight.
UPLOAD_TTL_SECONDS = 24 * 3600
UPLOAD_GC_INTERVAL_SECONDS = 3600
# A school's feature switches are re-read at most this often (R18); a change
# made by reloading the directory applies within half a minute.
FEATURES_CACHE_SECONDS = 30.0

# A person's facts for the rules (role, schools, groups, children) in one round trip:
# one row per fact, tagged with where it comes from.  Built once (no per-call
# statement construction); the id list is an expanding parameter.
_SCHOOL, _GROUP, _CHILD, _ROLE = 0, 1, 2, 3


def _facts_statement():
    ids = bindparam("ids", expanding=True)

    def tagged(tag: int, person, value, role=None):
        return select(literal(tag).label("source"), person.label("person_id"), value.label("value"),
                      (cast(null(), String) if role is None else role).label("role"))

    return union_all(
        tagged(_ROLE, Person.id, cast(null(), BigInteger), Person.role).where(Person.id.in_(ids)),
        tagged(_SCHOOL, StaffSchool.person_id, StaffSchool.school_id).where(StaffSchool.person_id.in_(ids)),
        tagged(_GROUP, TeacherGroup.person_id, TeacherGroup.group_id).where(TeacherGroup.person_id.in_(ids)),
        tagged(_CHILD, Guardianship.person_id, Guardianship.student_id).where(Guardianship.person_id.in_(ids)))


_FACTS = _facts_statement()

# A conversation list's parts (ids: the conversations; built once).
_IDS = bindparam("ids", expanding=True)
_SUMMARY_MEMBERS = select(Participant.conversation_id, Person.id, Person.name, Person.role).join(
    Person, Person.id == Participant.person_id).where(
    Participant.conversation_id.in_(_IDS), Participant.active == True).order_by(Person.name)  # noqa: E712
_SUMMARY_MINE = select(Participant.conversation_id, Participant.visible_from_seq, Participant.last_read_seq).where(
    Participant.conversation_id.in_(_IDS), Participant.person_id == bindparam("person"))
_SUMMARY_SCHOOLS = select(School.id, School.notice_fr, School.notice_en).where(School.id.in_(_IDS))
_SUMMARY_CHILDREN = select(Student.id, Student.first_name, Student.last_name).where(Student.id.in_(_IDS))

# A school's R18 switches (read by sends on the driver's connection too: chat.storage.direct).
_FEATURES = select(School.features).where(School.id == bindparam("school"))

# What every new connection reads (built once; run on a Core connection).
_SIGNED_IN = select(Person.id, Person.role, Person.name, Person.language, Person.tokens_valid_after).where(
    Person.id == bindparam("id"))
_ACTIVE = select(Participant.conversation_id).where(
    Participant.person_id == bindparam("person"), Participant.active == True)  # noqa: E712
# What creating a conversation reads and writes (chat.storage.direct; _INSERT_EVENT: every event).
_STUDENT_FACTS = select(Student.id, Student.school_id, Student.group_id).where(Student.id == bindparam("id"))
_CHILD_GUARDIANS = select(Guardianship.person_id).where(Guardianship.student_id == bindparam("id"))
_NAMES = select(Person.id, Person.name, Person.role).where(Person.id.in_(_IDS))
_INSERT_CONVERSATION = insert(Conversation.__table__).returning(Conversation.__table__.c.id)
_INSERT_PARTICIPANTS = insert(Participant.__table__)
_INSERT_EVENT = insert(Event.__table__)


@dataclass
class _NewConversation:
    """What a list entry (``_summaries``) reads of a conversation just created."""

    school_id: int
    child_id: int | None
    name: str | None
    creator_id: int
    last_seq: int
    id: int = 0
    locked_at: None = None
    lock_reason: None = None


# A person's active conversations, most recent activity first (the list's order).
_MY_CONVERSATIONS = select(
    Conversation.id, Conversation.name, Conversation.school_id, Conversation.child_id, Conversation.creator_id,
    Conversation.last_seq, Conversation.locked_at, Conversation.lock_reason,
).join(Participant, Participant.conversation_id == Conversation.id).where(
    Participant.person_id == bindparam("person"), Participant.active == True,  # noqa: E712
).order_by(func.coalesce(Conversation.last_message_at, Conversation.created_at).desc(), Conversation.id.desc())
# Unread per conversation (``ids``): messages by others, not retracted (R8),
# after max(read marker, first visible seq - 1) (R4: a member added without
# history), each conversation's found on the (conversation, seq) index from its
# participant row.
_UNREAD = select(Message.conversation_id, func.count()).select_from(Participant).join(
    Message, and_(Message.conversation_id == Participant.conversation_id,
                  Message.seq > case((Participant.last_read_seq >= Participant.visible_from_seq - 1,
                                      Participant.last_read_seq), else_=Participant.visible_from_seq - 1)),
).where(
    Participant.person_id == bindparam("person"), Participant.conversation_id.in_(_IDS),
    Message.author_id != bindparam("person"), Message.retracted_at.is_(None),
).group_by(Message.conversation_id)
# What a resume needs of each conversation the client names (only where the person is an active member).
_RESUMABLE = select(Participant.conversation_id, Participant.visible_from_seq, Conversation.last_seq).join(
    Conversation, Conversation.id == Participant.conversation_id).where(
    Participant.person_id == bindparam("person"), Participant.conversation_id.in_(_IDS),
    Participant.active == True)  # noqa: E712
_POSITIONS = select(Conversation.id, Conversation.last_seq).join(
    Participant, Participant.conversation_id == Conversation.id).where(
    Participant.person_id == bindparam("person"), Participant.active == True)  # noqa: E712

# The newest message of each conversation (``ids``), each looked up at the end of
# the (conversation, seq) index: a MAX(seq) … GROUP BY read every message of every
# conversation, at each connection's start.
_LAST_MESSAGES = select(
    select(Message.id).where(Message.conversation_id == Conversation.id)
    .order_by(Message.seq.desc()).limit(1).correlate(Conversation).scalar_subquery()
).where(Conversation.id.in_(_IDS))
_SUMMARY_LAST = select(Message.conversation_id, Message.id, Message.seq, Message.author_id, Message.text,
                       Message.retracted_at, Message.created_at).where(Message.id.in_(_LAST_MESSAGES))


def sent_reply(conversation_id: int, message_id: int, seq: int, client_id: str, created_at: datetime,
               duplicate: bool) -> dict[str, Any]:
    """The answer to ``message.send`` (docs/protocol.md): a fresh send's, or a retry's."""
    return {"conversation_id": conversation_id, "message_id": message_id, "seq": seq, "client_id": client_id,
            "created_at": timestamp(created_at), "duplicate": duplicate}


def retry_reply(conversation_id: int, client_id: str, message_id: int, message_conversation_id: int, seq: int,
                created_at: datetime) -> dict[str, Any]:
    """A send whose (author, client_id) is committed already: the same answer
    again, or ``message.client_id_reused`` when it named another conversation."""
    if message_conversation_id != conversation_id:
        raise Conflict("message.client_id_reused")
    return sent_reply(conversation_id, message_id, seq, client_id, created_at, duplicate=True)


@dataclass(frozen=True)
class Actor:
    """The signed-in person a request acts for."""

    id: int
    role: str
    name: str
    language: str
    token_id: str = ""
    issued_at: float = 0.0
    expires_at: float = float("inf")


def upload_view(upload: Upload) -> dict[str, Any]:
    """What members see of an attachment: name, size, type, image dimensions."""
    view: dict[str, Any] = {"id": upload.id, "name": upload.filename, "size": upload.size,
                            "type": upload.content_type, "url": f"/api/attachments/{upload.id}"}
    if upload.width:
        view["width"], view["height"] = upload.width, upload.height
    return view


def _member_view(person: Person) -> dict[str, Any]:
    return {"id": person.id, "name": person.name, "role": person.role}


class ChatService:
    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = session_factory(engine)
        # An outage of the database answers service.unavailable, logged once (chat.storage.health).
        self.database = DatabaseHealth(engine)
        self.hub = Hub(settings.broker_url, self.replay, settings.redis_prefix, refresh=self.refresh_connections,
                       database=self.database)
        self.store = AttachmentStore(settings.attachments_dir)
        self._gc_task: asyncio.Task | None = None
        self._checkpoint_task: asyncio.Task | None = None
        self.checkpointer = None
        self._features: dict[int, tuple[float, frozenset[str]]] = {}
        self.notifier = Notifier(sessions=self.sessions, hub=self.hub, people=self.people_facts,
                                 database=self.database, settings=settings)
        self.announcements = Announcements(
            sessions=self.sessions, engine=engine, hub=self.hub, notifier=self.notifier, people=self.people_facts,
            require_feature=self.require_feature, school_features=self.school_features,
            is_direction_of=self.is_direction_of)
        self.collective = CollectiveSends(
            sessions=self.sessions, hub=self.hub, people=self.people_facts, require_feature=self.require_feature,
            database=self.database, create_conversation=self.create_conversation, send_message=self.send_message,
            make_actor=Actor)
        from chat.sending import PIPELINE, SendBatcher

        self.sender = SendBatcher(self, pipeline=1 if is_sqlite(settings.database_url) else PIPELINE)
        from chat.metrics import Metrics

        self.metrics = Metrics(self.hub)
        self.hub.on_fanout = self.metrics.fanout.observe

    async def start(self) -> None:
        self.store.ensure()
        await self.hub.start()
        self._gc_task = asyncio.create_task(self._collect_uploads_forever())
        self.checkpointer = sqlite_checkpointer(self.settings.database_url, self.settings.sqlite_checkpoint_seconds)
        if self.checkpointer is not None:  # SQLite: the WAL is checkpointed off the event loop
            self._checkpoint_task = asyncio.create_task(self.checkpointer.run())
        self.metrics.start()
        self.notifier.start()  # R15: held notifications that came due meanwhile go out now
        self.collective.start()  # R14: jobs survive a restart, and a dead worker's jobs are taken up

    async def stop(self) -> None:
        await self.collective.stop()
        await self.notifier.stop()
        await cancel_and_wait(self._gc_task, self._checkpoint_task)
        await self.metrics.stop()
        await self.hub.stop()
        await self.database.stop()

    async def _collect_uploads_forever(self) -> None:
        while True:
            try:
                removed = await self.collect_uploads(time.time())
                if removed:
                    log.info("garbage-collected %d unattached uploads", removed)
            except Exception as exc:
                if not self.database.outage(exc):
                    log.exception("upload garbage collection failed")
            await asyncio.sleep(UPLOAD_GC_INTERVAL_SECONDS)

    # -- authentication (R21) ------------------------------------------------------
    async def authenticate(self, token: str | None) -> Actor:
        """The person behind a bearer token, if it is valid, unexpired and not signed out."""
        claims = auth.decode(self.settings.secret_key, token or "")
        async with direct.reading(self.engine) as connection:  # every new connection pays this
            rows = await connection.execute(_SIGNED_IN, {"id": claims.person_id})
        person = rows[0] if rows else None
        if person is None:
            raise Unauthenticated("auth.unknown_person")
        if claims.issued_at < person.tokens_valid_after:
            raise Unauthenticated("auth.revoked_token")
        return Actor(person.id, person.role, person.name, person.language, claims.token_id,
                     claims.issued_at, claims.expires_at)

    def mint_token(self, person: Person) -> str:
        return auth.mint(self.settings.secret_key, person.id, person.role, self.settings.token_ttl_seconds)

    async def sign_out(self, actor: Actor) -> None:
        """R21: every token issued to this person until now stops working, on every
        device, and their open connections are closed on every worker."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(Person).where(Person.id == actor.id).values(tokens_valid_after=time.time())
            )
        await self.hub.publish_person(actor.id, "close", dumps({"type": "signed_out"}))

    # -- directory facts for the policies -----------------------------------------
    async def _facts(self, session, person_ids: Iterable[int]) -> dict[int, PersonFacts]:
        ids = set(person_ids)
        if not ids:
            return {}
        roles: dict[int, str] = {}
        related: dict[int, tuple[set[int], set[int], set[int]]] = {}
        for source, pid, value, role in (await session.execute(_FACTS, {"ids": list(ids)})).all():
            if source == _ROLE:
                roles[pid] = role
            else:
                related.setdefault(pid, (set(), set(), set()))[source].add(value)
        empty = ((), (), ())
        return {
            pid: PersonFacts(
                id=pid,
                role=Role(role),
                school_ids=frozenset(related.get(pid, empty)[_SCHOOL]),
                group_ids=frozenset(related.get(pid, empty)[_GROUP]),
                child_ids=frozenset(related.get(pid, empty)[_CHILD]),
            )
            for pid, role in roles.items()
        }

    async def _child(self, session, child_id: int | None) -> ChildFacts | None:
        """(``session``: an ORM session or a direct connection.)"""
        if child_id is None:
            return None
        students = (await session.execute(_STUDENT_FACTS, {"id": child_id})).all()
        if not students:
            raise NotFound("child.not_found", child_id=child_id)
        student = students[0]
        guardians = [row[0] for row in (await session.execute(_CHILD_GUARDIANS, {"id": child_id})).all()]
        return ChildFacts(student.id, student.school_id, student.group_id, frozenset(guardians))

    async def people_facts(self, session, person_ids: Sequence[int]) -> list[PersonFacts]:
        facts = await self._facts(session, person_ids)
        for pid in person_ids:
            if pid not in facts:
                raise NotFound("person.not_found", person_id=pid)
        return [facts[pid] for pid in dict.fromkeys(person_ids)]

    # -- school rules: features (R18), locks (R10), direction, audit ---------------------------
    async def school_features(self, session, school_id: int) -> frozenset[str]:
        now = time.monotonic()
        cached = self._features.get(school_id)
        if cached is not None and now - cached[0] < FEATURES_CACHE_SECONDS:
            return cached[1]
        raw = (await session.execute(_FEATURES, {"school": school_id})).scalar_one_or_none()
        enabled = features.enabled_set(orjson.loads(raw) if raw else None)
        self._features[school_id] = (now, enabled)
        return enabled

    async def require_feature(self, session, school_id: int, feature: str) -> None:
        features.require(await self.school_features(session, school_id), feature)

    async def _writable(self, session, conversation_id: int, feature: str = "messaging") -> Conversation:
        """The conversation, if it takes writes: not locked (R10), messaging on (R18)."""
        conversation = await session.get(Conversation, conversation_id)
        if conversation is None:
            raise NotFound("conversation.not_found", conversation_id=conversation_id)
        await self.require_feature(session, conversation.school_id, "messaging")
        if feature != "messaging":
            await self.require_feature(session, conversation.school_id, feature)
        if conversation.locked_at is not None:
            raise Conflict("conversation.locked")
        return conversation

    async def is_direction_of(self, session, actor: Actor, school_id: int) -> bool:
        if actor.role != Role.DIRECTION.value:
            return False
        row = await session.get(StaffSchool, (actor.id, school_id))
        return row is not None

    async def require_direction(self, session, actor: Actor, school_id: int) -> None:
        """R9, R10: only the direction of that school."""
        if not await self.is_direction_of(session, actor, school_id):
            raise Forbidden("direction.only")

    @staticmethod
    def audit(session, actor: Actor | None, school_id: int | None, action: str, target: str = "",
              **details: Any) -> None:
        """Append to the audit log, in the caller's transaction (append-only table)."""
        session.add(AuditEntry(actor_id=actor.id if actor else None, school_id=school_id, action=action,
                               target=target, details=dumps(details)))

    async def set_lock(self, actor: Actor, conversation_id: int, locked: bool, reason: str | None = None) -> dict[str, Any]:
        """R10: direction of the conversation's school locks or unlocks it; members see it live."""
        if reason is not None and len(reason) > 500:
            raise BadRequest("request.invalid", detail="reason: 500 characters at most")
        async with self.sessions() as session, session.begin():
            conversation = await session.get(Conversation, conversation_id)
            if conversation is None:
                raise NotFound("conversation.not_found", conversation_id=conversation_id)
            await self.require_direction(session, actor, conversation.school_id)
            if locked:
                conversation.locked_at, conversation.locked_by, conversation.lock_reason = utcnow(), actor.id, reason
            else:
                if conversation.locked_at is None:
                    raise Conflict("conversation.not_locked")
                conversation.locked_at, conversation.locked_by, conversation.lock_reason = None, None, None
            kind = "conversation.locked" if locked else "conversation.unlocked"
            seq, frame = await self._append(
                session, conversation_id, kind, actor.id, reason=reason,
                system=system_text("system.locked" if locked else "system.unlocked", {"actor": actor.name}))
            self.audit(session, actor, conversation.school_id, kind, f"conversation:{conversation_id}", reason=reason)
            members = await self._member_ids(session, conversation_id)
        await self.hub.publish_event(conversation_id, seq, members, frame)
        return {"conversation_id": conversation_id, "seq": seq, "locked": locked}

    # -- membership helpers ----------------------------------------------------------
    async def _participant(self, session, conversation_id: int, person_id: int) -> Participant:
        """The caller's active membership, or conversation.not_found (never reveal more)."""
        row = await session.get(Participant, (conversation_id, person_id))
        if row is None or not row.active:
            raise NotFound("conversation.not_found", conversation_id=conversation_id)
        return row

    async def _member_ids(self, session, conversation_id: int) -> list[int]:
        return list((await session.execute(
            select(Participant.person_id).where(
                Participant.conversation_id == conversation_id, Participant.active == True  # noqa: E712
            )
        )).scalars().all())

    async def _next_seq(self, session, conversation_id: int, message: bool = False) -> int:
        """Allocate the next gap-free seq; the row lock orders concurrent writers."""
        values: dict[str, Any] = {"last_seq": Conversation.last_seq + 1}
        if message:
            values["last_message_at"] = utcnow()
        result = await session.execute(
            update(Conversation).where(Conversation.id == conversation_id).values(**values).returning(Conversation.last_seq)
        )
        seq = result.scalar_one_or_none()
        if seq is None:
            raise NotFound("conversation.not_found", conversation_id=conversation_id)
        return seq

    async def _append(
        self, session, conversation_id: int, kind: str, actor_id: int | None, message_id: int | None = None,
        seq: int | None = None, **data: Any,
    ) -> tuple[int, str]:
        """Log one event (``session``: an ORM session or a direct connection)."""
        if seq is None:
            seq = await self._next_seq(session, conversation_id)
        now = utcnow()
        frame = event_frame(kind, conversation_id, seq, actor_id, now, **data)
        await session.execute(_INSERT_EVENT, {
            "conversation_id": conversation_id, "seq": seq, "kind": kind, "actor_id": actor_id,
            "message_id": message_id, "frame": frame, "created_at": now})
        return seq, frame

    async def _names(self, session, person_ids: Iterable[int]) -> dict[int, Any]:
        """Id -> (id, name, role) of these people (``session``: ORM or direct)."""
        ids = set(person_ids)
        if not ids:
            return {}
        return {p.id: p for p in (await session.execute(_NAMES, {"ids": sorted(ids)})).all()}

    # -- conversations (R1–R5) -----------------------------------------------------------
    async def create_conversation(
        self, actor: Actor, participant_ids: Sequence[int], child_id: int | None = None, name: str | None = None
    ) -> dict[str, Any]:
        """R1, R2, R3: a parent creates for one child; staff for a child or among staff.

        On the driver's connection (chat.storage.direct): a collective send
        (chat.collective) creates hundreds of these in a row, and through the ORM
        each cost more than its handful of statements."""
        name = membership.check_name(name)
        async with direct.transaction(self.engine) as session:
            facts = await self.people_facts(session, [actor.id, *participant_ids])
            actor_facts, invitees = facts[0], [f for f in facts[1:] if f.id != actor.id]
            child = await self._child(session, child_id)
            membership.check_creation(actor_facts, child, invitees)
            school_id = child.school_id if child else min(actor_facts.school_ids)
            await self.require_feature(session, school_id, "messaging")
            now = utcnow()
            seq = 1  # the conversation.created event
            conversation = _NewConversation(school_id, child_id, name, actor.id, seq)
            conversation.id = (await session.execute(_INSERT_CONVERSATION, {
                "school_id": school_id, "child_id": child_id, "name": name, "creator_id": actor.id,
                "created_at": now, "last_seq": seq, "last_message_at": None, "locked_at": None,
                "locked_by": None, "lock_reason": None})).one()[0]
            member_ids = [actor.id, *[f.id for f in invitees]]
            await session.execute(_INSERT_PARTICIPANTS, [
                {"conversation_id": conversation.id, "person_id": pid, "active": True, "visible_from_seq": 1,
                 "last_read_seq": 0, "joined_at": now, "left_at": None} for pid in member_ids])
            people = await self._names(session, member_ids)
            await self._append(
                session, conversation.id, "conversation.created", actor.id, seq=seq,
                name=name, child_id=child_id, members=[_member_view(people[p]) for p in member_ids],
                system=system_text("system.created", {"actor": actor.name}))
            summary = await self._summary(session, conversation, actor.id)
        joined = dumps({"type": "conversation.joined", "conversation": summary | {"unread": 0}})
        for pid in member_ids:
            await self.hub.publish_person(pid, "join", joined, conversation.id, seq)
        return summary

    async def rename_conversation(self, actor: Actor, conversation_id: int, name: str | None) -> dict[str, Any]:
        """R3: any member may rename."""
        name = membership.check_name(name)
        async with self.sessions() as session, session.begin():
            await self._participant(session, conversation_id, actor.id)
            await self._writable(session, conversation_id)
            await session.execute(update(Conversation).where(Conversation.id == conversation_id).values(name=name))
            seq, frame = await self._append(
                session, conversation_id, "conversation.renamed", actor.id, name=name,
                system=system_text("system.renamed", {"actor": actor.name, "name": name or ""}),
            )
            members = await self._member_ids(session, conversation_id)
        await self.hub.publish_event(conversation_id, seq, members, frame)
        return {"conversation_id": conversation_id, "seq": seq, "name": name}

    async def add_participants(
        self, actor: Actor, conversation_id: int, person_ids: Sequence[int], share_history: bool
    ) -> dict[str, Any]:
        """R4: add people, choosing whether they see the earlier history; a system
        message records it."""
        async with self.sessions() as session, session.begin():
            await self._participant(session, conversation_id, actor.id)
            conversation = await self._writable(session, conversation_id)
            member_ids = await self._member_ids(session, conversation_id)
            facts = await self.people_facts(session, [actor.id, *member_ids, *person_ids])
            by_id = {f.id: f for f in facts}
            newcomers = [by_id[p] for p in dict.fromkeys(person_ids)]
            child = await self._child(session, conversation.child_id)
            membership.check_addition(by_id[actor.id], child, [by_id[m] for m in member_ids], newcomers)
            seq = await self._next_seq(session, conversation_id)
            visible_from = 1 if share_history else seq
            for person in newcomers:
                row = await session.get(Participant, (conversation_id, person.id))
                if row is None:
                    session.add(Participant(conversation_id=conversation_id, person_id=person.id,
                                            visible_from_seq=visible_from, last_read_seq=seq))
                else:  # a former member coming back
                    row.active, row.left_at, row.visible_from_seq, row.last_read_seq = True, None, visible_from, seq
            people = await self._names(session, [actor.id, *[p.id for p in newcomers]])
            names = ", ".join(people[p.id].name for p in newcomers)
            code = "system.added_with_history" if share_history else "system.added_without_history"
            _, frame = await self._append(
                session, conversation_id, "member.added", actor.id, seq=seq,
                members=[_member_view(people[p.id]) for p in newcomers], history_shared=share_history,
                system=system_text(code, {"actor": actor.name, "names": names}),
            )
            await session.flush()
            await self.notifier.add(session, [
                self._pending(conversation, p.id, "added", "notify.added", actor, {}) for p in newcomers])
            everyone = [*member_ids, *[p.id for p in newcomers]]
            summaries = {p.id: await self._summary(session, conversation, p.id) for p in newcomers}
        await self.hub.publish_event(conversation_id, seq, everyone, frame)
        for person in newcomers:
            joined = dumps({"type": "conversation.joined", "conversation": summaries[person.id]})
            await self.hub.publish_person(person.id, "join", joined, conversation_id, seq)
        return {"conversation_id": conversation_id, "seq": seq, "added": [p.id for p in newcomers]}

    async def remove_participant(self, actor: Actor, conversation_id: int, person_id: int) -> dict[str, Any]:
        """R5: the creator removes someone; R1 keeps a staff member."""
        async with self.sessions() as session, session.begin():
            await self._participant(session, conversation_id, actor.id)
            conversation = await session.get(Conversation, conversation_id)
            member_ids = await self._member_ids(session, conversation_id)
            facts = await self._facts(session, member_ids)
            membership.check_removal(actor.id, conversation.creator_id, person_id, [facts[m] for m in member_ids])
            seq, frame = await self._depart(session, conversation_id, actor, person_id, "member.removed")
        return await self._announce_departure(conversation_id, person_id, member_ids, seq, frame, "member.removed")

    async def leave_conversation(self, actor: Actor, conversation_id: int) -> dict[str, Any]:
        """R5: anyone leaves, except the last school-staff member (R1)."""
        async with self.sessions() as session, session.begin():
            await self._participant(session, conversation_id, actor.id)
            member_ids = await self._member_ids(session, conversation_id)
            facts = await self._facts(session, member_ids)
            membership.check_departure(actor.id, [facts[m] for m in member_ids])
            seq, frame = await self._depart(session, conversation_id, actor, actor.id, "member.left")
        return await self._announce_departure(conversation_id, actor.id, member_ids, seq, frame, "member.left")

    async def _depart(self, session, conversation_id: int, actor: Actor, person_id: int, kind: str) -> tuple[int, str]:
        # The conversation row first, then the participant: the lock order of a
        # send (chat/sending.py), so a departure and a batch of sends cannot deadlock.
        seq = await self._next_seq(session, conversation_id)
        row = await session.get(Participant, (conversation_id, person_id))
        row.active, row.left_at = False, utcnow()
        people = await self._names(session, [actor.id, person_id])
        if kind == "member.left":
            system = system_text("system.left", {"actor": actor.name})
        else:
            system = system_text("system.removed", {"actor": actor.name, "names": people[person_id].name})
        return await self._append(session, conversation_id, kind, actor.id, seq=seq, person=person_id, system=system)

    async def _announce_departure(
        self, conversation_id: int, person_id: int, member_ids: list[int], seq: int, frame: str, kind: str
    ) -> dict[str, Any]:
        # The departing person gets this last event too, then nothing more.
        await self.hub.publish_event(conversation_id, seq, member_ids, frame)
        await self.hub.publish_person(
            person_id, "leave",
            dumps({"type": "conversation.left", "conversation_id": conversation_id, "seq": seq, "reason": kind}),
            conversation_id, seq,
        )
        return {"conversation_id": conversation_id, "seq": seq}

    # -- messages (R6, R8, R9) ----------------------------------------------------------------
    async def send_message(
        self, actor: Actor, conversation_id: int, client_id: str, text: str, attachments: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Commit, then fan out, then acknowledge.  Idempotent on (author, client_id):
        a retry after a lost ack returns the same message and sends nothing again.
        R7: up to ten of the sender's own uploads may be attached (text may then be empty)."""
        messages.check_client_id(client_id)
        attachment_ids = list(dict.fromkeys(attachments))
        attachment_rules.check_count(len(attachment_ids))
        if text or not attachment_ids:
            messages.check_text(text)
        if not attachment_ids:
            return await self.sender.send(actor, conversation_id, client_id, text)  # group commit
        return await self._send_one(actor, conversation_id, client_id, text, attachment_ids)

    async def _send_one(
        self, actor: Actor, conversation_id: int, client_id: str, text: str, attachment_ids: Sequence[str]
    ) -> dict[str, Any]:
        """One send in its own transaction (with attachments, or retried alone
        after its batch was rolled back)."""
        try:
            async with self.sessions() as session, session.begin():
                existing = await self._existing(session, actor.id, client_id, conversation_id)
                if existing is not None:
                    return existing
                participant = await self._participant(session, conversation_id, actor.id)
                conversation = await self._writable(
                    session, conversation_id, "attachments" if attachment_ids else "messaging")
                uploads = await self._own_uploads(session, actor, attachment_ids)
                seq = await self._next_seq(session, conversation_id, message=True)
                message = Message(conversation_id=conversation_id, seq=seq, author_id=actor.id,
                                  client_id=client_id, text=text)
                session.add(message)
                await session.flush()
                for upload in uploads:
                    upload.message_id, upload.conversation_id = message.id, conversation_id
                _, frame = await self._append(
                    session, conversation_id, "message.new", actor.id, message_id=message.id, seq=seq,
                    message={"id": message.id, "client_id": client_id, "author": actor.id, "text": text,
                             "created_at": timestamp(message.created_at), "version": 1,
                             "attachments": [upload_view(u) for u in uploads]},
                )
                participant.last_read_seq = seq  # one's own message is read
                members = await self._member_ids(session, conversation_id)
                await self.notifier.add(session, [
                    self._pending(conversation, pid, "message", "notify.message", actor,
                                  {"message_id": message.id}) for pid in members if pid != actor.id])
        except IntegrityError:
            # Two workers raced on the same retry: the other one won; answer with its message.
            async with self.sessions() as session:
                existing = await self._existing(session, actor.id, client_id, conversation_id)
            if existing is None:
                raise
            return existing
        await self.hub.publish_event(conversation_id, seq, members, frame)
        return sent_reply(conversation_id, message.id, seq, client_id, message.created_at, duplicate=False)

    async def _own_uploads(self, session, actor: Actor, upload_ids: Sequence[str]) -> list[Upload]:
        """R7: only the sender's own uploads, each attached once."""
        if not upload_ids:
            return []
        upload_ids = [attachment_rules.require_upload_id(upload_id) for upload_id in upload_ids]
        rows = {u.id: u for u in (await session.execute(
            select(Upload).where(Upload.id.in_(upload_ids)).with_for_update())).scalars().all()}
        uploads = []
        for upload_id in upload_ids:
            upload = rows.get(upload_id)
            if upload is None or upload.owner_id != actor.id:
                raise NotFound("attachment.not_found", upload_id=upload_id)
            if upload.message_id is not None:
                raise Conflict("attachment.already_used", upload_id=upload_id)
            uploads.append(upload)
        return uploads

    # -- attachments (R7) -----------------------------------------------------------------------
    async def upload(self, actor: Actor, stored: StoredFile) -> dict[str, Any]:
        """Record a checked, stored file as the actor's upload, ready to attach."""
        upload = Upload(id=uuid.uuid4().hex, owner_id=actor.id, sha256=stored.sha256, size=stored.size,
                        content_type=stored.content_type, filename=stored.filename,
                        width=stored.width, height=stored.height)
        async with self.sessions() as session, session.begin():
            session.add(upload)
        return upload_view(upload)

    async def attachment_for_download(self, actor: Actor, upload_id: str) -> Upload:
        """The upload, if ``actor`` may read it: its uploader, or a current member of the
        conversation it was posted in who can see that message (R4) while it is not
        retracted (R8).  Anyone else gets attachment.not_found."""
        async with self.sessions() as session:
            upload = await session.get(Upload, attachment_rules.require_upload_id(upload_id))
            if upload is None:
                raise NotFound("attachment.not_found", upload_id=upload_id)
            if upload.owner_id == actor.id:
                return upload
            if upload.message_id is not None:
                message = await session.get(Message, upload.message_id)
                participant = await session.get(Participant, (message.conversation_id, actor.id))
                if (participant is not None and participant.active and message.retracted_at is None
                        and message.seq >= participant.visible_from_seq):
                    return upload
        raise NotFound("attachment.not_found", upload_id=upload_id)

    async def collect_uploads(self, now: float) -> int:
        """Delete uploads never attached within UPLOAD_TTL_SECONDS, and their files
        when no other upload shares the content."""
        cutoff = datetime.fromtimestamp(now - UPLOAD_TTL_SECONDS, timezone.utc)
        async with self.sessions() as session, session.begin():
            stale = (await session.execute(select(Upload).where(
                Upload.message_id.is_(None), Upload.created_at < cutoff))).scalars().all()
            hashes = {u.sha256 for u in stale}
            for upload in stale:
                await session.delete(upload)
            await session.flush()
            still_used = set((await session.execute(
                select(Upload.sha256).where(Upload.sha256.in_(hashes)))).scalars().all()) if hashes else set()
        for sha256 in hashes - still_used:
            self.store.remove(sha256)
        return len(stale)

    @staticmethod
    def _pending(conversation: Conversation, person_id: int, kind: str, code: str, actor: Actor,
                 link: dict[str, Any], **fields: Any) -> Any:
        if not conversation.name:
            code += "_plain"  # no "(…)" after the sender when the conversation has no name
        return Pending(person_id=person_id, kind=kind, code=code,
                       fields={"sender": actor.name, "conversation": conversation.name or "", **fields},
                       link={"conversation_id": conversation.id, **link}, school_id=conversation.school_id,
                       child_id=conversation.child_id, conversation_id=conversation.id)

    async def _existing(self, session, author_id: int, client_id: str, conversation_id: int) -> dict[str, Any] | None:
        message = (await session.execute(
            select(Message).where(Message.author_id == author_id, Message.client_id == client_id)
        )).scalar_one_or_none()
        if message is None:
            return None
        return retry_reply(conversation_id, client_id, message.id, message.conversation_id, message.seq,
                           message.created_at)

    async def _own_message(self, session, actor: Actor, message_id: int) -> Message:
        message = await session.get(Message, message_id)
        if message is None:
            raise NotFound("message.not_found", message_id=message_id)
        row = await session.get(Participant, (message.conversation_id, actor.id))
        if row is None or not row.active or message.seq < row.visible_from_seq:
            raise NotFound("message.not_found", message_id=message_id)
        return message

    async def edit_message(self, actor: Actor, message_id: int, text: str) -> dict[str, Any]:
        """R8: the author edits; R9: the earlier text is kept as a version."""
        messages.check_text(text)
        async with self.sessions() as session, session.begin():
            message = await self._own_message(session, actor, message_id)
            messages.check_change(actor.id, message.author_id, message.retracted_at is not None)
            await self._writable(session, message.conversation_id)
            session.add(MessageVersion(message_id=message.id, version=message.version, text=message.text,
                                       created_at=message.edited_at or message.created_at))
            message.version += 1
            message.text = text
            message.edited_at = utcnow()
            seq, frame = await self._append(
                session, message.conversation_id, "message.edited", actor.id, message_id=message.id,
                message={"id": message.id, "text": text, "version": message.version,
                         "edited_at": timestamp(message.edited_at)},
            )
            members = await self._member_ids(session, message.conversation_id)
        await self.hub.publish_event(message.conversation_id, seq, members, frame)
        return {"message_id": message.id, "seq": seq, "version": message.version}

    async def retract_message(self, actor: Actor, message_id: int) -> dict[str, Any]:
        """R8: the author removes a message from the conversation.  R9: it is kept
        (text and versions) for direction's archive; members see "message removed"."""
        async with self.sessions() as session, session.begin():
            message = await self._own_message(session, actor, message_id)
            messages.check_change(actor.id, message.author_id, message.retracted_at is not None)
            await self._writable(session, message.conversation_id)
            message.retracted_at = utcnow()
            # Members replaying the log must not see the text any more.
            earlier = (await session.execute(
                select(Event).where(Event.message_id == message.id, Event.conversation_id == message.conversation_id)
            )).scalars().all()
            for event in earlier:
                body = orjson.loads(event.frame)
                if "message" in body:
                    body["message"] = {"id": message.id, "author": message.author_id, "text": "",
                                       "retracted": True, "version": body["message"].get("version", 1),
                                       "created_at": body["message"].get("created_at")}
                    event.frame = dumps(body)
            seq, frame = await self._append(
                session, message.conversation_id, "message.retracted", actor.id, message_id=message.id,
                message={"id": message.id, "author": message.author_id, "text": "", "retracted": True},
                system=system_text("system.retracted"),
            )
            members = await self._member_ids(session, message.conversation_id)
        await self.hub.publish_event(message.conversation_id, seq, members, frame)
        return {"message_id": message.id, "seq": seq}

    async def react(self, actor: Actor, message_id: int, emoji: str, add: bool) -> dict[str, Any]:
        """R6: add or remove one's emoji reaction; every member sees the new count."""
        emoji = messages.check_emoji(emoji)
        async with self.sessions() as session, session.begin():
            message = await self._own_message(session, actor, message_id)
            await self._writable(session, message.conversation_id, "reactions")
            if message.retracted_at is not None:
                raise Conflict("message.retracted")
            existing = await session.get(Reaction, (message.id, actor.id, emoji))
            count_query = select(func.count()).select_from(Reaction).where(
                Reaction.message_id == message.id, Reaction.emoji == emoji)
            if (existing is not None) == add:  # nothing changes: answer with the current count
                count = (await session.execute(count_query)).scalar_one()
                return {"message_id": message.id, "emoji": emoji, "count": count, "changed": False}
            if add:
                session.add(Reaction(message_id=message.id, person_id=actor.id, emoji=emoji))
            else:
                await session.delete(existing)
            await session.flush()
            count = (await session.execute(count_query)).scalar_one()
            if add and message.author_id not in (None, actor.id):
                conversation = await session.get(Conversation, message.conversation_id)
                await self.notifier.add(session, [self._pending(
                    conversation, message.author_id, "reaction", "notify.reaction", actor,
                    {"message_id": message.id}, emoji=emoji)])
            seq, frame = await self._append(
                session, message.conversation_id, "reaction.added" if add else "reaction.removed", actor.id,
                reaction={"message_id": message.id, "emoji": emoji, "person": actor.id, "count": count},
            )
            members = await self._member_ids(session, message.conversation_id)
        await self.hub.publish_event(message.conversation_id, seq, members, frame)
        return {"message_id": message.id, "emoji": emoji, "count": count, "seq": seq, "changed": True}

    async def mark_read(self, actor: Actor, conversation_id: int, seq: int) -> dict[str, Any]:
        """Move the read marker forward (never back); the person's other devices follow."""
        async with self.sessions() as session, session.begin():
            participant = await self._participant(session, conversation_id, actor.id)
            conversation = await session.get(Conversation, conversation_id)
            if not 0 <= seq <= conversation.last_seq:
                raise BadRequest("read.invalid_seq", seq=seq, last_seq=conversation.last_seq)
            participant.last_read_seq = max(participant.last_read_seq, seq)
            if participant.last_read_seq >= conversation.last_seq:
                await self.notifier.read_conversation(session, actor.id, conversation_id)
            await session.flush()
            unread = (await self._unread(session, actor.id, [conversation_id])).get(conversation_id, 0)
            position = participant.last_read_seq
        await self.hub.publish_person(actor.id, "frame", dumps(
            {"type": "read", "conversation_id": conversation_id, "seq": position, "unread": unread}))
        return {"conversation_id": conversation_id, "seq": position, "unread": unread}

    async def typing(self, actor: Actor, conversation_id: int) -> None:
        """An ephemeral 'is typing' to the other members; never stored."""
        async with self.sessions() as session:
            await self._participant(session, conversation_id, actor.id)
            await self._writable(session, conversation_id)
            members = await self._member_ids(session, conversation_id)
        frame = dumps({"type": "typing", "conversation_id": conversation_id, "person": actor.id})
        await self.hub.publish_ephemeral(conversation_id, members, frame, exclude_person=actor.id)

    # -- reading -----------------------------------------------------------------------------------
    async def _unread(self, connection, person_id: int, conversation_ids: Sequence[int]) -> dict[int, int]:
        """Per conversation: messages by others, not retracted, after the person's read
        marker and visible to them (``connection``: a session, a Core or a direct one)."""
        if not conversation_ids:
            return {}
        return dict((await connection.execute(_UNREAD, {"person": person_id, "ids": list(conversation_ids)})).all())

    async def _summary(self, session, conversation: Conversation, person_id: int) -> dict[str, Any]:
        return (await self._summaries(session, [conversation], person_id))[0]

    async def _summaries(self, session, conversations: Sequence[Conversation], person_id: int) -> list[dict[str, Any]]:
        """The list entries of ``conversations`` as ``person_id`` sees them: prebuilt
        statements on the session's Core connection (plain rows, no ORM objects)."""
        if not conversations:
            return []
        ids = [c.id for c in conversations]
        connection = session if isinstance(session, direct.DirectConnection) else await session.connection()
        members: dict[int, list[dict[str, Any]]] = {}
        for cid, pid, name, role in (await connection.execute(_SUMMARY_MEMBERS, {"ids": ids})).all():
            members.setdefault(cid, []).append({"id": pid, "name": name, "role": role})
        mine = {p.conversation_id: p for p in (await connection.execute(
            _SUMMARY_MINE, {"ids": ids, "person": person_id})).all()}
        last = {m.conversation_id: m for m in (await connection.execute(_SUMMARY_LAST, {"ids": ids})).all()}
        unread = await self._unread(connection, person_id, list(mine))
        schools = {s.id: s for s in (await connection.execute(
            _SUMMARY_SCHOOLS, {"ids": sorted({c.school_id for c in conversations})})).all()}
        children = {s.id: s for s in (await connection.execute(
            _SUMMARY_CHILDREN, {"ids": sorted({c.child_id for c in conversations if c.child_id})})).all()}
        result = []
        for c in conversations:
            participant = mine.get(c.id)
            message = last.get(c.id)
            if message is not None and participant is not None and message.seq < participant.visible_from_seq:
                message = None
            child = children.get(c.child_id)
            school = schools.get(c.school_id)
            result.append({
                "id": c.id,
                "name": c.name,
                "school_id": c.school_id,
                "child": {"id": child.id, "name": f"{child.first_name} {child.last_name}"} if child else None,
                "creator_id": c.creator_id,
                "members": members.get(c.id, []),
                "last_seq": c.last_seq,
                "visible_from_seq": participant.visible_from_seq if participant else 1,
                "read_seq": participant.last_read_seq if participant else 0,
                "unread": unread.get(c.id, 0),
                "last_message": None if message is None else {
                    "id": message.id, "seq": message.seq, "author": message.author_id,
                    "text": "" if message.retracted_at else message.text,
                    "retracted": message.retracted_at is not None,
                    "created_at": timestamp(message.created_at),
                },
                # R10: members see that direction locked it.
                "locked": c.locked_at is not None,
                "lock_reason": c.lock_reason,
                # R11: the response-delay notice, in both languages.
                "notice": {"fr": school.notice_fr, "en": school.notice_en} if school else None,
            })
        return result

    async def list_conversations(self, actor: Actor) -> list[dict[str, Any]]:
        """My active conversations, most recent activity first, with unread counts
        (read by every new connection: on the driver's connection, chat.storage.direct)."""
        async with direct.reading(self.engine) as connection:
            conversations = await connection.execute(_MY_CONVERSATIONS, {"person": actor.id})
            return await self._summaries(connection, conversations, actor.id)

    async def conversation(self, actor: Actor, conversation_id: int) -> dict[str, Any]:
        async with self.sessions() as session:
            await self._participant(session, conversation_id, actor.id)
            conversation = await session.get(Conversation, conversation_id)
            return await self._summary(session, conversation, actor.id)

    async def history(
        self, actor: Actor, conversation_id: int, after: int | None = None, before: int | None = None,
        limit: int = HISTORY_DEFAULT,
    ) -> list[str]:
        """A page of a conversation's events as stored frames, oldest first.

        ``after=N`` pages forward (seq > N), ``before=N`` backward (seq < N, the
        newest page first when neither is given).  Only what the member may see:
        from their ``visible_from_seq`` (R4), never retracted text (R8).
        """
        if not 1 <= limit <= HISTORY_MAX:
            raise BadRequest("request.invalid", detail=f"limit must be 1–{HISTORY_MAX}")
        if after is not None and before is not None:
            raise BadRequest("request.invalid", detail="give after or before, not both")
        async with self.sessions() as session:
            participant = await self._participant(session, conversation_id, actor.id)
            query = select(Event.seq, Event.frame).where(
                Event.conversation_id == conversation_id, Event.seq >= participant.visible_from_seq)
            if after is not None:
                rows = (await session.execute(query.where(Event.seq > after).order_by(Event.seq).limit(limit))).all()
            else:
                if before is not None:
                    query = query.where(Event.seq < before)
                rows = list(reversed((await session.execute(query.order_by(Event.seq.desc()).limit(limit))).all()))
        return [frame for _, frame in rows]

    async def replay(self, person_id: int, conversation_id: int, after: int, limit: int) -> list[tuple[int, str]]:
        """Events after ``after`` that ``person_id`` may see now (used by the hub's gap fill)."""
        async with self.sessions() as session:
            participant = await session.get(Participant, (conversation_id, person_id))
            if participant is None or not participant.active:
                raise NotFound("conversation.not_found", conversation_id=conversation_id)
            start = max(after, participant.visible_from_seq - 1)
            rows = (await session.execute(
                select(Event.seq, Event.frame)
                .where(Event.conversation_id == conversation_id, Event.seq > start)
                .order_by(Event.seq).limit(limit)
            )).all()
        return [(seq, frame) for seq, frame in rows]

    async def positions(self, person_id: int) -> dict[int, int]:
        """Active conversation id → last seq, read when a connection becomes ready."""
        async with direct.reading(self.engine) as connection:
            return dict(await connection.tuples(_POSITIONS, {"person": person_id}))

    async def active_conversation_ids(self, person_id: int) -> list[int]:
        async with direct.reading(self.engine) as connection:
            return [row[0] for row in await connection.tuples(_ACTIVE, {"person": person_id})]

    async def resume_checks(self, person_id: int, positions: dict[int, int]) -> dict[int, str | None]:
        """Per conversation of ``positions`` (id -> the client's last seq): None when
        the hub can replay from there; else why the client must reload it
        (``not_member``, ``unknown_position``, ``too_old``).  One read for them all:
        a reconnecting client names every conversation it has open."""
        if not positions:
            return {}
        async with direct.reading(self.engine) as connection:
            found = {cid: (visible_from, last_seq) for cid, visible_from, last_seq in await connection.tuples(
                _RESUMABLE, {"person": person_id, "ids": list(positions)})}
        reasons: dict[int, str | None] = {}
        for conversation_id, position in positions.items():
            if conversation_id not in found:
                reasons[conversation_id] = "not_member"
                continue
            visible_from, last_seq = found[conversation_id]
            if position > last_seq:
                reasons[conversation_id] = "unknown_position"
            elif last_seq - max(position, visible_from - 1) > RESUME_MAX_EVENTS:
                reasons[conversation_id] = "too_old"
            else:
                reasons[conversation_id] = None
        return reasons

    async def refresh_connections(self) -> None:
        """Re-read what person-channel messages may have carried during a broker
        outage: sign-outs (R21) close connections, new memberships subscribe,
        lost ones unsubscribe."""
        hub = self.hub
        person_ids = list(hub.by_person)
        if not person_ids:
            return
        async with self.sessions() as session:
            revoked_after = dict((await session.execute(
                select(Person.id, Person.tokens_valid_after).where(Person.id.in_(person_ids)))).all())
            rows = (await session.execute(
                select(Participant.person_id, Participant.conversation_id)
                .where(Participant.person_id.in_(person_ids), Participant.active == True)  # noqa: E712
            )).all()
        active: dict[int, set[int]] = {}
        for pid, cid in rows:
            active.setdefault(pid, set()).add(cid)
        for pid in person_ids:
            for conn in list(hub.by_person.get(pid, ())):
                if conn.issued_at < revoked_after.get(pid, 0.0):
                    conn.push(dumps({"type": "signed_out"}))
                    await conn.close(CLOSE_UNAUTHENTICATED, "signed out", flush=1.0)
                    continue
                mine = active.get(pid, set())
                for cid in set(conn.positions) - mine:
                    await hub.leave(conn, cid, dumps(
                        {"type": "conversation.left", "conversation_id": cid, "reason": "member.removed"}))
                for cid in mine - set(conn.positions) - conn.filling:
                    async with self.sessions() as session:
                        conversation = await session.get(Conversation, cid)
                        summary = await self._summary(session, conversation, pid)
                    await hub.join(conn, cid, summary["last_seq"],
                                   dumps({"type": "conversation.joined", "conversation": summary}), replay=False)

    # -- people -----------------------------------------------------------------------------------
    async def me(self, actor: Actor) -> dict[str, Any]:
        """Who I am; for a parent, the children to pick from (one at a time)."""
        async with self.sessions() as session:
            person = await session.get(Person, actor.id)
            children = (await session.execute(
                select(Student, School.name, Group.name)
                .join(Guardianship, Guardianship.student_id == Student.id)
                .join(School, School.id == Student.school_id)
                .outerjoin(Group, Group.id == Student.group_id)
                .where(Guardianship.person_id == actor.id).order_by(Student.first_name)
            )).all()
            schools = (await session.execute(
                select(School.id, School.name).join(StaffSchool, StaffSchool.school_id == School.id)
                .where(StaffSchool.person_id == actor.id)
            )).all()
            groups = (await session.execute(
                select(Group.id, Group.name, Group.school_id).join(TeacherGroup, TeacherGroup.group_id == Group.id)
                .where(TeacherGroup.person_id == actor.id).order_by(Group.name)
            )).all()
        return {
            "id": person.id, "name": person.name, "email": person.email, "role": person.role,
            "language": person.language,
            "children": [{"id": s.id, "name": f"{s.first_name} {s.last_name}", "school": school,
                          "group": group} for s, school, group in children],
            "schools": [{"id": sid, "name": name} for sid, name in schools],
            # A teacher's groups: the audiences they may announce to (R13).
            "groups": [{"id": gid, "name": name, "school_id": sid} for gid, name, sid in groups],
        }

    async def demo_people(self) -> list[dict[str, Any]]:
        """Demo mode: everyone in the directory, staff first, for the widget's picker."""
        async with self.sessions() as session:
            people = (await session.execute(select(Person).order_by(Person.role != "direction", Person.role != "teacher",
                                                                    Person.role, Person.name))).scalars().all()
        return [{"id": p.id, "name": p.name, "role": p.role, "email": p.email, "language": p.language}
                for p in people]

    async def demo_token(self, person_id: int) -> str:
        async with self.sessions() as session:
            person = await session.get(Person, person_id)
        if person is None:
            raise NotFound("person.not_found", person_id=person_id)
        return self.mint_token(person)

    async def contacts(self, actor: Actor, child_id: int | None) -> list[dict[str, Any]]:
        """R2: the people ``actor`` may invite for ``child_id`` (or among staff)."""
        async with self.sessions() as session:
            actor_facts = (await self.people_facts(session, [actor.id]))[0]
            child = await self._child(session, child_id)
            membership.check_actor_for_child(actor_facts, child)
            if child is not None:
                school_ids = {child.school_id}
            else:
                school_ids = set(actor_facts.school_ids)
            staff = (await session.execute(
                select(StaffSchool.person_id).where(StaffSchool.school_id.in_(school_ids)))).scalars().all()
            candidates = set(staff) | (set(child.guardian_ids) if child else set())
            candidates.discard(actor.id)
            facts = await self._facts(session, candidates)
            allowed = [pid for pid, f in facts.items() if membership.may_invite(actor_facts, child, f)]
            people = await self._names(session, allowed)
        return sorted((_member_view(p) for p in people.values()), key=lambda p: (p["role"] != "teacher", p["name"]))
