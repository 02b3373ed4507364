"""Announcements (R13) and school-system notices (R12).

An announcement is persisted once — one row, and one small recipient row per
family member it reaches (for read receipts and the per-child label) — then
published once on the audience's channel (``school:ID`` or ``org:ID``).  Every
hub process delivers the same encoded frame to its local connections whose
person is a recipient.  Families resume missed announcements with
``announcements_after`` in their ``resume`` frame, or page them over HTTP.

Integration notices (transport delays, staff observations, absence notices)
are announcements of another ``kind`` posted with an integration key scoped
to one school and to the kinds it may post; each is traceable to its key.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, Sequence

import orjson
from sqlalchemy import and_, bindparam, func, insert, select, union, update

from chat.clock import utcnow
from chat import notifications
from chat.errors import BadRequest, Forbidden, NotFound, Unauthenticated
from chat.frames import dumps, timestamp
from chat.policies import announcements as rules
from chat.policies import messages
from chat.policies import text as text_rules
from chat.policies.facts import Caller, PersonFacts, Role
from chat.storage import direct
from chat.storage.models import (
    Announcement,
    AnnouncementReaction,
    AnnouncementRecipient,
    Group,
    Guardianship,
    IntegrationKey,
    Person,
    School,
    StaffSchool,
    Student,
)

# The kinds an integration may post, and the school feature each needs (R18).
INTEGRATION_KINDS = {"transport": "transport_notices", "observation": "observations", "absence": "absence_notices"}
KEY_PREFIX = "ik_"
# A page of announcements (newest first).
PAGE_DEFAULT, PAGE_MAX = 50, 200


def school_channel(school_id: int) -> str:
    return f"school:{school_id}"


def organisation_channel(organisation_id: int) -> str:
    return f"org:{organisation_id}"


# The recipient rows: a plain INSERT of many rows (chat.storage.direct runs it as
# one executemany on SQLite, in multi-row VALUES on PostgreSQL).
_RECIPIENT_INSERT = insert(AnnouncementRecipient.__table__)
_RECIPIENT_COLUMNS = ("announcement_id", "person_id", "child_ids")


# Built once (statement construction cost more than running them for a class).
# The families an audience reaches: (guardian, student, school), by student.
def _families(where):
    return select(Guardianship.person_id, Student.id, Student.school_id).join(
        Student, Student.id == Guardianship.student_id).where(where).order_by(Student.id)


def _notified(where):
    """The (guardian, child) pairs to notify, kept to the recipient rows just written:
    a directory change between the two statements must not notify someone who is
    not a recipient.  A join, not ``IN (SELECT …)``: SQLite would drive the
    guardianship index from that list for every student (quadratic in the audience).
    From the students, in their id order: for a school, SQLite then reads its
    students' index in the order the rows are wanted, each guardianship by
    student and each recipient row by its key, and sorts nothing.  Driven from
    the recipient rows (the join written from guardianship), it looked up every
    guardian's guardianships (children in other schools too) and sorted the
    result in a temporary B-tree: a third more time for a school of 1,000
    families (``tests/test_announcements.py`` checks the plan)."""
    return notifications.guardians_insert(
        select(Guardianship.person_id, Guardianship.student_id).select_from(Student).join(
            Guardianship, Guardianship.student_id == Student.id).join(AnnouncementRecipient, and_(
                AnnouncementRecipient.announcement_id == bindparam("announcement"),
                AnnouncementRecipient.person_id == Guardianship.person_id)).where(where)
        .order_by(Student.id))


_IN_GROUPS = Student.group_id.in_(bindparam("groups", expanding=True))
_IN_SCHOOL = Student.school_id == bindparam("school")
_IN_ORGANISATION = Student.organisation_id == bindparam("organisation")
_IN_SCHOOLS = Student.school_id.in_(bindparam("schools", expanding=True))
_OF_STUDENTS = Guardianship.student_id.in_(bindparam("students", expanding=True))
_FAMILIES = {"groups": _families(_IN_GROUPS), "school": _families(_IN_SCHOOL),
             "organisation": _families(_IN_ORGANISATION)}
# The organisation-wide one is kept to the schools with announcements on (R18).
_NOTIFIED = {"groups": _notified(_IN_GROUPS), "school": _notified(_IN_SCHOOL),
             "organisation": _notified(and_(_IN_ORGANISATION, _IN_SCHOOLS)), "students": _notified(_OF_STUDENTS)}
_GROUP_SCHOOLS = select(Group.id, Group.school_id).where(Group.id.in_(bindparam("groups", expanding=True)))
# The author's name with the organisation of each of their schools: one row per
# school, or one row of NULLs for someone with none.
_AUTHOR = select(Person.name, School.id, School.organisation_id).select_from(Person).outerjoin(
    School, School.id.in_(bindparam("schools", expanding=True))).where(Person.id == bindparam("person"))
# A person's schools and their organisations: as staff, and through their children.
_AUDIENCES = union(
    select(School.id, School.organisation_id).join(StaffSchool, StaffSchool.school_id == School.id)
    .where(StaffSchool.person_id == bindparam("person")),
    select(Student.school_id, Student.organisation_id).join(Guardianship, Guardianship.student_id == Student.id)
    .where(Guardianship.person_id == bindparam("person")))
_ANNOUNCEMENT_COLUMNS = [c.name for c in Announcement.__table__.columns if c.name != "id"]
_ANNOUNCEMENT_INSERT = insert(Announcement.__table__).returning(Announcement.__table__.c.id)
_ORGANISATION_OF = select(School.organisation_id).where(School.id == bindparam("school"))
# An integration notice's students, by fiche number in its school, and their guardians.
_FICHES = select(Student.fiche, Student.id).where(
    Student.school_id == bindparam("school"), Student.fiche.in_(bindparam("fiches", expanding=True)))
_GUARDIANS = select(Guardianship.person_id, Guardianship.student_id).where(
    Guardianship.student_id.in_(bindparam("students", expanding=True))).order_by(Guardianship.student_id)


def _ids_json(ids: list[int]) -> str:
    """A list of ids as JSON, as :func:`chat.frames.dumps` writes it (a family's one
    child, the usual case, without the encoder's round trip)."""
    return f"[{ids[0]}]" if len(ids) == 1 else dumps(ids)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Announcements:
    """Announcements (R13) and integration notices (R12).

    Its collaborators: ``sessions`` and ``engine`` (the ORM and the direct
    path), ``hub`` (fan-out to audiences and persons), ``notifier`` (the
    guardians' notifications, in the posting transaction), ``people`` (a person's
    facts), and the school rules ``require_feature`` (R18), ``school_features``
    and ``is_direction_of``.
    """

    def __init__(self, *, sessions: Callable[[], Any], engine: Any, hub: Any, notifier: Any,
                 people: Callable[[Any, Sequence[int]], Awaitable[list[PersonFacts]]],
                 require_feature: Callable[[Any, int, str], Awaitable[None]],
                 school_features: Callable[[Any, int], Awaitable[frozenset[str]]],
                 is_direction_of: Callable[[Any, Caller, int], Awaitable[bool]]) -> None:
        self.sessions = sessions
        self.engine = engine
        self.hub = hub
        self.notifier = notifier
        self.people = people
        self.require_feature = require_feature
        self.school_features = school_features
        self.is_direction_of = is_direction_of

    # -- who listens where ----------------------------------------------------------------------
    async def audience_channels(self, person_id: int) -> list[str]:
        """The audience channels a person's connections listen on: their schools
        (staff) or their children's schools (parents), and those organisations."""
        async with direct.reading(self.engine) as connection:  # every new connection pays this
            rows = await connection.tuples(_AUDIENCES, {"person": person_id})
        channels = {school_channel(s) for s, _ in rows}
        channels |= {organisation_channel(o) for _, o in rows}
        return sorted(channels)

    # -- posting -------------------------------------------------------------------------------------
    async def post(self, actor: Caller, audience_raw: Any, text: str, urgent: bool = False) -> dict[str, Any]:
        """R13: a teacher to her groups, staff and direction to their school, direction
        to the organisation.  Persisted once, then fanned out once."""
        audience = rules.parse_audience(audience_raw)
        messages.check_text(text)
        if urgent and actor.role != Role.DIRECTION.value:
            raise Forbidden("forbidden")  # only direction marks a closure urgent
        # The driver's own connection (chat.storage.direct): a handful of small
        # statements and two of thousands of rows, for which SQLAlchemy's per-statement
        # machinery cost more than SQLite itself at a class of a few hundred families.
        async with direct.transaction(self.engine) as session:
            facts = (await self.people(session, [actor.id]))[0]
            # (No round trip for a school or organisation audience: it names no group.)
            group_schools = dict((await session.execute(_GROUP_SCHOOLS, {"groups": sorted(audience.groups)}))
                                 .all()) if audience.groups else {}
            author = await session.execute(
                _AUTHOR, {"person": actor.id, "schools": sorted(facts.school_ids) or [-1]})
            author_name = author[0].name
            school_orgs = {sid: org for _, sid, org in author if sid is not None}
            rules.check_announcer(facts, audience, group_schools, school_orgs)
            # One query: every guardian of every student in the audience, with the school.
            if audience.groups:
                shape, schools, params = "groups", set(group_schools.values()), {"groups": sorted(audience.groups)}
            elif audience.school is not None:
                shape, schools, params = "school", {audience.school}, {"school": audience.school}
            else:
                shape, schools, params = "organisation", set(), {"organisation": audience.organisation}
            for school_id in schools:
                await self.require_feature(session, school_id, "announcements")
            school_id = min(schools) if schools else None
            organisation_id = (school_orgs.get(school_id) if school_id else audience.organisation) or (
                await session.execute(_ORGANISATION_OF, {"school": school_id})).one()[0]
            rows = await session.tuples(_FAMILIES[shape], params)
            if not schools:  # organisation-wide: skip schools that turned announcements off (R18)
                allowed = {sid for sid in {s for _, _, s in rows}
                           if "announcements" in await self.school_features(session, sid)}
                rows = [r for r in rows if r[2] in allowed]
                params["schools"] = sorted(allowed) or [-1]
            children: dict[int, list[int]] = defaultdict(list)
            for person_id, student_id, _ in rows:
                children[person_id].append(student_id)
            announcement = Announcement(
                organisation_id=organisation_id, school_id=school_id, author_id=actor.id, kind="announcement",
                audience=dumps(audience.describe()), text=text, urgent=urgent)
            recipients = await self._persist(session, announcement, children)
            await self._notify(session, announcement, shape, params, "announcement", author_name)
            frame = self._frame(announcement, {"id": actor.id, "name": author_name}, None)
        # Groups of several schools (or the organisation): the organisation channel reaches them all.
        channel = school_channel(school_id) if len(schools) == 1 else organisation_channel(organisation_id)
        recipients.append(actor.id)
        await self.hub.publish_audience(channel, recipients, frame)
        return {"announcement": orjson.loads(frame)["announcement"] | {"recipient_count": len(children)}}

    async def _persist(self, session, announcement: Announcement, children: dict[int, list[int]]) -> list[int]:
        """One announcement row and one recipient row per guardian (labelled with
        each of their children in the audience: a family gets it once).

        ``session`` is a :class:`chat.storage.direct.DirectConnection`.  The
        announcement row is a prebuilt Core INSERT (the object never enters an
        ORM session); the recipient rows are one plain INSERT of many rows, with
        ``read_at`` left to its NULL default."""
        announcement.recipient_count = len(children)
        announcement.id = announcement_id = (await session.execute(_ANNOUNCEMENT_INSERT, {
            column: getattr(announcement, column) for column in _ANNOUNCEMENT_COLUMNS})).one()[0]
        if children:
            await session.insert_many(_RECIPIENT_INSERT, _RECIPIENT_COLUMNS, [
                (announcement_id, pid, _ids_json(kids)) for pid, kids in children.items()])
        return list(children)

    async def _notify(self, session, announcement: Announcement, shape: str, params: dict[str, Any], kind: str,
                      sender: str) -> None:
        """One notification per recipient and child (the per-child feed, R16; R17
        filters), for the audience ``shape`` (a key of ``_NOTIFIED``) with its ``params``."""
        await self.notifier.add_guardians(
            session, _NOTIFIED[shape], {**params, "announcement": announcement.id}, kind=kind,
            code=f"notify.{kind}", fields={"sender": sender}, link={"announcement_id": announcement.id},
            urgent=announcement.urgent)

    @staticmethod
    def _frame(announcement: Announcement, author: dict[str, Any] | None, source: str | None) -> str:
        return dumps({"type": "announcement", "announcement": {
            "id": announcement.id,
            "kind": announcement.kind,
            "megaphone": announcement.kind == "announcement",  # R13: shown with a megaphone
            "author": author,
            "source": source,
            "school_id": announcement.school_id,
            "audience": orjson.loads(announcement.audience),
            "text": announcement.text,
            "urgent": announcement.urgent,
            "created_at": timestamp(announcement.created_at),
        }})

    # -- integrations (R12) -----------------------------------------------------------------------
    async def create_key(self, school_code: str, name: str, kinds: Sequence[str]) -> tuple[int, str]:
        """A new integration key for a school; the key itself is returned once, only its hash is kept."""
        bad = sorted(set(kinds) - set(INTEGRATION_KINDS))
        if bad or not kinds:
            raise BadRequest("request.invalid", detail=f"kinds must be among {sorted(INTEGRATION_KINDS)}")
        # Its name is shown to families as the notices' source: the rules of every name.
        name = text_rules.strip_bidi_controls(text_rules.check_no_control_characters(name, "name"))
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        async with self.sessions() as session, session.begin():
            school = (await session.execute(select(School).where(School.code == school_code))).scalar_one_or_none()
            if school is None:
                raise NotFound("request.invalid", detail=f"unknown school {school_code!r}")
            row = IntegrationKey(school_id=school.id, name=name[:100], kinds=dumps(sorted(set(kinds))),
                                 key_hash=hash_key(key))
            session.add(row)
            await session.flush()
            return row.id, key

    async def revoke_key(self, key_id: int) -> bool:
        async with self.sessions() as session, session.begin():
            result = await session.execute(update(IntegrationKey).where(
                IntegrationKey.id == key_id, IntegrationKey.revoked_at.is_(None)).values(revoked_at=utcnow()))
            return result.rowcount == 1

    async def list_keys(self) -> list[dict[str, Any]]:
        async with self.sessions() as session:
            rows = (await session.execute(select(IntegrationKey, School.code).join(
                School, School.id == IntegrationKey.school_id).order_by(IntegrationKey.id))).all()
        return [{"id": k.id, "school": code, "name": k.name, "kinds": orjson.loads(k.kinds),
                 "revoked": k.revoked_at is not None} for k, code in rows]

    async def authenticate_key(self, key: str | None) -> IntegrationKey:
        if not key or not key.startswith(KEY_PREFIX):
            raise Unauthenticated("integration.invalid_key")
        async with self.sessions() as session:
            row = (await session.execute(select(IntegrationKey).where(
                IntegrationKey.key_hash == hash_key(key)))).scalar_one_or_none()
        if row is None or row.revoked_at is not None:
            raise Unauthenticated("integration.invalid_key")
        return row

    async def notice(self, key: IntegrationKey, kind: str, text: str, fiches: Sequence[str]) -> dict[str, Any]:
        """R12: a transport notice, an observation or an absence notice about some
        students, into their guardians' messaging — traceable to the key."""
        if kind not in INTEGRATION_KINDS:
            raise BadRequest("integration.kind_not_allowed", kind=kind[:32])
        if kind not in orjson.loads(key.kinds):
            raise Forbidden("integration.kind_not_allowed", kind=kind)
        messages.check_text(text)
        if not fiches or len(fiches) > rules.MAX_COLLECTIVE_STUDENTS:
            raise BadRequest("request.invalid", detail="students: 1 to 2000 fiche numbers")
        async with direct.transaction(self.engine) as session:
            await self.require_feature(session, key.school_id, INTEGRATION_KINDS[kind])
            organisation_id = (await session.execute(_ORGANISATION_OF, {"school": key.school_id})).one()[0]
            found = dict(await session.execute(_FICHES, {"school": key.school_id, "fiches": list(fiches)}))
            for fiche in fiches:
                if fiche not in found:
                    raise NotFound("integration.student_not_found", fiche=str(fiche)[:20])
            student_ids = sorted(set(found.values()))
            announcement = Announcement(
                organisation_id=organisation_id, school_id=key.school_id, integration_key_id=key.id, kind=kind,
                audience=dumps({"students": student_ids}), text=text)
            children: dict[int, list[int]] = defaultdict(list)
            for person_id, student_id in await session.execute(_GUARDIANS, {"students": student_ids}):
                children[person_id].append(student_id)
            recipients = await self._persist(session, announcement, children)
            await self._notify(session, announcement, "students", {"students": student_ids}, kind, key.name)
            frame = self._frame(announcement, None, key.name)
        await self.hub.publish_audience(school_channel(key.school_id), recipients, frame)
        return {"notice": orjson.loads(frame)["announcement"] | {"recipient_count": len(recipients)}}

    # -- reading ---------------------------------------------------------------------------------------
    async def _visible(self, session, actor: Caller, announcement_id: int) -> tuple[Announcement, AnnouncementRecipient | None]:
        announcement = await session.get(Announcement, announcement_id)
        if announcement is None:
            raise NotFound("announcement.not_found", announcement_id=announcement_id)
        recipient = await session.get(AnnouncementRecipient, (announcement_id, actor.id))
        if recipient is None and announcement.author_id != actor.id and not (
                announcement.school_id and await self.is_direction_of(session, actor, announcement.school_id)):
            raise NotFound("announcement.not_found", announcement_id=announcement_id)
        return announcement, recipient

    async def mine(self, actor: Caller, before: int | None = None, after: int | None = None,
                   limit: int = PAGE_DEFAULT) -> list[dict[str, Any]]:
        """Announcements I received or posted, newest first (or oldest first ``after`` an id)."""
        if not 1 <= limit <= PAGE_MAX:
            raise BadRequest("request.invalid", detail=f"limit must be 1–{PAGE_MAX}")
        async with self.sessions() as session:
            received = select(AnnouncementRecipient.announcement_id).where(AnnouncementRecipient.person_id == actor.id)
            query = select(Announcement).where(
                (Announcement.id.in_(received)) | (Announcement.author_id == actor.id))
            if after is not None:
                query = query.where(Announcement.id > after).order_by(Announcement.id)
            else:
                if before is not None:
                    query = query.where(Announcement.id < before)
                query = query.order_by(Announcement.id.desc())
            rows = (await session.execute(query.limit(limit))).scalars().all()
            return [await self._view(session, actor, a) for a in rows]

    async def _view(self, session, actor: Caller, announcement: Announcement) -> dict[str, Any]:
        author = await session.get(Person, announcement.author_id) if announcement.author_id else None
        source = None
        if announcement.integration_key_id:
            source = (await session.get(IntegrationKey, announcement.integration_key_id)).name
        view = orjson.loads(self._frame(announcement, {"id": author.id, "name": author.name} if author else None,
                                        source))["announcement"]
        recipient = await session.get(AnnouncementRecipient, (announcement.id, actor.id))
        if recipient is not None:
            child_ids = orjson.loads(recipient.child_ids)
            names = dict((await session.execute(select(Student.id, Student.first_name).where(
                Student.id.in_(child_ids or [-1])))).all())
            view["children"] = [{"id": c, "name": names.get(c)} for c in child_ids]  # the per-child label
            view["read"] = recipient.read_at is not None
        reactions = (await session.execute(
            select(AnnouncementReaction.emoji, func.count()).where(
                AnnouncementReaction.announcement_id == announcement.id).group_by(AnnouncementReaction.emoji))).all()
        view["reactions"] = {emoji: count for emoji, count in reactions}
        view["my_reactions"] = list((await session.execute(select(AnnouncementReaction.emoji).where(
            AnnouncementReaction.announcement_id == announcement.id,
            AnnouncementReaction.person_id == actor.id))).scalars().all())
        return view

    async def detail(self, actor: Caller, announcement_id: int) -> dict[str, Any]:
        """One announcement; its author (and the school's direction) also see read and
        reaction counts with who reacted."""
        async with self.sessions() as session:
            announcement, _ = await self._visible(session, actor, announcement_id)
            view = await self._view(session, actor, announcement)
            if announcement.author_id == actor.id or (
                    announcement.school_id and await self.is_direction_of(session, actor, announcement.school_id)):
                read = (await session.execute(select(func.count()).select_from(AnnouncementRecipient).where(
                    AnnouncementRecipient.announcement_id == announcement_id,
                    AnnouncementRecipient.read_at.is_not(None)))).scalar_one()
                who = defaultdict(list)
                for emoji, name in (await session.execute(
                    select(AnnouncementReaction.emoji, Person.name).join(
                        Person, Person.id == AnnouncementReaction.person_id)
                    .where(AnnouncementReaction.announcement_id == announcement_id)
                    .order_by(AnnouncementReaction.created_at))).all():
                    who[emoji].append(name)
                view["stats"] = {"recipients": announcement.recipient_count, "read": read,
                                 "reactions": {e: {"count": len(n), "people": n} for e, n in who.items()}}
            return view

    async def mark_read(self, actor: Caller, announcement_id: int) -> dict[str, Any]:
        async with self.sessions() as session, session.begin():
            _, recipient = await self._visible(session, actor, announcement_id)
            if recipient is not None and recipient.read_at is None:
                recipient.read_at = utcnow()
        return {"announcement_id": announcement_id, "read": recipient is not None}

    async def react(self, actor: Caller, announcement_id: int, emoji: str, add: bool) -> dict[str, Any]:
        """R6 on announcements: recipients react with an emoji; they do not reply (R13)."""
        emoji = messages.check_emoji(emoji)
        async with self.sessions() as session, session.begin():
            announcement, recipient = await self._visible(session, actor, announcement_id)
            if recipient is None:
                raise Forbidden("forbidden")  # the author and direction read the counts; recipients react
            if announcement.school_id:
                await self.require_feature(session, announcement.school_id, "reactions")
            existing = await session.get(AnnouncementReaction, (announcement_id, actor.id, emoji))
            if add and existing is None:
                session.add(AnnouncementReaction(announcement_id=announcement_id, person_id=actor.id, emoji=emoji))
            elif not add and existing is not None:
                await session.delete(existing)
            await session.flush()
            count = (await session.execute(select(func.count()).select_from(AnnouncementReaction).where(
                AnnouncementReaction.announcement_id == announcement_id,
                AnnouncementReaction.emoji == emoji))).scalar_one()
            author_id = announcement.author_id
        if author_id is not None:  # the sender sees reactions live
            await self.hub.publish_person(author_id, "frame", dumps({
                "type": "announcement.reaction", "announcement_id": announcement_id, "emoji": emoji,
                "count": count, "person": actor.id, "added": add}))
        return {"announcement_id": announcement_id, "emoji": emoji, "count": count}

    @staticmethod
    def refuse_reply() -> None:
        """R13: recipients read and react; they do not reply."""
        raise Forbidden("announcement.no_replies")

