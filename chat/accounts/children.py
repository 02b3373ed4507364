"""R20: a parent associates a child; a school issues NIPs.

A parent sees a child (conversations, announcements, the feed) once a
``guardianship`` row links them, and only this module writes one for a
person: when what they typed matches the child on file
(chat.policies.association) or is a live NIP for that child, **and** the
school has the parent's e-mail on file as a guardian of that child
(``guardianonfile``, from ``directory load``).  Every attempt is throttled
and audited; a refusal says only ``child.no_match``.

NIPs: 10 characters from an alphabet without look-alikes (about 47 bits),
stored as an HMAC keyed from ``SECRET_KEY``, valid :data:`NIP_DAYS` days by
default and once: a school gives one per child and family, on paper.
"""

from __future__ import annotations

import secrets
from datetime import date
from typing import Any

from sqlalchemy import select

from chat.accounts.hashing import Keyed
from chat.accounts.service import Client
from chat.accounts.throttle import Throttle
from chat.clock import Clock
from chat.errors import BadRequest, Forbidden, NotFound, RuleViolation
from chat.people import Actor
from chat.policies import association
from chat.policies.association import Claim, OnFile
from chat.policies.facts import Role
from chat.schools import audit
from chat.storage.models import GuardianOnFile, Guardianship, Nip, Organisation, School, Student

NIP_ALPHABET = "ACDEFGHJKLMNPQRTUVWXY34679"
NIP_LENGTH = 10
NIP_DAYS = 60


def new_nip() -> str:
    return "".join(secrets.choice(NIP_ALPHABET) for _ in range(NIP_LENGTH))


class Children:
    def __init__(self, *, sessions: Any, clock: Clock, throttle: Throttle, secret_key: str) -> None:
        self.sessions = sessions
        self.clock = clock
        self.throttle = throttle
        self.keyed = Keyed(secret_key, "nip")

    async def associate(self, actor: Actor, fields: dict[str, Any], client: Client) -> dict[str, Any]:
        """Associate the child ``fields`` describe (or whose NIP they give) with ``actor``."""
        if actor.role != Role.PARENT.value:
            raise Forbidden("forbidden")
        nip = fields.get("nip")
        claim = None
        if nip is None:
            claim = Claim(first_name=fields["first_name"], last_name=fields["last_name"],
                          date_of_birth=fields["date_of_birth"], fiche=fields.get("fiche"),
                          code_permanent=fields.get("code_permanent"))
            if not association.well_formed(claim):
                raise BadRequest("child.one_number")
        await self.throttle.check("child", f"person:{actor.id}", client.address)
        now = self.clock.time()
        async with self.sessions() as session, session.begin():
            if claim is not None:
                student, reason = await self._by_details(session, fields["organisation"], claim)
            else:
                student, reason = await self._by_nip(session, nip, now)
            if student is not None and await session.get(GuardianOnFile, (actor.id, student.id)) is None:
                student, reason = None, "not_on_file"
            if student is None:
                audit(session, actor, None, "child.association_refused", f"person:{actor.id}",
                      way="nip" if claim is None else ("fiche" if claim.fiche else "code_permanent"), reason=reason)
            else:
                if claim is None:
                    used = (await session.execute(select(Nip).where(Nip.nip_hash == self._nip_hash(nip))
                                                  .with_for_update())).scalar_one()
                    used.used_at, used.used_by = now, actor.id
                if await session.get(Guardianship, (actor.id, student.id)) is None:
                    session.add(Guardianship(person_id=actor.id, student_id=student.id))
                audit(session, actor, student.school_id, "child.associated", f"student:{student.id}",
                      way="nip" if claim is None else ("fiche" if claim.fiche else "code_permanent"))
                school = await session.get(School, student.school_id)
        if student is None:
            raise RuleViolation("child.no_match")
        return {"child": {"id": student.id, "name": f"{student.first_name} {student.last_name}",
                          "school": school.name}}

    async def _by_details(self, session: Any, organisation: str, claim: Claim) -> tuple[Student | None, str]:
        query = select(Student).join(Organisation, Organisation.id == Student.organisation_id).where(
            Organisation.code == organisation.strip())
        if claim.fiche is not None:
            query = query.where(Student.fiche == association.normal_number(claim.fiche))
        else:
            query = query.where(Student.code_permanent == association.normal_number(claim.code_permanent or ""))
        student = (await session.execute(query)).scalar_one_or_none()
        if student is None:
            return None, "number"
        on_file = OnFile(student.first_name, student.last_name, student.date_of_birth, student.fiche,
                         student.code_permanent)
        if not association.matches(on_file, claim):
            return None, "details"
        return student, ""

    async def _by_nip(self, session: Any, nip: str, now: float) -> tuple[Student | None, str]:
        row = (await session.execute(select(Nip).where(Nip.nip_hash == self._nip_hash(nip)))).scalar_one_or_none()
        if row is None:
            return None, "nip"
        if row.used_at is not None or row.expires_at <= now:
            return None, "nip_spent"
        return await session.get(Student, row.student_id), ""

    def _nip_hash(self, nip: str) -> str:
        return self.keyed.digest(association.normal_number(nip))

    async def issue_nip(self, organisation: str, fiche: str, days: float = NIP_DAYS) -> dict[str, Any]:
        """A new NIP for the student with ``fiche`` in ``organisation`` (the operator's
        ``directory nip``); shown once, stored hashed."""
        now = self.clock.time()
        async with self.sessions() as session, session.begin():
            student = (await session.execute(select(Student).join(
                Organisation, Organisation.id == Student.organisation_id).where(
                Organisation.code == organisation, Student.fiche == fiche))).scalar_one_or_none()
            if student is None:
                raise NotFound("child.not_found", child_id=fiche)
            nip = new_nip()
            session.add(Nip(student_id=student.id, nip_hash=self._nip_hash(nip), created_at=now,
                            expires_at=now + days * 86400))
            audit(session, None, student.school_id, "child.nip_issued", f"student:{student.id}", days=days)
        return {"nip": nip, "student": f"{student.first_name} {student.last_name}",
                "expires": date.fromtimestamp(now + days * 86400).isoformat()}
