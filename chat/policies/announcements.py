"""Who may announce to whom (R13), and who may write to many families (R14).

Announcements are one-way posts to an audience: some groups (classes), a
whole school, or the whole organisation.  Teachers announce to the groups
they teach; other staff and direction to any group of their school or to the
school; the organisation-wide audience is direction's (a closure that spans
every school).  Parents and the transport operator never announce: the
operator's notices come through the integration API (R12).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from chat.errors import BadRequest, Forbidden
from chat.frames import is_int64
from chat.policies.facts import PersonFacts, Role

# An announcement is a notice, not a newsletter: 4,000 characters like a message.
MAX_ANNOUNCEMENT_CHARS = 4000
# Collective sends (R14) go to the families of at most this many students at once:
# a whole school of a thousand families fits; beyond, several sends.
MAX_COLLECTIVE_STUDENTS = 2000


@dataclass(frozen=True)
class Audience:
    groups: tuple[int, ...] = ()
    school: int | None = None
    organisation: int | None = None

    def describe(self) -> dict[str, Any]:
        if self.groups:
            return {"groups": list(self.groups)}
        if self.school is not None:
            return {"school": self.school}
        return {"organisation": self.organisation}


def parse_audience(raw: Any) -> Audience:
    """``{"groups": [ids]}``, ``{"school": id}`` or ``{"organisation": id}``; ids are
    64-bit (docs/protocol.md §1), like every id the database holds."""
    if not isinstance(raw, dict) or len(raw) != 1:
        raise BadRequest("announcement.audience_invalid")
    (key, value), = raw.items()
    if key == "groups" and isinstance(value, list) and value and len(value) <= 200 and all(
            is_int64(v) for v in value):
        return Audience(groups=tuple(dict.fromkeys(value)))
    if key in ("school", "organisation") and is_int64(value):
        return Audience(school=value) if key == "school" else Audience(organisation=value)
    raise BadRequest("announcement.audience_invalid")


def check_announcer(
    actor: PersonFacts, audience: Audience, group_schools: Mapping[int, int], school_orgs: Mapping[int, int]
) -> None:
    """R13: refuse with announcement.not_allowed unless ``actor`` may reach ``audience``.

    ``group_schools`` maps each audience group to its school (a missing group is
    unknown); ``school_orgs`` maps the actor's schools to their organisation.
    """
    def refuse() -> Forbidden:
        if audience.groups:
            label = "groups:" + ",".join(str(g) for g in audience.groups)
        elif audience.school is not None:
            label = f"school:{audience.school}"
        else:
            label = f"organisation:{audience.organisation}"
        return Forbidden("announcement.not_allowed", audience=label)

    if actor.role in (Role.PARENT, Role.TRANSPORT):
        raise refuse()
    if audience.groups:
        for group in audience.groups:
            if group not in group_schools:
                raise refuse()
            if actor.role is Role.TEACHER:
                if group not in actor.group_ids:
                    raise refuse()
            elif group_schools[group] not in actor.school_ids:
                raise refuse()
        return
    if audience.school is not None:
        if actor.role is Role.TEACHER or audience.school not in actor.school_ids:
            raise refuse()
        return
    if actor.role is not Role.DIRECTION or audience.organisation not in set(school_orgs.values()):
        raise refuse()


def check_collective(actor: PersonFacts, student_schools: Mapping[int, int], student_groups: Mapping[int, int | None]) -> None:
    """R14: teachers write to the families of their groups' students; other staff
    and direction to families of their school.  Parents and transport never."""
    if actor.role in (Role.PARENT, Role.TRANSPORT):
        raise Forbidden("forbidden")
    if not student_schools:
        raise BadRequest("request.invalid", detail="at least one student is needed")
    if len(student_schools) > MAX_COLLECTIVE_STUDENTS:
        raise BadRequest("request.invalid", detail=f"at most {MAX_COLLECTIVE_STUDENTS} students per send")
    for student, school in student_schools.items():
        if school not in actor.school_ids:
            raise Forbidden("collective.not_allowed", student_id=student)
        if actor.role is Role.TEACHER and student_groups.get(student) not in actor.group_ids:
            raise Forbidden("collective.not_allowed", student_id=student)
