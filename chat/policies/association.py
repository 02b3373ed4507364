"""R20: does what a parent typed match the child on file?  Pure.

A parent associates a child with the school organisation, the child's full
name and date of birth exactly as on file, and either the fiche number
(7 digits) or the permanent code (12 characters); or with a NIP the school
gave (checked by chat.accounts.children).  "Exactly" is read as a person
types: case, surrounding spaces and repeated spaces do not count; accents
do ("Lea" is not "Léa").  Whatever does not match, the answer is the same
(``child.no_match``), so that the form cannot be used to learn a child's
date of birth or number one field at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

FICHE = re.compile(r"\A[0-9]{7}\Z")  # ASCII digits; "$" would accept a trailing newline
CODE_PERMANENT = re.compile(r"\A[A-Z]{4}[0-9]{8}\Z")


@dataclass(frozen=True)
class OnFile:
    first_name: str
    last_name: str
    date_of_birth: date
    fiche: str
    code_permanent: str


@dataclass(frozen=True)
class Claim:
    first_name: str
    last_name: str
    date_of_birth: str
    fiche: str | None = None
    code_permanent: str | None = None


def normal_name(name: str) -> str:
    return re.sub(r"\s+", " ", name).strip().casefold()


def normal_number(value: str) -> str:
    return re.sub(r"[\s-]", "", value).upper()


def well_formed(claim: Claim) -> bool:
    """Exactly one number, of its shape (``child.one_number`` otherwise)."""
    if (claim.fiche is None) == (claim.code_permanent is None):
        return False
    if claim.fiche is not None:
        return bool(FICHE.match(normal_number(claim.fiche)))
    return bool(CODE_PERMANENT.match(normal_number(claim.code_permanent or "")))


def matches(on_file: OnFile, claim: Claim) -> bool:
    if claim.fiche is not None and normal_number(claim.fiche) != on_file.fiche:
        return False
    if claim.code_permanent is not None and normal_number(claim.code_permanent) != on_file.code_permanent:
        return False
    return (normal_name(claim.first_name) == normal_name(on_file.first_name)
            and normal_name(claim.last_name) == normal_name(on_file.last_name)
            and claim.date_of_birth.strip() == on_file.date_of_birth.isoformat())
