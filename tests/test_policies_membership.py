"""Who may be in a conversation, and who may change that (R1, R2, R3, R4, R5).

Pure policy tests (STYLE.md): plain PersonFacts / ChildFacts values in, a
decision or a domain error out; no database, no server.
"""

from __future__ import annotations

import pytest

from chat.errors import BadRequest, ChatError, Forbidden, NotFound, RuleViolation
from chat.policies.facts import ChildFacts, PersonFacts, Role
from chat.policies.membership import (
    MAX_NAME_CHARS,
    MAX_PARTICIPANTS,
    check_addition,
    check_creation,
    check_departure,
    check_name,
    check_removal,
    may_invite,
    require_school_staff,
)

# Two schools, as in the demo board: Érables (1) with groups 201 and 301, Fleuve (2) with group 101.
ERABLES, FLEUVE = 1, 2
GROUP_201, GROUP_301, GROUP_FLE_101 = 201, 301, 1101

MARIE = PersonFacts(1, Role.PARENT, child_ids=frozenset({100, 200}))   # Léa's and Noah's mother
JEAN = PersonFacts(2, Role.PARENT, child_ids=frozenset({100}))         # Léa's father (separated)
OTHER_PARENT = PersonFacts(3, Role.PARENT, child_ids=frozenset({101}))  # parent of a classmate of Léa
NADIA = PersonFacts(10, Role.TEACHER, frozenset({ERABLES}), frozenset({GROUP_301}))  # teaches Léa's group
PAUL = PersonFacts(11, Role.TEACHER, frozenset({ERABLES}), frozenset({GROUP_201}))   # teaches another group
SECRETARIAT = PersonFacts(12, Role.STAFF, frozenset({ERABLES}))
DIRECTION = PersonFacts(13, Role.DIRECTION, frozenset({ERABLES}))
DIRECTION_FLEUVE = PersonFacts(14, Role.DIRECTION, frozenset({FLEUVE}))
STAFF_FLEUVE = PersonFacts(15, Role.STAFF, frozenset({FLEUVE}))
TEACHER_FLEUVE = PersonFacts(16, Role.TEACHER, frozenset({FLEUVE}), frozenset({GROUP_FLE_101}))
TRANSPORT = PersonFacts(17, Role.TRANSPORT, frozenset({ERABLES, FLEUVE}))

LEA = ChildFacts(100, ERABLES, GROUP_301, frozenset({MARIE.id, JEAN.id}))
CLASSMATE = ChildFacts(101, ERABLES, GROUP_301, frozenset({OTHER_PARENT.id}))
UNGROUPED = ChildFacts(102, ERABLES, None, frozenset({OTHER_PARENT.id}))


def staff_of_erables(count: int, first_id: int = 1000) -> list[PersonFacts]:
    return [PersonFacts(first_id + i, Role.STAFF, frozenset({ERABLES})) for i in range(count)]


def refusal(call, *args) -> ChatError:
    with pytest.raises(ChatError) as info:
        call(*args)
    return info.value


# --- R1: at least one school-staff member ---------------------------------------------


@pytest.mark.parametrize("staff", [NADIA, SECRETARIAT, DIRECTION], ids=["teacher", "staff", "direction"])
def test_r1_each_school_staff_role_satisfies_the_staff_rule(staff):
    require_school_staff([MARIE, staff])  # no error


def test_r1_parents_only_are_refused():
    error = refusal(require_school_staff, [MARIE, JEAN])
    assert isinstance(error, RuleViolation)
    assert error.code == "conversation.no_staff"


def test_r1_transport_operator_does_not_count_as_school_staff():
    assert refusal(require_school_staff, [MARIE, TRANSPORT]).code == "conversation.no_staff"


def test_r1_nobody_at_all_is_refused():
    assert refusal(require_school_staff, []).code == "conversation.no_staff"


# --- R2: whom a parent may invite about a child ---------------------------------------


def test_r2_teacher_of_the_childs_group_may_be_invited():
    assert may_invite(MARIE, LEA, NADIA) is True


def test_r2_teacher_of_another_group_may_not_be_invited():
    assert may_invite(MARIE, LEA, PAUL) is False


def test_r2_teacher_may_not_be_invited_for_a_child_without_a_group():
    assert may_invite(OTHER_PARENT, UNGROUPED, NADIA) is False


@pytest.mark.parametrize("staff", [SECRETARIAT, DIRECTION], ids=["staff", "direction"])
def test_r2_staff_and_direction_of_the_childs_school_may_be_invited(staff):
    assert may_invite(MARIE, LEA, staff) is True


@pytest.mark.parametrize("staff", [DIRECTION_FLEUVE, STAFF_FLEUVE, TEACHER_FLEUVE],
                         ids=["direction", "staff", "teacher"])
def test_r2_staff_of_another_school_may_not_be_invited(staff):
    assert may_invite(MARIE, LEA, staff) is False


def test_r2_childs_other_guardian_may_be_invited():
    assert may_invite(MARIE, LEA, JEAN) is True


def test_r2_parent_of_another_student_is_never_invited():
    assert may_invite(MARIE, LEA, OTHER_PARENT) is False


def test_r2_parent_of_another_student_is_not_invited_by_staff_either():
    assert may_invite(NADIA, LEA, OTHER_PARENT) is False


def test_r2_transport_operator_is_not_invited_into_a_childs_conversation():
    # R12: the operator's messages come through the integration API, not as a member.
    assert may_invite(MARIE, LEA, TRANSPORT) is False


def test_r2_staff_only_conversation_admits_school_staff_sharing_a_school():
    assert may_invite(NADIA, None, PAUL) is True


def test_r2_staff_only_conversation_refuses_staff_of_another_school():
    assert may_invite(NADIA, None, DIRECTION_FLEUVE) is False


def test_r2_staff_only_conversation_refuses_parents():
    assert may_invite(NADIA, None, MARIE) is False


def test_r2_staff_only_conversation_refuses_the_transport_operator():
    assert may_invite(NADIA, None, TRANSPORT) is False


# --- check_creation (R1 + R2 at creation) ---------------------------------------------


def test_creation_by_guardian_with_teacher_and_other_guardian_is_allowed():
    check_creation(MARIE, LEA, [NADIA, JEAN])  # no error


def test_r2_creation_by_parent_for_a_child_not_theirs_is_refused():
    error = refusal(check_creation, OTHER_PARENT, LEA, [NADIA])
    assert isinstance(error, RuleViolation)
    assert error.code == "conversation.child_not_yours"


def test_r2_creation_by_parent_without_a_child_is_refused():
    error = refusal(check_creation, MARIE, None, [NADIA])
    assert isinstance(error, BadRequest)
    assert error.code == "conversation.child_required"


def test_creation_without_participants_is_refused():
    assert refusal(check_creation, MARIE, LEA, []).code == "conversation.no_participants"


def test_creation_with_only_oneself_as_participant_is_refused():
    assert refusal(check_creation, MARIE, LEA, [MARIE]).code == "conversation.no_participants"


def test_creation_with_max_participants_is_allowed():
    check_creation(NADIA, None, staff_of_erables(MAX_PARTICIPANTS - 1))  # creator + 49 = 50


def test_creation_with_one_more_than_max_participants_is_refused():
    error = refusal(check_creation, NADIA, None, staff_of_erables(MAX_PARTICIPANTS))
    assert error.code == "conversation.too_many_participants"
    assert error.fields == {"limit": MAX_PARTICIPANTS}


def test_r2_creation_inviting_parent_of_another_student_is_refused():
    error = refusal(check_creation, MARIE, LEA, [NADIA, OTHER_PARENT])
    assert isinstance(error, RuleViolation)
    assert error.code == "conversation.invitee_not_allowed"
    assert error.fields == {"person_id": OTHER_PARENT.id}


def test_r1_creation_by_parent_with_only_the_other_guardian_is_refused():
    assert refusal(check_creation, MARIE, LEA, [JEAN]).code == "conversation.no_staff"


def test_creation_by_transport_operator_is_refused():
    error = refusal(check_creation, TRANSPORT, LEA, [NADIA])
    assert isinstance(error, Forbidden)
    assert error.code == "forbidden"


def test_creation_by_staff_about_a_child_of_another_school_says_child_not_found():
    error = refusal(check_creation, DIRECTION_FLEUVE, LEA, [STAFF_FLEUVE])
    assert isinstance(error, NotFound)
    assert error.code == "child.not_found"
    assert error.fields == {"child_id": LEA.id}


# --- check_addition (R4, with R2 eligibility) -----------------------------------------


def test_r4_member_may_add_an_eligible_person():
    check_addition(MARIE, LEA, [MARIE, NADIA], [DIRECTION])  # no error


def test_r4_adding_someone_already_a_member_is_refused():
    error = refusal(check_addition, MARIE, LEA, [MARIE, NADIA], [NADIA])
    assert error.code == "conversation.already_member"
    assert error.fields == {"person_id": NADIA.id}


def test_r2_adding_an_ineligible_person_is_refused():
    error = refusal(check_addition, MARIE, LEA, [MARIE, NADIA], [OTHER_PARENT])
    assert isinstance(error, RuleViolation)
    assert error.code == "conversation.invitee_not_allowed"
    assert error.fields == {"person_id": OTHER_PARENT.id}


def test_r4_adding_nobody_is_refused():
    assert refusal(check_addition, MARIE, LEA, [MARIE, NADIA], []).code == "conversation.no_participants"


def test_r4_adding_beyond_max_participants_is_refused():
    members = [NADIA, *staff_of_erables(MAX_PARTICIPANTS - 1)]
    error = refusal(check_addition, NADIA, None, members, [PAUL])
    assert error.code == "conversation.too_many_participants"


# --- check_removal (R5, R1) -----------------------------------------------------------


def test_r5_creator_may_remove_a_participant():
    check_removal(MARIE.id, MARIE.id, JEAN.id, [MARIE, JEAN, NADIA])  # no error


def test_r5_only_the_creator_may_remove_participants():
    error = refusal(check_removal, JEAN.id, MARIE.id, NADIA.id, [MARIE, JEAN, NADIA, DIRECTION])
    assert isinstance(error, RuleViolation)
    assert error.code == "conversation.not_creator"


def test_r5_creator_cannot_remove_themself_and_is_told_to_leave():
    assert refusal(check_removal, MARIE.id, MARIE.id, MARIE.id, [MARIE, NADIA]).code == "conversation.use_leave"


def test_r1_removing_the_last_school_staff_member_is_refused():
    assert refusal(check_removal, MARIE.id, MARIE.id, NADIA.id, [MARIE, JEAN, NADIA]).code == "conversation.no_staff"


def test_r1_removal_leaving_only_the_transport_operator_is_refused():
    members = [MARIE, NADIA, TRANSPORT]
    assert refusal(check_removal, MARIE.id, MARIE.id, NADIA.id, members).code == "conversation.no_staff"


def test_r5_removing_one_of_two_staff_members_is_allowed():
    check_removal(MARIE.id, MARIE.id, NADIA.id, [MARIE, NADIA, DIRECTION])  # no error


def test_r5_removing_someone_who_is_not_a_participant_is_refused():
    error = refusal(check_removal, MARIE.id, MARIE.id, PAUL.id, [MARIE, NADIA])
    assert error.code == "conversation.not_participant"
    assert error.fields == {"person_id": PAUL.id}


# --- check_departure (R5, R1) ---------------------------------------------------------


def test_r5_parent_may_leave():
    check_departure(JEAN.id, [MARIE, JEAN, NADIA])  # no error


def test_r5_staff_member_may_leave_when_another_staff_member_stays():
    check_departure(NADIA.id, [MARIE, NADIA, DIRECTION])  # no error


def test_r1_last_school_staff_member_may_not_leave():
    error = refusal(check_departure, NADIA.id, [MARIE, JEAN, NADIA])
    assert isinstance(error, RuleViolation)
    assert error.code == "conversation.no_staff"


def test_r1_last_staff_member_may_not_leave_even_with_transport_operator_staying():
    assert refusal(check_departure, NADIA.id, [MARIE, NADIA, TRANSPORT]).code == "conversation.no_staff"


# --- check_name (R3) ------------------------------------------------------------------


def test_r3_name_is_trimmed():
    assert check_name("  Sortie au musée — groupe 302 \n") == "Sortie au musée — groupe 302"


def test_r3_blank_name_means_no_name():
    assert check_name("   \t ") is None


def test_r3_no_name_stays_no_name():
    assert check_name(None) is None


def test_r3_name_of_max_length_is_allowed_after_trimming():
    name = "é" * MAX_NAME_CHARS
    assert check_name(f"  {name}  ") == name


def test_r3_name_longer_than_the_limit_is_refused():
    error = refusal(check_name, "x" * (MAX_NAME_CHARS + 1))
    assert error.code == "conversation.name_too_long"
    assert error.fields == {"limit": MAX_NAME_CHARS}
