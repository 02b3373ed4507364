"""What the benchmark loads and sends: a generated directory, tokens, a padded PDF.

The directory (``chat.directory`` JSON format) has one organisation and:

* one fan-out school per tier (``FAN-1000``, ``FAN-5000``, ``FAN-10000``), whose N
  students each have exactly one guardian: an announcement to the school reaches
  exactly N families.  Families are nested (guardian j has a child in every
  school of a tier above j), so connecting guardians 0…N-1 brings exactly the
  N families of ``FAN-N`` online;
* one conversation school (``CONV``) with groups of ten students, a teacher per
  group and a pool of other staff: conversations of 2–5 people (a parent, the
  child's teacher, and 0–3 staff members; R1 and R2 allow exactly these);
* one direction member for every school, who posts the announcements and the
  collective send.

Tokens are minted in-process with :func:`chat.auth.mint` and the ``SECRET_KEY``
the servers are started with: that is the hub's real token format (HS256 JWT,
audience ``chat-hub``), the one the sign-in flow hands out.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ORG = "BENCH"
DIRECTION = "direction@bench.test"
FAN_GROUP_SIZE = 100
CONV_GROUP_SIZE = 10


def fan_school(n: int) -> str:
    return f"FAN-{n}"


def build_directory(tiers: list[int], conv_families: int, conv_staff: int) -> dict[str, Any]:
    """The directory as ``chat.directory`` loads it (see the module docstring).

    Fan-out families are nested: guardian ``j`` has one child in every fan-out
    school whose tier is above ``j``.  Connecting guardians 0…N-1 therefore puts
    exactly the N families of school ``FAN-N`` online, and the tiers are reached
    by connecting more guardians, not by starting over."""
    schools = [fan_school(n) for n in tiers] + ["CONV"]
    data: dict[str, Any] = {
        "organisations": [{"code": ORG, "name": "Centre de services scolaire Banc d'essai"}],
        "schools": [{"code": code, "organisation": ORG, "name": f"École {code}", "timezone": "America/Toronto"}
                    for code in schools],
        "groups": [], "staff": [], "students": [], "guardians": [],
    }
    data["staff"].append({"email": DIRECTION, "name": "Direction Banc", "role": "direction", "schools": schools})
    fiche = 1000000

    def add_student(school: str, group: str) -> str:
        nonlocal fiche
        fiche += 1
        data["students"].append({
            "fiche": f"{fiche:07d}", "code_permanent": f"BNCH{fiche:08d}", "first_name": "Élève",
            "last_name": f"N{fiche}", "date_of_birth": "2015-06-01", "school": school, "group": group})
        return f"{fiche:07d}"

    fan_children: list[list[str]] = [[] for _ in range(max(tiers, default=0))]
    for n in tiers:
        school = fan_school(n)
        for j in range(n):
            if j % FAN_GROUP_SIZE == 0:
                group = f"{school}-G{j // FAN_GROUP_SIZE}"
                data["groups"].append({"code": group, "school": school, "name": f"Groupe {j // FAN_GROUP_SIZE}"})
            fan_children[j].append(add_student(school, group))
    for j, children in enumerate(fan_children):
        data["guardians"].append({"email": fan_guardian(j), "name": f"Parent F{j}", "students": children,
                                  "associated": True})
    for i in range(conv_families):
        if i % CONV_GROUP_SIZE == 0:
            k = i // CONV_GROUP_SIZE
            group = f"CONV-G{k}"
            data["groups"].append({"code": group, "school": "CONV", "name": f"Groupe {k}"})
            data["staff"].append({"email": f"teacher{k}@bench.test", "name": f"Enseignant {k}", "role": "teacher",
                                  "schools": ["CONV"], "groups": [group]})
        child = add_student("CONV", group)
        data["guardians"].append({"email": f"parent{child}@bench.test", "name": f"Parent {child}",
                                  "students": [child], "associated": True})
    for k in range(conv_staff):
        data["staff"].append({"email": f"staff{k}@bench.test", "name": f"Personnel {k}", "role": "staff",
                              "schools": ["CONV"]})
    return data


def fan_guardian(j: int) -> str:
    return f"family{j}@bench.test"


def write_directory(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


@dataclass
class People:
    """Ids read back from the loaded database."""

    person_by_email: dict[str, tuple[int, str]] = field(default_factory=dict)  # email -> (id, role)
    school_by_code: dict[str, int] = field(default_factory=dict)
    student_by_fiche: dict[str, int] = field(default_factory=dict)
    student_school: dict[int, str] = field(default_factory=dict)  # student id -> school code
    student_group: dict[int, str] = field(default_factory=dict)  # student id -> group code
    guardians_of: dict[int, list[int]] = field(default_factory=dict)  # student id -> person ids

    def id(self, email: str) -> int:
        return self.person_by_email[email][0]

    def families(self, school: str) -> list[tuple[int, int]]:
        """(guardian person id, student id) of every student of a school, by student id."""
        return [(self.guardians_of[s][0], s) for s in sorted(self.student_school)
                if self.student_school[s] == school and self.guardians_of.get(s)]


async def read_people(database_url: str) -> People:
    """Read the ids the hub gave the directory rows (through the hub's own models)."""
    from sqlalchemy import select

    from chat.config import load_settings
    from chat.storage.db import create_engine, session_factory
    from chat.storage.models import Group, Guardianship, Person, School, Student

    settings = load_settings({"DATABASE_URL": database_url, "SECRET_KEY": "x" * 32})
    engine = create_engine(settings.database_url)
    people = People()
    try:
        async with session_factory(engine)() as session:
            for pid, email, role in (await session.execute(select(Person.id, Person.email, Person.role))).all():
                people.person_by_email[email] = (pid, role)
            schools = dict((await session.execute(select(School.id, School.code))).all())
            people.school_by_code = {code: sid for sid, code in schools.items()}
            groups = dict((await session.execute(select(Group.id, Group.code))).all())
            for sid, fiche, school_id, group_id in (await session.execute(
                    select(Student.id, Student.fiche, Student.school_id, Student.group_id))).all():
                people.student_by_fiche[fiche] = sid
                people.student_school[sid] = schools[school_id]
                people.student_group[sid] = groups.get(group_id, "")
            for pid, sid in (await session.execute(select(Guardianship.person_id, Guardianship.student_id))).all():
                people.guardians_of.setdefault(sid, []).append(pid)
    finally:
        await engine.dispose()
    return people


async def mint_tokens(secret: str, database_url: str, people: People, emails: list[str],
                      ttl: int = 6 * 3600) -> dict[int, str]:
    """person id → access token, each in a session of its own written into the database
    (chat.accounts.sessions) and minted exactly as the hub's sign-in does (chat.auth.mint);
    ``ttl`` outlives a whole run."""
    import time

    from chat import auth
    from chat.accounts import sessions
    from chat.storage.db import create_engine, session_factory

    engine = create_engine(database_url)
    tokens = {}
    try:
        async with session_factory(engine)() as session, session.begin():
            for email in emails:
                pid, role = people.person_by_email[email]
                issued = sessions.start(session, pid, "bench", time.time(), ttl)
                tokens[pid] = auth.mint(secret, pid, role, ttl, issued.session_id)
    finally:
        await engine.dispose()
    return tokens


def plan_conversations(people: People, count: int, seed: int = 6) -> list[tuple[int, int, list[int]]]:
    """``count`` conversations in the CONV school: (creating parent, child, invitees).

    Sizes cycle 2, 3, 4, 5 (mean 3.5): the parent, the child's teacher, then 0–3
    staff members drawn so that each staff member is in about as many conversations
    as each teacher (nobody's send rate approaches the per-connection limit)."""
    rng = random.Random(seed)
    families = people.families("CONV")[:count]
    teachers = {}
    staff = []
    for email, (pid, role) in people.person_by_email.items():
        if role == "teacher" and email.startswith("teacher"):
            teachers[f"CONV-G{email[len('teacher'):].split('@')[0]}"] = pid
        elif role == "staff" and email.startswith("staff"):
            staff.append(pid)
    plan = []
    for i, (parent, student) in enumerate(families):
        size = 2 + i % 4
        invitees = [teachers[people.student_group[student]]] + rng.sample(staff, size - 2)
        plan.append((parent, student, invitees))
    return plan


def padded_pdf(size: int) -> bytes:
    """A valid one-page PDF of exactly ``size`` bytes: its content stream is padded
    with spaces (whitespace in a content stream is legal and carries no names, so
    the hub's active-content scan finds nothing to refuse)."""
    head = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << >> >>",
    ]

    def assemble(pad: int) -> bytes:
        content = b"BT ET\n" + b" " * pad
        body = bytearray(head)
        offsets = []
        for number, obj in enumerate(objects, 1):
            offsets.append(len(body))
            body += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
        offsets.append(len(body))
        body += b"4 0 obj\n<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream\nendobj\n"
        xref = len(body)
        body += b"xref\n0 5\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o for o in offsets)
        body += b"trailer\n<< /Size 5 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref
        return bytes(body)

    small = assemble(0)
    pad = size - len(small)
    result = assemble(pad)
    # The /Length and startxref digits can grow with the padding: settle in a few steps.
    for _ in range(4):
        if len(result) == size:
            break
        pad += size - len(result)
        result = assemble(pad)
    return result
