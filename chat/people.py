"""People: who is signed in (R21), what the rules know of them, what they see of themselves.

:class:`People` authenticates access tokens against their session
(signing in and out is :mod:`chat.accounts`), reads the directory facts the pure rules take (:mod:`chat.policies.facts`)
and answers ``me``, ``contacts`` (R2) and the demo picker.  Fact readers take
an :class:`~chat.storage.executor.Executor`, so they run in the caller's
transaction on the ORM session or the direct connection alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from chat import auth
from chat.config import Settings
from chat.errors import BadRequest, NotFound, Unauthenticated
from chat.i18n import LANGUAGES
from chat.policies import membership
from chat.policies.facts import ChildFacts, PersonFacts, Role
from chat.storage import direct, queries
from chat.storage.executor import Executor
from chat.storage.models import Group, Guardianship, Person, School, StaffSchool, Student, TeacherGroup


@dataclass(frozen=True)
class Actor:
    """The signed-in person a request acts for."""

    id: int
    role: str
    name: str
    language: str
    token_id: str = ""
    session_id: str = ""
    expires_at: float = float("inf")


def member_view(person: Any) -> dict[str, Any]:
    """A member as conversation frames show them: id, name, role."""
    return {"id": person.id, "name": person.name, "role": person.role}


async def facts(executor: Executor, person_ids: Iterable[int]) -> dict[int, PersonFacts]:
    """Id -> the rules' facts (role, schools, groups, children) of those who exist."""
    ids = set(person_ids)
    if not ids:
        return {}
    roles: dict[int, str] = {}
    related: dict[int, tuple[set[int], set[int], set[int]]] = {}
    for source, pid, value, role in (await executor.execute(queries.FACTS, {"ids": list(ids)})).all():
        if source == queries.FACT_ROLE:
            roles[pid] = role
        else:
            related.setdefault(pid, (set(), set(), set()))[source].add(value)
    empty = ((), (), ())
    return {
        pid: PersonFacts(
            id=pid,
            role=Role(role),
            school_ids=frozenset(related.get(pid, empty)[queries.FACT_SCHOOL]),
            group_ids=frozenset(related.get(pid, empty)[queries.FACT_GROUP]),
            child_ids=frozenset(related.get(pid, empty)[queries.FACT_CHILD]),
        )
        for pid, role in roles.items()
    }


async def require_people(executor: Executor, person_ids: Sequence[int]) -> list[PersonFacts]:
    """The facts of each of ``person_ids`` in order (once each), or person.not_found."""
    found = await facts(executor, person_ids)
    for pid in person_ids:
        if pid not in found:
            raise NotFound("person.not_found", person_id=pid)
    return [found[pid] for pid in dict.fromkeys(person_ids)]


async def child(executor: Executor, child_id: int | None) -> ChildFacts | None:
    """A student's facts (school, group, guardians), None without a child, or child.not_found."""
    if child_id is None:
        return None
    students = (await executor.execute(queries.STUDENT_FACTS, {"id": child_id})).all()
    if not students:
        raise NotFound("child.not_found", child_id=child_id)
    student = students[0]
    guardians = [row[0] for row in (await executor.execute(queries.CHILD_GUARDIANS, {"id": child_id})).all()]
    return ChildFacts(student.id, student.school_id, student.group_id, frozenset(guardians))


async def names(executor: Executor, person_ids: Iterable[int]) -> dict[int, Any]:
    """Id -> (id, name, role) of these people."""
    ids = set(person_ids)
    if not ids:
        return {}
    return {p.id: p for p in (await executor.execute(queries.NAMES, {"ids": sorted(ids)})).all()}


class People:
    """Who is signed in, and what a person sees of themselves and whom they may invite."""

    def __init__(self, *, settings: Settings, engine: AsyncEngine, sessions: async_sessionmaker) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = sessions

    async def authenticate(self, token: str | None) -> Actor:
        """The person behind an access token, if it is valid, unexpired and its
        session has not ended (R21: signed out, ended from another device, a
        password reset, a reused refresh credential)."""
        claims = auth.decode(self.settings.secret_key, token or "")
        async with direct.reading(self.engine) as connection:  # every new connection pays this
            rows = await connection.execute(queries.SIGNED_IN, {"id": claims.person_id, "sid": claims.session_id})
        person = rows[0] if rows else None
        if person is None:
            raise Unauthenticated("auth.unknown_person")
        if person.ended_at is not None:
            raise Unauthenticated("auth.revoked_token")
        return Actor(person.id, person.role, person.name, person.language, claims.token_id,
                     claims.session_id, claims.expires_at)

    async def set_language(self, actor: Actor, language: str) -> str:
        """R22: the language the person reads: every text the server writes for
        them from now on (errors, system messages, e-mails) is in it."""
        if language not in LANGUAGES:
            raise BadRequest("request.invalid_choice", field="language", expected=" | ".join(LANGUAGES),
                             got=language[:20])
        async with self.sessions() as session, session.begin():
            person = await session.get(Person, actor.id)
            if person is None:
                raise Unauthenticated("auth.unknown_person")
            person.language = language
        return language

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

    async def contacts(self, actor: Actor, child_id: int | None) -> list[dict[str, Any]]:
        """R2: the people ``actor`` may invite for ``child_id`` (or among staff)."""
        async with self.sessions() as session:
            actor_facts = (await require_people(session, [actor.id]))[0]
            the_child = await child(session, child_id)
            membership.check_actor_for_child(actor_facts, the_child)
            if the_child is not None:
                school_ids = {the_child.school_id}
            else:
                school_ids = set(actor_facts.school_ids)
            staff = (await session.execute(
                select(StaffSchool.person_id).where(StaffSchool.school_id.in_(school_ids)))).scalars().all()
            candidates = set(staff) | (set(the_child.guardian_ids) if the_child else set())
            candidates.discard(actor.id)
            found = await facts(session, candidates)
            allowed = [pid for pid, f in found.items() if membership.may_invite(actor_facts, the_child, f)]
            people = await names(session, allowed)
        return sorted((member_view(p) for p in people.values()), key=lambda p: (p["role"] != "teacher", p["name"]))
