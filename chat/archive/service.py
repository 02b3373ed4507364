"""Direction's archive (R9) and the school's audit log (R9, R10).

The direction of a school reads every conversation of that school as it
really happened: retracted messages with their text, every earlier version of
an edited message, every member who came and went, every rename and lock.
Nobody else does: another role, or the direction of another school, gets
``direction.only``.

Every access is accounted for.  Before any archived text is read, an entry
(``archive.search``, ``archive.read``, ``archive.export``,
``archive.attachment``) is appended to the append-only audit log and
committed in a transaction of its own: the read itself changes nothing, but
the fact that somebody looked is kept, and nothing is shown if it could not be
recorded.  Locks and unlocks are audited by :meth:`chat.conversations.membership.Membership.set_lock`.

The archive only reads; it never changes a conversation and offers no way to
change the audit log (the database refuses UPDATE and DELETE on it).  The
HTML export's page is drawn by :mod:`chat.archive.export`.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Sequence

import orjson
from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from chat.archive.export import render_html
from chat.clock import utcnow
from chat.errors import BadRequest, Forbidden, NotFound
from chat.frames import dumps, timestamp
from chat.policies.attachments import require_upload_id
from chat.policies.facts import Role
from chat.policies.text import check_no_control_characters, strip_bidi_controls
from chat.people import Actor
from chat.schools import audit, conversation_directed_by, require_direction
from chat.storage.models import (
    AuditEntry,
    Conversation,
    Event,
    Message,
    MessageVersion,
    Participant,
    Person,
    Reaction,
    School,
    Student,
    Upload,
)

# Pages of conversations and audit entries: 50 by default, 200 at most, like
# the conversation history (a few screens of a table).
PAGE_DEFAULT = 50
PAGE_MAX = 200
# A search text longer than a long sentence is not a search but a paste; the
# bound also keeps the audit entry, which records the query, small.
SEARCH_TEXT_MAX = 200

# Events that are messages or reactions are shown through the messages
# themselves; the others are the conversation's own history (system events).
_MESSAGE_KINDS = frozenset({"message.new", "message.edited", "message.retracted", "reaction.added",
                            "reaction.removed"})


def _aware(moment: datetime) -> datetime:
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=timezone.utc)


def _contains_folded(column: Any, needle: str) -> Any:
    """Case-insensitive substring match, the same on SQLite and PostgreSQL.

    ``lower(x) LIKE …`` is not enough: SQLite's ``lower`` folds ASCII only, so
    "école" would not find "École".  An escaped regular expression with the
    embedded ``(?i)`` option is literal text on both engines (SQLAlchemy
    registers Python's ``re`` as SQLite's REGEXP; PostgreSQL reads ``(?i)``
    as an ARE option) and folds every letter.
    """
    return column.regexp_match("(?i)" + re.escape(needle))


def _page(limit: int, offset: int) -> None:
    if not 1 <= limit <= PAGE_MAX:
        raise BadRequest("request.invalid", detail=f"limit must be 1–{PAGE_MAX}")
    if offset < 0:
        raise BadRequest("request.invalid", detail="offset must be 0 or more")


def _shown(name: str | None) -> str | None:
    """A stored name as the archive shows it: without bidirectional controls,
    also when it was stored before names were cleaned (chat.policies.text)."""
    return None if name is None else strip_bidi_controls(name)


def _person_view(person: Person | None, person_id: int | None) -> dict[str, Any] | None:
    if person_id is None:
        return None
    if person is None:
        return {"id": person_id, "name": None, "role": None}
    return {"id": person.id, "name": _shown(person.name), "role": person.role}


class Archive:
    """Read-only access for a school's direction to its conversations and audit log."""

    def __init__(self, *, sessions: async_sessionmaker) -> None:
        self.sessions = sessions

    # -- who may look, and the record that they did --------------------------------------------
    def _direction_role(self, actor: Actor) -> None:
        # Before any look-up: a parent or teacher learns nothing, not even whether an id exists.
        if actor.role != Role.DIRECTION.value:
            raise Forbidden("direction.only")

    async def _open_school(self, actor: Actor, school_id: int, action: str | None, **details: Any) -> None:
        """R9: refuse unless ``actor`` directs the school; append and commit the audit entry."""
        self._direction_role(actor)
        async with self.sessions() as session, session.begin():
            if await session.get(School, school_id) is None:
                raise NotFound("school.not_found", school_id=school_id)
            await require_direction(session, actor, school_id)
            if action is not None:
                audit(session, actor, school_id, action, f"school:{school_id}", **details)

    async def _open_conversation(self, actor: Actor, conversation_id: int, action: str, **details: Any) -> None:
        """R9: refuse unless ``actor`` directs the conversation's school; audit the access."""
        self._direction_role(actor)
        async with self.sessions() as session, session.begin():
            conversation = await conversation_directed_by(session, actor, conversation_id)
            audit(session, actor, conversation.school_id, action,
                  f"conversation:{conversation_id}", **details)

    # -- search --------------------------------------------------------------------------------
    async def search(
        self, actor: Actor, school_id: int, participant: int | None = None, child: int | None = None,
        since: datetime | None = None, until: datetime | None = None, text: str | None = None,
        limit: int = PAGE_DEFAULT, offset: int = 0,
    ) -> list[dict[str, Any]]:
        """The school's conversations matching every filter given, most recent activity first.

        ``participant``: the person is or was a member.  ``child``: the
        conversation is about that child.  ``since``/``until`` (inclusive):
        the conversation was created, or a message was posted, in that span.
        ``text``: a case-insensitive part of any message text, including
        retracted messages and every earlier version of edited ones (R9).
        """
        _page(limit, offset)
        since = _aware(since) if since is not None else None
        until = _aware(until) if until is not None else None
        if since is not None and until is not None and since > until:
            raise BadRequest("request.invalid", detail="since must not be after until")
        if text is not None:
            text = check_no_control_characters(text, "q").strip()
            if len(text) > SEARCH_TEXT_MAX:
                raise BadRequest("request.invalid", detail=f"q: {SEARCH_TEXT_MAX} characters at most")
            text = text or None
        await self._open_school(
            actor, school_id, "archive.search", participant=participant, child=child,
            since=timestamp(since), until=timestamp(until), q=text, limit=limit, offset=offset,
        )
        query = select(Conversation).where(Conversation.school_id == school_id)
        if participant is not None:
            query = query.where(exists().where(Participant.conversation_id == Conversation.id,
                                               Participant.person_id == participant))
        if child is not None:
            query = query.where(Conversation.child_id == child)
        if since is not None or until is not None:
            created, posted = [], [Message.conversation_id == Conversation.id]
            if since is not None:
                created.append(Conversation.created_at >= since)
                posted.append(Message.created_at >= since)
            if until is not None:
                created.append(Conversation.created_at <= until)
                posted.append(Message.created_at <= until)
            query = query.where(or_(and_(*created), exists().where(*posted)))
        if text is not None:
            earlier = exists().where(MessageVersion.message_id == Message.id,
                                     _contains_folded(MessageVersion.text, text))
            query = query.where(exists().where(
                Message.conversation_id == Conversation.id,
                or_(_contains_folded(Message.text, text), earlier),
            ))
        query = query.order_by(
            func.coalesce(Conversation.last_message_at, Conversation.created_at).desc(), Conversation.id.desc()
        ).limit(limit).offset(offset)
        async with self.sessions() as session:
            conversations = (await session.execute(query)).scalars().all()
            return await self._summaries(session, conversations)

    async def _summaries(self, session, conversations: Sequence[Conversation]) -> list[dict[str, Any]]:
        if not conversations:
            return []
        ids = [c.id for c in conversations]
        members: dict[int, list[dict[str, Any]]] = {}
        for row, person in (await session.execute(
            select(Participant, Person).join(Person, Person.id == Participant.person_id)
            .where(Participant.conversation_id.in_(ids)).order_by(Participant.active.desc(), Person.name)
        )).all():
            members.setdefault(row.conversation_id, []).append(
                {"id": person.id, "name": _shown(person.name), "role": person.role, "active": row.active})
        counts = dict((await session.execute(
            select(Message.conversation_id, func.count()).where(Message.conversation_id.in_(ids))
            .group_by(Message.conversation_id)
        )).all())
        children = {s.id: s for s in (await session.execute(
            select(Student).where(Student.id.in_({c.child_id for c in conversations if c.child_id}))
        )).scalars().all()}
        result = []
        for c in conversations:
            student = children.get(c.child_id)
            result.append({
                "id": c.id,
                "name": _shown(c.name),
                "school_id": c.school_id,
                "child": {"id": student.id, "name": _shown(f"{student.first_name} {student.last_name}")}
                if student else None,
                "creator_id": c.creator_id,
                "members": members.get(c.id, []),
                "created_at": timestamp(c.created_at),
                "last_message_at": timestamp(c.last_message_at),
                "message_count": counts.get(c.id, 0),
                "locked": c.locked_at is not None,
                "locked_at": timestamp(c.locked_at),
                "lock_reason": c.lock_reason,
            })
        return result

    # -- one conversation, whole -------------------------------------------------------------------
    async def conversation(self, actor: Actor, conversation_id: int) -> dict[str, Any]:
        """R9: the whole conversation: every message in seq order with its current
        text, retraction, every version and its reactions and attachments; every
        system event; every participant with the times they joined and left."""
        await self._open_conversation(actor, conversation_id, "archive.read")
        return await self._load(conversation_id)

    async def export_json(self, actor: Actor, conversation_id: int) -> str:
        """The archived conversation as a JSON document (what :meth:`conversation` returns,
        plus who exported it and when)."""
        await self._open_conversation(actor, conversation_id, "archive.export", format="json")
        document = await self._load(conversation_id)
        return dumps({"exported_at": timestamp(utcnow()), "exported_by": {"id": actor.id, "name": _shown(actor.name)},
                      **document})

    async def export_html(self, actor: Actor, conversation_id: int) -> str:
        """The archived conversation as one self-contained, readable HTML page
        (no script, no external resource; every text written by a person is escaped)."""
        await self._open_conversation(actor, conversation_id, "archive.export", format="html")
        document = await self._load(conversation_id)
        return render_html(document, actor, utcnow())

    async def _load(self, conversation_id: int) -> dict[str, Any]:
        async with self.sessions() as session:
            conversation = await session.get(Conversation, conversation_id)
            if conversation is None:  # pragma: no cover - conversations are never deleted
                raise NotFound("conversation.not_found", conversation_id=conversation_id)
            school = await session.get(School, conversation.school_id)
            student = await session.get(Student, conversation.child_id) if conversation.child_id else None
            participants = (await session.execute(
                select(Participant).where(Participant.conversation_id == conversation_id)
                .order_by(Participant.joined_at, Participant.person_id)
            )).scalars().all()
            messages = (await session.execute(
                select(Message).where(Message.conversation_id == conversation_id).order_by(Message.seq)
            )).scalars().all()
            message_ids = [m.id for m in messages]
            versions: dict[int, list[MessageVersion]] = {}
            reactions: dict[int, list[Reaction]] = {}
            uploads: dict[int, list[Upload]] = {}
            if message_ids:
                for v in (await session.execute(
                    select(MessageVersion).where(MessageVersion.message_id.in_(message_ids))
                    .order_by(MessageVersion.message_id, MessageVersion.version)
                )).scalars().all():
                    versions.setdefault(v.message_id, []).append(v)
                for r in (await session.execute(
                    select(Reaction).where(Reaction.message_id.in_(message_ids))
                    .order_by(Reaction.message_id, Reaction.created_at, Reaction.person_id)
                )).scalars().all():
                    reactions.setdefault(r.message_id, []).append(r)
                for u in (await session.execute(
                    select(Upload).where(Upload.message_id.in_(message_ids)).order_by(Upload.created_at, Upload.id)
                )).scalars().all():
                    uploads.setdefault(u.message_id, []).append(u)
            events = (await session.execute(
                select(Event).where(Event.conversation_id == conversation_id, Event.kind.not_in(_MESSAGE_KINDS))
                .order_by(Event.seq)
            )).scalars().all()
            person_ids = {p.person_id for p in participants} | {m.author_id for m in messages if m.author_id}
            person_ids |= {r.person_id for rs in reactions.values() for r in rs}
            person_ids |= {e.actor_id for e in events if e.actor_id}
            person_ids |= {conversation.creator_id} | ({conversation.locked_by} if conversation.locked_by else set())
            people = {p.id: p for p in (await session.execute(
                select(Person).where(Person.id.in_(person_ids)))).scalars().all()}

        def person(pid: int | None) -> dict[str, Any] | None:
            return _person_view(people.get(pid), pid)

        return {
            "id": conversation.id,
            "name": _shown(conversation.name),
            "school": {"id": school.id, "name": _shown(school.name), "timezone": school.timezone},
            "child": {"id": student.id, "name": _shown(f"{student.first_name} {student.last_name}")}
            if student else None,
            "creator": person(conversation.creator_id),
            "created_at": timestamp(conversation.created_at),
            "last_message_at": timestamp(conversation.last_message_at),
            "last_seq": conversation.last_seq,
            "locked": conversation.locked_at is not None,
            "locked_at": timestamp(conversation.locked_at),
            "locked_by": person(conversation.locked_by),
            "lock_reason": conversation.lock_reason,
            "participants": [
                person(p.person_id) | {"active": p.active, "joined_at": timestamp(p.joined_at),
                                       "left_at": timestamp(p.left_at), "visible_from_seq": p.visible_from_seq}
                for p in participants
            ],
            "messages": [
                self._message_view(m, versions.get(m.id, []), reactions.get(m.id, []), uploads.get(m.id, []), person)
                for m in messages
            ],
            "events": [self._event_view(e, person) for e in events],
        }

    @staticmethod
    def _message_view(message: Message, versions: list[MessageVersion], reactions: list[Reaction],
                      uploads: list[Upload], person) -> dict[str, Any]:
        # Every version, oldest first, the current text last (R9).
        history = [{"version": v.version, "text": v.text, "created_at": timestamp(v.created_at)} for v in versions]
        history.append({"version": message.version, "text": message.text,
                        "created_at": timestamp(message.edited_at or message.created_at)})
        by_emoji: dict[str, list[dict[str, Any]]] = {}
        for r in reactions:
            by_emoji.setdefault(r.emoji, []).append(person(r.person_id) | {"at": timestamp(r.created_at)})
        attachments = []
        for u in uploads:
            view: dict[str, Any] = {"id": u.id, "name": u.filename, "size": u.size, "type": u.content_type,
                                    "url": f"/api/archive/attachments/{u.id}"}
            if u.width:
                view["width"], view["height"] = u.width, u.height
            attachments.append(view)
        return {
            "id": message.id,
            "seq": message.seq,
            "author": person(message.author_id),
            "created_at": timestamp(message.created_at),
            "text": message.text,
            "retracted": message.retracted_at is not None,
            "retracted_at": timestamp(message.retracted_at),
            "edited": message.version > 1,
            "edited_at": timestamp(message.edited_at),
            "version": message.version,
            "versions": history,
            "reactions": [{"emoji": emoji, "count": len(who), "people": who} for emoji, who in by_emoji.items()],
            "attachments": attachments,
        }

    @staticmethod
    def _event_view(event: Event, person) -> dict[str, Any]:
        frame = orjson.loads(event.frame)
        view: dict[str, Any] = {"seq": event.seq, "kind": event.kind, "at": timestamp(event.created_at),
                                "actor": person(event.actor_id)}
        for key in ("name", "child_id", "members", "history_shared", "reason", "system"):
            if key in frame:
                view[key] = frame[key]
        # Names inside stored frames (a rename, the members, system texts that quote names).
        if isinstance(view.get("name"), str):
            view["name"] = _shown(view["name"])
        if isinstance(view.get("members"), list):
            view["members"] = [m | {"name": _shown(m["name"])} if isinstance(m, dict) and isinstance(m.get("name"), str)
                               else m for m in view["members"]]
        if isinstance(view.get("system"), dict):
            view["system"] = {k: _shown(v) if isinstance(v, str) else v for k, v in view["system"].items()}
        if "person" in frame:
            view["person"] = person(frame["person"])
        return view

    # -- attachments -------------------------------------------------------------------------------
    async def attachment(self, actor: Actor, upload_id: str) -> Upload:
        """R9: a file posted in a conversation of the direction's school, retracted or
        not; the download is audited.  Files never posted are not in the archive."""
        self._direction_role(actor)
        async with self.sessions() as session, session.begin():
            upload = await session.get(Upload, require_upload_id(upload_id))
            if upload is None or upload.message_id is None:
                raise NotFound("attachment.not_found", upload_id=upload_id)
            message = await session.get(Message, upload.message_id)
            conversation = await session.get(Conversation, message.conversation_id)
            await require_direction(session, actor, conversation.school_id)
            audit(session, actor, conversation.school_id, "archive.attachment", f"upload:{upload.id}",
                  conversation_id=conversation.id, message_id=message.id, name=upload.filename)
        return upload

    # -- the audit log -------------------------------------------------------------------------------
    async def audit_log(self, actor: Actor, school_id: int, limit: int = PAGE_DEFAULT,
                        offset: int = 0) -> list[dict[str, Any]]:
        """The school's audit entries, newest first: who did what, to what, when.
        Read-only: there is no way to change or remove an entry."""
        _page(limit, offset)
        await self._open_school(actor, school_id, None)
        async with self.sessions() as session:
            rows = (await session.execute(
                select(AuditEntry, Person).outerjoin(Person, Person.id == AuditEntry.actor_id)
                .where(AuditEntry.school_id == school_id)
                .order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit).offset(offset)
            )).all()
        return [{
            "id": entry.id,
            "at": timestamp(entry.at),
            "actor": _person_view(person, entry.actor_id),
            "action": entry.action,
            "target": entry.target,
            "details": orjson.loads(entry.details) if entry.details else {},
        } for entry, person in rows]
