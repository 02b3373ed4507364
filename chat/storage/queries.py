"""The prebuilt statements of the conversation use cases, built once at import.

Building a statement costs more than running these small look-ups, so each is
built here once and run many times, through the ORM session or the driver's
connection alike (:mod:`chat.storage.executor`).  List parameters are expanding
``bindparam`` s named ``ids``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (BigInteger, String, and_, bindparam, case, cast, func, insert, literal, null, select, text,
                        union_all, update)

from chat.storage.models import (
    AuthSession,
    Conversation,
    Event,
    Guardianship,
    Message,
    Participant,
    Person,
    School,
    StaffSchool,
    Student,
    TeacherGroup,
    Upload,
)

# -- a person's facts for the rules (role, schools, groups, children) in one round trip -------------
# One row per fact, tagged with where it comes from.
FACT_SCHOOL, FACT_GROUP, FACT_CHILD, FACT_ROLE = 0, 1, 2, 3


def _facts_statement():
    ids = bindparam("ids", expanding=True)

    def tagged(tag: int, person, value, role=None):
        return select(literal(tag).label("source"), person.label("person_id"), value.label("value"),
                      (cast(null(), String) if role is None else role).label("role"))

    return union_all(
        tagged(FACT_ROLE, Person.id, cast(null(), BigInteger), Person.role).where(Person.id.in_(ids)),
        tagged(FACT_SCHOOL, StaffSchool.person_id, StaffSchool.school_id).where(StaffSchool.person_id.in_(ids)),
        tagged(FACT_GROUP, TeacherGroup.person_id, TeacherGroup.group_id).where(TeacherGroup.person_id.in_(ids)),
        tagged(FACT_CHILD, Guardianship.person_id, Guardianship.student_id).where(Guardianship.person_id.in_(ids)))


FACTS = _facts_statement()

IDS = bindparam("ids", expanding=True)
# A conversation list's parts (ids: the conversations).
SUMMARY_MEMBERS = select(Participant.conversation_id, Person.id, Person.name, Person.role).join(
    Person, Person.id == Participant.person_id).where(
    Participant.conversation_id.in_(IDS), Participant.active == True).order_by(Person.name)  # noqa: E712
SUMMARY_MINE = select(Participant.conversation_id, Participant.visible_from_seq, Participant.last_read_seq).where(
    Participant.conversation_id.in_(IDS), Participant.person_id == bindparam("person"))
SUMMARY_SCHOOLS = select(School.id, School.notice_fr, School.notice_en).where(School.id.in_(IDS))
SUMMARY_CHILDREN = select(Student.id, Student.first_name, Student.last_name).where(Student.id.in_(IDS))

# A school's R18 switches.
FEATURES = select(School.features).where(School.id == bindparam("school"))

# What every new connection reads.
# A person in one of their sessions (R21): the session's end, if it ended.
SIGNED_IN = select(Person.id, Person.role, Person.name, Person.language, AuthSession.ended_at).join(
    AuthSession, AuthSession.person_id == Person.id).where(Person.id == bindparam("id"), AuthSession.id == bindparam("sid"))
ACTIVE = select(Participant.conversation_id).where(
    Participant.person_id == bindparam("person"), Participant.active == True)  # noqa: E712
# What creating a conversation reads and writes (INSERT_EVENT: every event).
STUDENT_FACTS = select(Student.id, Student.school_id, Student.group_id).where(Student.id == bindparam("id"))
CHILD_GUARDIANS = select(Guardianship.person_id).where(Guardianship.student_id == bindparam("id"))
NAMES = select(Person.id, Person.name, Person.role).where(Person.id.in_(IDS))
INSERT_CONVERSATION = insert(Conversation.__table__).returning(Conversation.__table__.c.id)
INSERT_PARTICIPANTS = insert(Participant.__table__)
INSERT_EVENT = insert(Event.__table__)
MEMBER_IDS = select(Participant.person_id).where(
    Participant.conversation_id == bindparam("conversation"), Participant.active == True)  # noqa: E712

# A person's active conversations, most recent activity first (the list's order).
MY_CONVERSATIONS = select(
    Conversation.id, Conversation.name, Conversation.school_id, Conversation.child_id, Conversation.creator_id,
    Conversation.last_seq, Conversation.locked_at, Conversation.lock_reason,
).join(Participant, Participant.conversation_id == Conversation.id).where(
    Participant.person_id == bindparam("person"), Participant.active == True,  # noqa: E712
).order_by(func.coalesce(Conversation.last_message_at, Conversation.created_at).desc(), Conversation.id.desc())
# Unread per conversation (``ids``): messages by others, not retracted (R8),
# after max(read marker, first visible seq - 1) (R4: a member added without
# history), each conversation's found on the (conversation, seq) index from its
# participant row.
UNREAD = select(Message.conversation_id, func.count()).select_from(Participant).join(
    Message, and_(Message.conversation_id == Participant.conversation_id,
                  Message.seq > case((Participant.last_read_seq >= Participant.visible_from_seq - 1,
                                      Participant.last_read_seq), else_=Participant.visible_from_seq - 1)),
).where(
    Participant.person_id == bindparam("person"), Participant.conversation_id.in_(IDS),
    Message.author_id != bindparam("person"), Message.retracted_at.is_(None),
).group_by(Message.conversation_id)
# What a resume needs of each conversation the client names (only where the person is an active member).
RESUMABLE = select(Participant.conversation_id, Participant.visible_from_seq, Conversation.last_seq).join(
    Conversation, Conversation.id == Participant.conversation_id).where(
    Participant.person_id == bindparam("person"), Participant.conversation_id.in_(IDS),
    Participant.active == True)  # noqa: E712
POSITIONS = select(Conversation.id, Conversation.last_seq).join(
    Participant, Participant.conversation_id == Conversation.id).where(
    Participant.person_id == bindparam("person"), Participant.active == True)  # noqa: E712

# The newest message of each conversation (``ids``), each looked up at the end of
# the (conversation, seq) index: a MAX(seq) … GROUP BY read every message of every
# conversation, at each connection's start.
LAST_MESSAGES = select(
    select(Message.id).where(Message.conversation_id == Conversation.id)
    .order_by(Message.seq.desc()).limit(1).correlate(Conversation).scalar_subquery()
).where(Conversation.id.in_(IDS))
SUMMARY_LAST = select(Message.conversation_id, Message.id, Message.seq, Message.author_id, Message.text,
                      Message.retracted_at, Message.created_at).where(Message.id.in_(LAST_MESSAGES))

# -- the group commit of sends (chat.conversations.sending) -----------------------------------------
MESSAGES = Message.__table__
EVENTS = Event.__table__
PARTICIPANTS = Participant.__table__
CONVERSATIONS = Conversation.__table__
PEOPLE = Person.__table__
UPLOADS = Upload.__table__

_EXISTING_BY_SIZE: dict[int, Any] = {}


def existing_messages(size: int):
    """The messages already committed for ``size`` (author, client_id) pairs —
    the parameters ``a0, c0, a1, c1, …`` — built once per size.  The pairs are a
    VALUES list joined to the message table: SQLite answers a row-value
    ``(author_id, client_id) IN (VALUES …)`` by scanning the whole unique index
    (a batch then cost time in proportion to every message ever sent), while
    the join looks each pair up in it.  The casts give PostgreSQL the columns' types."""
    statement = _EXISTING_BY_SIZE.get(size)
    if statement is None:
        m = MESSAGES.c
        pairs = ", ".join(f"(CAST(:a{i} AS BIGINT), CAST(:c{i} AS VARCHAR(64)))" for i in range(size))
        statement = _EXISTING_BY_SIZE[size] = text(
            f"WITH sent (author_id, client_id) AS (VALUES {pairs}) "
            f"SELECT m.id, m.author_id, m.client_id, m.conversation_id, m.seq, m.created_at "
            f"FROM sent JOIN {MESSAGES.name} AS m ON m.author_id = sent.author_id AND m.client_id = sent.client_id"
        ).columns(m.id, m.author_id, m.client_id, m.conversation_id, m.seq, m.created_at)
    return statement


# The conversations, locked in id order (PostgreSQL, FOR NO KEY UPDATE as an
# UPDATE takes; SQLite's write transaction is exclusive already) so their seqs
# are ours to hand out.
CONVERSATIONS_LOCKED = select(
    CONVERSATIONS.c.id, CONVERSATIONS.c.school_id, CONVERSATIONS.c.child_id, CONVERSATIONS.c.name,
    CONVERSATIONS.c.locked_at, CONVERSATIONS.c.last_seq).where(
    CONVERSATIONS.c.id.in_(bindparam("ids", expanding=True))).order_by(CONVERSATIONS.c.id).with_for_update(
    key_share=True)
# Active members with what the notifier needs of them (R15: role, own hours).
MEMBERS = select(PARTICIPANTS.c.conversation_id, PARTICIPANTS.c.person_id, PEOPLE.c.role,
                 PEOPLE.c.working_hours).join(PEOPLE, PEOPLE.c.id == PARTICIPANTS.c.person_id).where(
    PARTICIPANTS.c.conversation_id.in_(bindparam("ids", expanding=True)), PARTICIPANTS.c.active == True)  # noqa: E712
# The columns a send writes (the others have no default: NULL).
MESSAGE_COLUMNS = ("conversation_id", "seq", "author_id", "client_id", "text", "version", "created_at")
MESSAGE_RETURNING = (MESSAGES.c.id, MESSAGES.c.conversation_id, MESSAGES.c.seq)
INSERT_EVENTS = insert(EVENTS)

SET_LAST_SEQ = (
    update(CONVERSATIONS)
    .where(CONVERSATIONS.c.id == bindparam("cid"))
    .values(last_seq=bindparam("seq"), last_message_at=bindparam("at"))
)
SET_READ = (
    update(PARTICIPANTS)
    .where(PARTICIPANTS.c.conversation_id == bindparam("cid"), PARTICIPANTS.c.person_id == bindparam("pid"))
    .values(last_read_seq=bindparam("seq"))
)

# R7: the uploads a send names, locked until its commit (what members see of each
# is read here too), and each attached to the message that carries it.
UPLOADS_TO_ATTACH = select(
    UPLOADS.c.id, UPLOADS.c.owner_id, UPLOADS.c.message_id, UPLOADS.c.size, UPLOADS.c.content_type,
    UPLOADS.c.filename, UPLOADS.c.width, UPLOADS.c.height).where(
    UPLOADS.c.id.in_(bindparam("ids", expanding=True))).with_for_update()
ATTACH_UPLOAD = (
    update(UPLOADS)
    .where(UPLOADS.c.id == bindparam("uid"))
    .values(message_id=bindparam("mid"), conversation_id=bindparam("cid"))
)
