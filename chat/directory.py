"""The school directory, loaded from JSON: organisations, schools, groups, staff,
students and guardians.

The whole file is checked before anything is written, then loaded in one
transaction: a bad fiche number, an unknown school or a duplicate e-mail stops
the load with an error naming the place (``directory.invalid``), and nothing
is changed.  Loading again updates by natural key (codes, e-mails, fiche
numbers), so a school board can re-export and reload.  No text in the file may
hold a control character, and names are stored without bidirectional controls
(chat.policies.text).

The format (docs/operations.md has a full example)::

    {"organisations": [{"code", "name"}],
     "schools":  [{"code", "organisation", "name", "timezone"?, "working_hours"?,
                   "features"?, "notice_fr"?, "notice_en"?}],
     "groups":   [{"code", "school", "name"}],
     "staff":    [{"email", "name", "role", "schools": [...], "groups"?: [...], "language"?}],
     "students": [{"fiche", "code_permanent", "first_name", "last_name",
                   "date_of_birth", "school", "group"?}],
     "guardians":[{"email", "name", "students": [fiche, ...], "language"?, "associated"?}]}

A guardian entry puts the e-mail **on file** for those students (R20); the
parent sees a child only once they associate it in the widget
(chat.accounts.children).  ``"associated": true`` associates them at once:
for a migration from a portal where parents already did, and for the demo.
A reload that no longer lists a student for a guardian ends that
association too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import delete, select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from chat.errors import BadRequest
from chat.i18n import LANGUAGES
from chat.policies import features
from chat.policies.association import CODE_PERMANENT, FICHE
from chat.policies.facts import Role
from chat.policies.text import refused_character, strip_bidi_controls
from chat.policies.working_hours import parse_schedule
from chat.storage.db import session_factory
from chat.storage.models import (
    Group,
    GuardianOnFile,
    Guardianship,
    Organisation,
    Person,
    School,
    StaffSchool,
    Student,
    TeacherGroup,
)

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
STAFF_ROLES = {Role.TEACHER.value, Role.STAFF.value, Role.DIRECTION.value, Role.TRANSPORT.value}
DEFAULT_WORKING_HOURS = {day: [["08:00", "16:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}
# The names people see, per list: stored without bidirectional controls (chat.policies.text).
NAME_FIELDS = {"organisations": ("name",), "schools": ("name",), "groups": ("name",), "staff": ("name",),
               "students": ("first_name", "last_name"), "guardians": ("name",)}


def invalid(where: str, problem: str) -> BadRequest:
    return BadRequest("directory.invalid", where=where, problem=problem)


def _text(item: dict[str, Any], key: str, where: str, limit: int = 200) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"{where}.{key}", "a non-empty string is required")
    if len(value) > limit:
        raise invalid(f"{where}.{key}", f"at most {limit} characters")
    return value.strip()


def _list(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise invalid(key, "expected a list of objects")
    return value


def _language(item: dict[str, Any], where: str) -> str:
    language = item.get("language", "fr")
    if language not in LANGUAGES:
        raise invalid(f"{where}.language", f"expected one of {', '.join(LANGUAGES)}, got {language!r}")
    return language


def _check_characters(value: Any, where: str) -> None:
    """No text anywhere in the file holds a control character: the rule of every
    text that enters the hub, the same on SQLite and PostgreSQL (chat.policies.text)."""
    if isinstance(value, str):
        character = refused_character(value)
        if character is not None:
            raise invalid(where, f"control character {character} (only tab, line feed and carriage return are allowed)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_characters(str(key), where)
            _check_characters(item, f"{where}.{key}" if where != "(root)" else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_characters(item, f"{where}[{i}]")


def _without_bidi_controls(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` whose names have no bidirectional controls ("‮gnp.exe"
    would read "exe.png" to every member); the caller's objects are left as they are."""
    cleaned = dict(data)
    for key, fields in NAME_FIELDS.items():
        items = data.get(key)
        if isinstance(items, list):
            cleaned[key] = [
                {**item, **{f: strip_bidi_controls(item[f]) for f in fields if isinstance(item.get(f), str)}}
                if isinstance(item, dict) else item for item in items]
    return cleaned


@dataclass
class Directory:
    """A checked directory, ready to load."""

    data: dict[str, Any]


def validate(data: Any) -> Directory:
    """Check the whole directory; raise ``directory.invalid`` at the first problem.
    The directory returned has its names without bidirectional controls."""
    if not isinstance(data, dict):
        raise invalid("(root)", "expected a JSON object")
    _check_characters(data, "(root)")
    data = _without_bidi_controls(data)
    orgs: set[str] = set()
    for i, org in enumerate(_list(data, "organisations")):
        code = _text(org, "code", f"organisations[{i}]", 64)
        _text(org, "name", f"organisations[{i}]")
        if code in orgs:
            raise invalid(f"organisations[{i}].code", f"duplicate code {code!r}")
        orgs.add(code)
    schools: set[str] = set()
    for i, school in enumerate(_list(data, "schools")):
        where = f"schools[{i}]"
        code = _text(school, "code", where, 64)
        _text(school, "name", where)
        if code in schools:
            raise invalid(f"{where}.code", f"duplicate code {code!r}")
        if school.get("organisation") not in orgs:
            raise invalid(f"{where}.organisation", f"unknown organisation {school.get('organisation')!r}")
        try:
            ZoneInfo(school.get("timezone", "America/Toronto"))
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise invalid(f"{where}.timezone", f"unknown timezone {school.get('timezone')!r}") from None
        for key in ("notice_fr", "notice_en"):
            if not isinstance(school.get(key, ""), str):
                raise invalid(f"{where}.{key}", "a string is required")
        school_features = school.get("features")
        if school_features is not None:
            if not isinstance(school_features, list) or not all(isinstance(f, str) for f in school_features):
                raise invalid(f"{where}.features", "expected a list of feature names")
            if features.unknown(school_features):
                raise invalid(f"{where}.features", f"unknown features {features.unknown(school_features)}")
        if school.get("working_hours") is not None:
            parse_schedule(school["working_hours"], f"{where}.working_hours")  # R15
        closed = school.get("closed_days", [])
        if not isinstance(closed, list):
            raise invalid(f"{where}.closed_days", 'expected a list of "YYYY-MM-DD" or ["from", "to"]')
        for n, item in enumerate(closed):
            bounds = [item] if isinstance(item, str) else item
            try:
                if not isinstance(bounds, list) or len(bounds) not in (1, 2) or len(bounds) == 2 and \
                        date.fromisoformat(bounds[0]) > date.fromisoformat(bounds[1]):
                    raise ValueError
                for day in bounds:
                    date.fromisoformat(day)
            except (TypeError, ValueError):
                raise invalid(f"{where}.closed_days[{n}]", f'expected "YYYY-MM-DD" or ["from", "to"], got {item!r}') from None
        schools.add(code)
    groups: dict[str, str] = {}
    for i, group in enumerate(_list(data, "groups")):
        where = f"groups[{i}]"
        code = _text(group, "code", where, 64)
        _text(group, "name", where)
        if code in groups:
            raise invalid(f"{where}.code", f"duplicate code {code!r}")
        if group.get("school") not in schools:
            raise invalid(f"{where}.school", f"unknown school {group.get('school')!r}")
        groups[code] = group["school"]
    emails: set[str] = set()

    def check_email(item: dict[str, Any], where: str) -> None:
        email = _text(item, "email", where, 254).lower()
        if not EMAIL.match(email):
            raise invalid(f"{where}.email", f"not an e-mail address: {email!r}")
        if email in emails:
            raise invalid(f"{where}.email", f"duplicate e-mail {email!r}")
        emails.add(email)

    for i, person in enumerate(_list(data, "staff")):
        where = f"staff[{i}]"
        check_email(person, where)
        _text(person, "name", where)
        _language(person, where)
        if person.get("role") not in STAFF_ROLES:
            raise invalid(f"{where}.role", f"expected one of {sorted(STAFF_ROLES)}, got {person.get('role')!r}")
        person_schools = person.get("schools")
        if not isinstance(person_schools, list) or not person_schools:
            raise invalid(f"{where}.schools", "a staff member belongs to at least one school")
        for code in person_schools:
            if code not in schools:
                raise invalid(f"{where}.schools", f"unknown school {code!r}")
        if person.get("working_hours") is not None:
            parse_schedule(person["working_hours"], f"{where}.working_hours")  # R15: own hours
        for code in person.get("groups", []):
            if code not in groups:
                raise invalid(f"{where}.groups", f"unknown group {code!r}")
            if groups[code] not in person_schools:
                raise invalid(f"{where}.groups", f"group {code!r} is not in one of this person's schools")
    fiches: set[str] = set()
    codes: set[str] = set()
    for i, student in enumerate(_list(data, "students")):
        where = f"students[{i}]"
        fiche = str(student.get("fiche", ""))
        if not FICHE.match(fiche):
            raise invalid(f"{where}.fiche", f"a fiche number is 7 digits, got {fiche!r}")
        if fiche in fiches:
            raise invalid(f"{where}.fiche", f"duplicate fiche number {fiche!r}")
        fiches.add(fiche)
        code = str(student.get("code_permanent", ""))
        if not CODE_PERMANENT.match(code):
            raise invalid(f"{where}.code_permanent", f"a permanent code is 4 capital letters and 8 digits, got {code!r}")
        if code in codes:
            raise invalid(f"{where}.code_permanent", f"duplicate permanent code {code!r}")
        codes.add(code)
        _text(student, "first_name", where, 100)
        _text(student, "last_name", where, 100)
        try:
            date.fromisoformat(str(student.get("date_of_birth")))
        except ValueError:
            raise invalid(f"{where}.date_of_birth", f"expected YYYY-MM-DD, got {student.get('date_of_birth')!r}") from None
        if student.get("school") not in schools:
            raise invalid(f"{where}.school", f"unknown school {student.get('school')!r}")
        group = student.get("group")
        if group is not None and groups.get(group) != student["school"]:
            raise invalid(f"{where}.group", f"unknown group {group!r} in school {student['school']!r}")
    for i, guardian in enumerate(_list(data, "guardians")):
        where = f"guardians[{i}]"
        check_email(guardian, where)
        _text(guardian, "name", where)
        _language(guardian, where)
        if not isinstance(guardian.get("associated", False), bool):
            raise invalid(f"{where}.associated", "true or false")
        linked = guardian.get("students")
        if not isinstance(linked, list) or not linked:
            raise invalid(f"{where}.students", "a guardian is linked to at least one student (fiche numbers)")
        for fiche in linked:
            if str(fiche) not in fiches:
                raise invalid(f"{where}.students", f"unknown fiche number {fiche!r}")
    return Directory(data)


async def load(engine: AsyncEngine, directory: Directory) -> dict[str, int]:
    """Write a validated directory in one transaction; returns counts per kind."""
    try:
        return await _write(engine, directory.data)
    except (IntegrityError, DataError) as exc:
        # The file is valid on its own but conflicts with rows already loaded (e.g. a
        # permanent code that belongs to another student); the transaction is rolled back.
        raise invalid("(database)", f"conflicts with the rows already loaded: {exc.orig}") from None


async def _write(engine: AsyncEngine, data: dict[str, Any]) -> dict[str, int]:
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        async def upsert(model, key: str, value: Any, **fields: Any):
            row = (await session.execute(select(model).where(getattr(model, key) == value))).scalar_one_or_none()
            if row is None:
                row = model(**{key: value}, **fields)
                session.add(row)
            else:
                for name, field_value in fields.items():
                    setattr(row, name, field_value)
            await session.flush()
            return row

        org_ids = {}
        for org in data.get("organisations", []):
            org_ids[org["code"]] = (await upsert(Organisation, "code", org["code"], name=org["name"])).id
        school_ids = {}
        for s in data.get("schools", []):
            row = await upsert(
                School, "code", s["code"], organisation_id=org_ids[s["organisation"]], name=s["name"],
                timezone=s.get("timezone", "America/Toronto"),
                working_hours=json.dumps(s.get("working_hours") or DEFAULT_WORKING_HOURS),
                closed_days=json.dumps(s.get("closed_days", [])),
                features=json.dumps(s.get("features")),  # null: every feature on (R18)
                notice_fr=s.get("notice_fr", ""), notice_en=s.get("notice_en", ""),
            )
            school_ids[s["code"]] = row.id
        group_ids = {}
        for g in data.get("groups", []):
            group_ids[g["code"]] = (await upsert(Group, "code", g["code"], school_id=school_ids[g["school"]],
                                                  name=g["name"])).id
        for p in data.get("staff", []):
            person = await upsert(Person, "email", p["email"].lower(), name=p["name"], role=p["role"],
                                  language=p.get("language", "fr"),
                                  working_hours=json.dumps(p["working_hours"]) if p.get("working_hours") else None)
            await session.execute(delete(StaffSchool).where(StaffSchool.person_id == person.id))
            await session.execute(delete(TeacherGroup).where(TeacherGroup.person_id == person.id))
            for code in p["schools"]:
                session.add(StaffSchool(person_id=person.id, school_id=school_ids[code]))
            for code in p.get("groups", []):
                session.add(TeacherGroup(person_id=person.id, group_id=group_ids[code]))
        student_ids = {}
        for s in data.get("students", []):
            school_code = s["school"]
            org_code = next(x["organisation"] for x in data["schools"] if x["code"] == school_code)
            row = (await session.execute(select(Student).where(
                Student.organisation_id == org_ids[org_code], Student.fiche == str(s["fiche"])))).scalar_one_or_none()
            fields = dict(
                organisation_id=org_ids[org_code], school_id=school_ids[school_code],
                group_id=group_ids.get(s.get("group")), first_name=s["first_name"], last_name=s["last_name"],
                date_of_birth=date.fromisoformat(s["date_of_birth"]), code_permanent=s["code_permanent"],
            )
            if row is None:
                row = Student(fiche=str(s["fiche"]), **fields)
                session.add(row)
            else:
                for name, value in fields.items():
                    setattr(row, name, value)
            await session.flush()
            student_ids[str(s["fiche"])] = row.id
        for g in data.get("guardians", []):
            person = await upsert(Person, "email", g["email"].lower(), name=g["name"], role=Role.PARENT.value,
                                  language=g.get("language", "fr"))
            on_file = {student_ids[str(fiche)] for fiche in g["students"]}
            await session.execute(delete(GuardianOnFile).where(GuardianOnFile.person_id == person.id))
            await session.execute(delete(Guardianship).where(Guardianship.person_id == person.id,
                                                             Guardianship.student_id.not_in(on_file)))
            associated = set((await session.execute(select(Guardianship.student_id).where(
                Guardianship.person_id == person.id))).scalars())
            for student_id in sorted(on_file):
                session.add(GuardianOnFile(person_id=person.id, student_id=student_id))
                if g.get("associated") and student_id not in associated:
                    session.add(Guardianship(person_id=person.id, student_id=student_id))
    return {key: len(data.get(key, [])) for key in ("organisations", "schools", "groups", "staff", "students", "guardians")}


def read_file(path: Path) -> Directory:
    """Parse and validate a directory file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise invalid(str(path), f"not valid JSON: {exc}") from None
    return validate(data)
