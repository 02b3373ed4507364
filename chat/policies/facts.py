"""Plain values the policies decide on, built by the storage layer from rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol


class Role(str, Enum):
    PARENT = "parent"
    TEACHER = "teacher"
    STAFF = "staff"
    DIRECTION = "direction"
    TRANSPORT = "transport"


# R1: "school staff" are the people employed by the school: teachers, other
# staff and direction.  The transport operator is an outside company; its
# presence never satisfies R1.
SCHOOL_STAFF = frozenset({Role.TEACHER, Role.STAFF, Role.DIRECTION})


@dataclass(frozen=True)
class PersonFacts:
    id: int
    role: Role
    school_ids: frozenset[int] = field(default_factory=frozenset)
    # Teachers: the groups (classes) they teach.
    group_ids: frozenset[int] = field(default_factory=frozenset)
    # Guardians: the children they are linked to.
    child_ids: frozenset[int] = field(default_factory=frozenset)

    @property
    def is_school_staff(self) -> bool:
        return self.role in SCHOOL_STAFF


@dataclass(frozen=True)
class ChildFacts:
    id: int
    school_id: int
    group_id: int | None
    guardian_ids: frozenset[int]


class Caller(Protocol):
    """Who calls a use case: the signed-in person as the services read it (the
    web layer's actor satisfies it).  Services annotate with this instead of
    importing the class that builds it."""

    id: int
    role: str
    name: str
    language: str
