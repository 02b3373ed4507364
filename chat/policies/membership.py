"""Who may be in a conversation, and who may change that (R1, R2, R4, R5)."""

from __future__ import annotations

from typing import Iterable, Sequence

from chat.errors import BadRequest, Forbidden, NotFound, RuleViolation
from chat.policies.facts import ChildFacts, PersonFacts, Role
from chat.policies.text import check_no_control_characters, strip_bidi_controls

# A conversation is between a family and the school team around one child, or
# among staff.  50 people covers a whole class team plus both families many
# times over; wider audiences use announcements (R13) or collective sends (R14).
MAX_PARTICIPANTS = 50
# Long enough for "Sortie au musée — 3e année, groupe 302", short enough for a phone list.
MAX_NAME_CHARS = 100


def require_school_staff(members: Iterable[PersonFacts]) -> None:
    """R1: at least one school-staff member, at creation and after every change."""
    if not any(m.is_school_staff for m in members):
        raise RuleViolation("conversation.no_staff")


def may_invite(actor: PersonFacts, child: ChildFacts | None, invitee: PersonFacts) -> bool:
    """R2: may ``actor`` bring ``invitee`` into a conversation about ``child``?

    About a child, the eligible people are the staff who work with that child
    (teachers of the child's group, the school's other staff and direction)
    and the child's guardians — never the parents of other students.  Without
    a child (staff among themselves), only school staff sharing a school with
    the actor.
    """
    if child is None:
        return invitee.is_school_staff and bool(invitee.school_ids & actor.school_ids)
    if invitee.role is Role.PARENT:
        return invitee.id in child.guardian_ids
    if child.school_id not in invitee.school_ids:
        return False
    if invitee.role is Role.TEACHER:
        return child.group_id is not None and child.group_id in invitee.group_ids
    return invitee.role in (Role.STAFF, Role.DIRECTION)


def check_actor_for_child(actor: PersonFacts, child: ChildFacts | None) -> None:
    """A parent always acts for one of their own children; staff for a child of their school."""
    if actor.role is Role.PARENT:
        if child is None:
            raise BadRequest("conversation.child_required")
        if actor.id not in child.guardian_ids:
            raise RuleViolation("conversation.child_not_yours")
    elif child is not None and child.school_id not in actor.school_ids:
        raise NotFound("child.not_found", child_id=child.id)
    elif actor.role is Role.TRANSPORT:
        # The transport operator posts through the integration API (R12), not chats.
        raise Forbidden("forbidden")


def check_creation(actor: PersonFacts, child: ChildFacts | None, invitees: Sequence[PersonFacts]) -> None:
    """R1 + R2 for a new conversation created by ``actor`` with ``invitees``."""
    check_actor_for_child(actor, child)
    others = [p for p in invitees if p.id != actor.id]
    if not others:
        raise BadRequest("conversation.no_participants")
    if len(others) + 1 > MAX_PARTICIPANTS:
        raise BadRequest("conversation.too_many_participants", limit=MAX_PARTICIPANTS)
    for invitee in others:
        if not may_invite(actor, child, invitee):
            raise RuleViolation("conversation.invitee_not_allowed", person_id=invitee.id)
    require_school_staff([actor, *others])


def check_addition(
    actor: PersonFacts,
    child: ChildFacts | None,
    members: Sequence[PersonFacts],
    newcomers: Sequence[PersonFacts],
) -> None:
    """R4 (with R2's eligibility): any member may add eligible people."""
    if not newcomers:
        raise BadRequest("conversation.no_participants")
    member_ids = {m.id for m in members}
    for person in newcomers:
        if person.id in member_ids:
            raise BadRequest("conversation.already_member", person_id=person.id)
    if len(member_ids) + len({p.id for p in newcomers}) > MAX_PARTICIPANTS:
        raise BadRequest("conversation.too_many_participants", limit=MAX_PARTICIPANTS)
    for person in newcomers:
        if not may_invite(actor, child, person):
            raise RuleViolation("conversation.invitee_not_allowed", person_id=person.id)


def check_removal(actor_id: int, creator_id: int, target_id: int, members: Sequence[PersonFacts]) -> None:
    """R5: only the creator removes, never the last school-staff member (R1)."""
    if target_id == actor_id:
        raise BadRequest("conversation.use_leave")
    if actor_id != creator_id:
        raise RuleViolation("conversation.not_creator")
    if target_id not in {m.id for m in members}:
        raise BadRequest("conversation.not_participant", person_id=target_id)
    require_school_staff([m for m in members if m.id != target_id])


def check_departure(person_id: int, members: Sequence[PersonFacts]) -> None:
    """R5: anyone may leave, except the last school-staff member (R1)."""
    require_school_staff([m for m in members if m.id != person_id])


def check_name(name: str | None) -> str | None:
    """R3: a group conversation's name, trimmed; blank means no name.  Control
    characters are refused; bidirectional controls are removed, as from every
    name shown to members (chat.policies.text)."""
    if name is None:
        return None
    name = strip_bidi_controls(check_no_control_characters(name, "name")).strip()
    if len(name) > MAX_NAME_CHARS:
        raise BadRequest("conversation.name_too_long", limit=MAX_NAME_CHARS)
    return name or None


# A lock's reason is shown to every member beside the conversation (R10); a
# paragraph is enough to say why.
MAX_LOCK_REASON_CHARS = 500


def check_lock_reason(reason: str | None) -> str | None:
    """R10: the reason direction gives for a lock, if any, is at most a paragraph."""
    if reason is not None and len(reason) > MAX_LOCK_REASON_CHARS:
        raise BadRequest("request.invalid", detail=f"reason: {MAX_LOCK_REASON_CHARS} characters at most")
    return reason
