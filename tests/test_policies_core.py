"""The decisions taken out of the conversation use cases, tested on plain values:
the resume plan, attachment visibility (R4, R7, R8), the send rule (R10, R18)
and the lock reason (R10)."""

from __future__ import annotations

import pytest

from chat.errors import ChatError
from chat.policies import access, membership, posting, resume


def test_a_position_past_the_last_seq_is_unknown():
    assert resume.reason_to_reload(11, (1, 10)) == "unknown_position"


def test_a_conversation_the_person_left_is_reloaded_as_not_member():
    assert resume.reason_to_reload(3, None) == "not_member"


def test_more_than_the_replay_limit_behind_is_too_old(monkeypatch):
    monkeypatch.setattr(resume, "RESUME_MAX_EVENTS", 3)
    assert resume.reason_to_reload(1, (1, 5)) == "too_old"
    assert resume.reason_to_reload(2, (1, 5)) is None


def test_history_hidden_from_a_member_added_later_is_not_counted_against_the_limit(monkeypatch):
    """R4: a member visible from seq 8 at position 0 replays 8..10, not 1..10."""
    monkeypatch.setattr(resume, "RESUME_MAX_EVENTS", 3)
    assert resume.reason_to_reload(0, (8, 10)) is None


def test_the_plan_replays_resumable_conversations_resets_the_others_and_follows_the_rest_live():
    plan = resume.plan({1: 4, 2: 9, 3: 2}, {1: None, 2: "unknown_position", 3: "not_member"}, {1: 6, 2: 7, 4: 12})
    assert plan.resumed == [1]
    assert plan.reset == [{"conversation_id": 2, "reason": "unknown_position", "last_seq": 7},
                          {"conversation_id": 3, "reason": "not_member"}]
    assert plan.live == {2: 7, 4: 12}


def test_the_uploader_always_sees_their_upload():
    assert access.may_download(5, 5, posted=False, member=False, visible_from_seq=0, message_seq=0, retracted=False)


def test_an_unposted_upload_is_seen_by_nobody_else():
    assert not access.may_download(6, 5, posted=False, member=True, visible_from_seq=1, message_seq=0,
                                   retracted=False)


def test_a_member_sees_a_posted_attachment_only_within_their_history_and_before_retraction():
    facts = dict(posted=True, member=True, visible_from_seq=4, retracted=False)
    assert access.may_download(6, 5, message_seq=4, **facts)
    assert not access.may_download(6, 5, message_seq=3, **facts)  # R4: before they joined
    assert not access.may_download(6, 5, message_seq=4, **(facts | {"retracted": True}))  # R8
    assert not access.may_download(6, 5, message_seq=4, **(facts | {"member": False}))


def test_a_non_member_cannot_post():
    with pytest.raises(ChatError) as refused:
        posting.require_member(7, False)
    assert refused.value.code == "conversation.not_found"


def test_a_locked_conversation_refuses_posts():
    with pytest.raises(ChatError) as refused:
        posting.require_open(frozenset({"messaging"}), locked=True)
    assert refused.value.code == "conversation.locked"


def test_a_school_with_messaging_off_refuses_posts_before_the_lock_is_looked_at():
    with pytest.raises(ChatError) as refused:
        posting.require_open(frozenset(), locked=True)
    assert refused.value.code == "feature.unavailable"


def test_attachments_need_their_own_switch():
    posting.require_open(frozenset({"messaging"}), locked=False)
    with pytest.raises(ChatError) as refused:
        posting.require_open(frozenset({"messaging"}), locked=False, feature="attachments")
    assert refused.value.code == "feature.unavailable"


def test_a_lock_reason_is_a_paragraph_at_most():
    assert membership.check_lock_reason(None) is None
    assert membership.check_lock_reason("x" * membership.MAX_LOCK_REASON_CHARS) == "x" * 500
    with pytest.raises(ChatError) as refused:
        membership.check_lock_reason("x" * 501)
    assert refused.value.code == "request.invalid"
