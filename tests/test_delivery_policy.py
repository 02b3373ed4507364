"""The hub's deliver/drop/fill decision (chat.policies.delivery), on plain values."""

from __future__ import annotations

from chat.policies.delivery import DELIVER, DROP, FILL, NOTE, SKIP, delivery_decision


def test_a_person_not_a_member_at_commit_time_gets_nothing():
    assert delivery_decision(False, 4, False, 5) == SKIP
    assert delivery_decision(False, None, True, 5) == SKIP


def test_the_next_seq_is_delivered():
    assert delivery_decision(True, 4, False, 5) == DELIVER
    assert delivery_decision(True, 0, False, 1) == DELIVER


def test_a_seq_at_or_below_the_position_is_a_duplicate_and_dropped():
    assert delivery_decision(True, 5, False, 5) == DROP
    assert delivery_decision(True, 5, False, 2) == DROP


def test_a_jump_is_filled_from_the_database_before_anything_newer():
    assert delivery_decision(True, 4, False, 6) == FILL
    assert delivery_decision(True, 0, False, 9) == FILL


def test_a_connection_not_live_yet_only_notes_the_seq():
    assert delivery_decision(True, None, False, 5) == NOTE


def test_while_a_fill_runs_every_event_is_only_noted():
    assert delivery_decision(True, 4, True, 5) == NOTE  # even the next one: the fill keeps the order
    assert delivery_decision(True, 4, True, 9) == NOTE
    assert delivery_decision(True, 4, True, 3) == NOTE
