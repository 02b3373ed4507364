"""The tables (SQLModel).  Schema changes go through Alembic migrations in
``chat/storage/migrations``; ``tests/test_storage.py`` checks that the
migrations and these models agree.

Nothing here is ever deleted by a user action (R9): a retracted message keeps
its text, an edit adds a :class:`MessageVersion`, a departure flips
``Participant.active``.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Column, Index, Integer, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel
from sqlmodel.sql.sqltypes import UTCDateTime

from chat.clock import utcnow


def _where(condition: str) -> dict:
    """A partial index's condition, for both databases."""
    return {"sqlite_where": text(condition), "postgresql_where": text(condition)}


# Ids, the columns that refer to one, and seqs are 64-bit (docs/protocol.md §1):
# BIGINT on PostgreSQL (migration 0009, which also widens the sequences that
# number new rows).  SQLite's INTEGER holds 64 bits already, and a primary key
# must be declared exactly INTEGER there to be the rowid that numbers new rows.
Int64 = BigInteger().with_variant(Integer(), "sqlite")


class Moment(UTCDateTime):
    """SQLModel's aware-UTC datetime, for the columns a batch of sends writes many
    times over with one timestamp (messages, events, notifications): the value
    the driver gets for that timestamp is worked out once, not once per row and
    column (on SQLite, a time-zone conversion and a formatted string each)."""

    cache_ok = True

    def bind_processor(self, dialect):
        process = super().bind_processor(dialect)
        if process is None:
            return None
        last: list = [None, None]  # (value, processed): holding the value keeps its id from being reused

        def remembered(value):
            if value is None or value is not last[0]:
                last[0], last[1] = value, process(value)
            return last[1]

        return remembered


class Organisation(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True, sa_type=Int64)
    code: str = Field(unique=True, max_length=64)
    name: str = Field(max_length=200)


class School(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True, sa_type=Int64)
    code: str = Field(unique=True, max_length=64)
    organisation_id: int = Field(foreign_key="organisation.id", index=True, sa_type=Int64)
    name: str = Field(max_length=200)
    timezone: str = Field(default="America/Toronto", max_length=64)
    # JSON: {"mon": [["08:00", "16:00"]], …}; used by the notification issue (R15).
    working_hours: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    # JSON list of enabled feature names (R18).
    features: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))
    # JSON list of closed dates ("2026-12-21") or ranges (["2026-12-21", "2027-01-05"]):
    # pedagogical days and breaks, on top of Quebec's statutory holidays (R15).
    closed_days: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]", server_default="[]"))
    # R11: the response-delay banner, per school, in both languages.
    notice_fr: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    notice_en: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


class Group(SQLModel, table=True):
    __tablename__ = "school_group"
    id: int | None = Field(default=None, primary_key=True, sa_type=Int64)
    code: str = Field(unique=True, max_length=64)
    school_id: int = Field(foreign_key="school.id", index=True, sa_type=Int64)
    name: str = Field(max_length=200)


class Person(SQLModel, table=True):
    """Staff (teacher, staff, direction, transport) and guardians (parent)."""

    id: int | None = Field(default=None, primary_key=True, sa_type=Int64)
    email: str = Field(unique=True, max_length=254)
    name: str = Field(max_length=200)
    role: str = Field(max_length=16)
    language: str = Field(default="fr", max_length=2)  # R22
    # R21: tokens issued before this instant (epoch seconds) are revoked.
    tokens_valid_after: float = Field(default=0.0)
    # R15: a staff member's own hours, within the school's (JSON like School.working_hours).
    working_hours: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # R19: the Argon2id hash of the password (chat.accounts.passwords); None until the
    # person activates the account the directory made for them.
    password_hash: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class StaffSchool(SQLModel, table=True):
    person_id: int = Field(foreign_key="person.id", primary_key=True, sa_type=Int64)
    school_id: int = Field(foreign_key="school.id", primary_key=True, sa_type=Int64)


class TeacherGroup(SQLModel, table=True):
    person_id: int = Field(foreign_key="person.id", primary_key=True, sa_type=Int64)
    group_id: int = Field(foreign_key="school_group.id", primary_key=True, sa_type=Int64)


class Student(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("organisation_id", "fiche"),)
    id: int | None = Field(default=None, primary_key=True, sa_type=Int64)
    organisation_id: int = Field(foreign_key="organisation.id", sa_type=Int64)
    school_id: int = Field(foreign_key="school.id", index=True, sa_type=Int64)
    group_id: int | None = Field(default=None, foreign_key="school_group.id", index=True, sa_type=Int64)
    first_name: str = Field(max_length=100)
    last_name: str = Field(max_length=100)
    date_of_birth: date
    fiche: str = Field(max_length=7)  # numéro de fiche, 7 digits
    code_permanent: str = Field(unique=True, max_length=12)  # 4 letters + 8 digits


class Guardianship(SQLModel, table=True):
    # By student with the guardian in the entry: a school's families are read
    # from its students without a look-up in the table (migration 0008).
    __table_args__ = (Index("ix_guardianship_student_id", "student_id", "person_id"),)
    person_id: int = Field(foreign_key="person.id", primary_key=True, sa_type=Int64)
    student_id: int = Field(foreign_key="student.id", primary_key=True, sa_type=Int64)


class GuardianOnFile(SQLModel, table=True):
    """R20: the school has this person's e-mail on file as a guardian of this student
    (``directory load``).  Being on file gives nothing by itself: the parent sees the
    child once they associate it (a :class:`Guardianship` row, chat.accounts.children)."""

    __table_args__ = (Index("ix_guardianonfile_student_id", "student_id", "person_id"),)
    person_id: int = Field(foreign_key="person.id", primary_key=True, sa_type=Int64)
    student_id: int = Field(foreign_key="student.id", primary_key=True, sa_type=Int64)


class EmailCode(SQLModel, table=True):
    """R19: a 6-digit code e-mailed to a person, stored as an HMAC (chat.accounts.codes).
    A new code for the same purpose spends the previous one; so do its use, its
    expiry and too many wrong tries."""

    __table_args__ = (Index("ix_emailcode_person_purpose", "person_id", "purpose"),)
    id: int | None = Field(default=None, primary_key=True, sa_type=Int64)
    person_id: int = Field(foreign_key="person.id", sa_type=Int64)
    purpose: str = Field(max_length=16)  # signup, signin, reset
    code_hash: str = Field(max_length=64)
    # signup: the Argon2id hash of the chosen password, set on the account when the code is typed.
    pending_hash: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: float
    expires_at: float
    attempts: int = 0
    spent: bool = False


class AuthSession(SQLModel, table=True):
    """R21: one signed-in device.  Its access tokens carry its id (``sid``); its refresh
    credential is stored as a SHA-256 and rotates at each use."""

    id: str = Field(primary_key=True, max_length=32)
    person_id: int = Field(foreign_key="person.id", index=True, sa_type=Int64)
    refresh_hash: str = Field(max_length=64)
    user_agent: str = Field(default="", max_length=200)
    created_at: float
    last_used_at: float
    expires_at: float  # the refresh credential's: pushed back at each use
    ended_at: float | None = None
    ended_because: str | None = Field(default=None, max_length=16)  # signout, ended, reset, reuse, expired


class Nip(SQLModel, table=True):
    """R20: a PIN a school gave for one student, stored as an HMAC; single use, expiring."""

    id: int | None = Field(default=None, primary_key=True, sa_type=Int64)
    student_id: int = Field(foreign_key="student.id", index=True, sa_type=Int64)
    nip_hash: str = Field(unique=True, max_length=64)
    created_at: float
    expires_at: float
    used_at: float | None = None
    used_by: int | None = Field(default=None, foreign_key="person.id", sa_type=Int64)


class Throttle(SQLModel, table=True):
    """Attempts per key in a fixed window (chat.accounts.throttle), when there is no Redis."""

    key: str = Field(primary_key=True, max_length=128)
    window_start: float
    count: int = 0


class Conversation(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True, sa_type=Int64)
    school_id: int = Field(foreign_key="school.id", index=True, sa_type=Int64)
    child_id: int | None = Field(default=None, foreign_key="student.id", index=True, sa_type=Int64)
    name: str | None = Field(default=None, max_length=100)
    creator_id: int = Field(foreign_key="person.id", sa_type=Int64)
    created_at: datetime = Field(default_factory=utcnow)
    # The last sequence number handed out; events are numbered 1, 2, 3… without gaps.
    last_seq: int = Field(default=0, sa_type=Int64)
    last_message_at: datetime | None = Field(default=None, sa_type=Moment)
    # R10: direction's lock; nobody posts, reacts, edits or adds people while set.
    locked_at: datetime | None = Field(default=None)
    locked_by: int | None = Field(default=None, foreign_key="person.id", sa_type=Int64)
    lock_reason: str | None = Field(default=None, max_length=500)


class Participant(SQLModel, table=True):
    __table_args__ = (Index("ix_participant_person_active", "person_id", "active"),)
    conversation_id: int = Field(foreign_key="conversation.id", primary_key=True, sa_type=Int64)
    person_id: int = Field(foreign_key="person.id", primary_key=True, sa_type=Int64)
    active: bool = Field(default=True)
    # R4: events before this seq are hidden from a member added without history.
    visible_from_seq: int = Field(default=1, sa_type=Int64)
    last_read_seq: int = Field(default=0, sa_type=Int64)
    joined_at: datetime = Field(default_factory=utcnow)
    left_at: datetime | None = Field(default=None)


class Event(SQLModel, table=True):
    """The per-conversation log: what members replay on resume, in seq order.

    ``frame`` is the exact JSON text sent to members, encoded once.  When a
    message is retracted its earlier frames are redacted here (members must
    not see the text any more); the text itself stays in Message and
    MessageVersion for direction's archive (R9).
    """

    conversation_id: int = Field(foreign_key="conversation.id", primary_key=True, sa_type=Int64)
    seq: int = Field(primary_key=True, sa_type=Int64)
    kind: str = Field(max_length=32)
    actor_id: int | None = Field(default=None, foreign_key="person.id", sa_type=Int64)
    message_id: int | None = Field(default=None, index=True, sa_type=Int64)
    frame: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=Moment)


class Message(SQLModel, table=True):
    __table_args__ = (
        # Idempotent send: one message per (author, client id), whatever the retries.
        UniqueConstraint("author_id", "client_id"),
        Index("ix_message_conversation_seq", "conversation_id", "seq"),
    )
    id: int | None = Field(default=None, primary_key=True, sa_type=Int64)
    conversation_id: int = Field(foreign_key="conversation.id", sa_type=Int64)
    seq: int = Field(sa_type=Int64)
    author_id: int | None = Field(default=None, foreign_key="person.id", sa_type=Int64)  # None: system message
    client_id: str | None = Field(default=None, max_length=64)
    text: str = Field(sa_column=Column(Text, nullable=False))
    version: int = Field(default=1)
    created_at: datetime = Field(default_factory=utcnow, sa_type=Moment)
    edited_at: datetime | None = None
    retracted_at: datetime | None = None


class MessageVersion(SQLModel, table=True):
    """Every earlier text of an edited message (R8, R9)."""

    message_id: int = Field(foreign_key="message.id", primary_key=True, sa_type=Int64)
    version: int = Field(primary_key=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime


class Reaction(SQLModel, table=True):
    message_id: int = Field(foreign_key="message.id", primary_key=True, sa_type=Int64)
    person_id: int = Field(foreign_key="person.id", primary_key=True, sa_type=Int64)
    emoji: str = Field(primary_key=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class Upload(SQLModel, table=True):
    """An uploaded file (R7): stored by content hash, attached to at most one message."""

    id: str = Field(primary_key=True, max_length=32)
    owner_id: int = Field(foreign_key="person.id", index=True, sa_type=Int64)
    sha256: str = Field(max_length=64, index=True)
    size: int
    content_type: str = Field(max_length=100)
    filename: str = Field(max_length=130)
    width: int | None = None
    height: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    message_id: int | None = Field(default=None, foreign_key="message.id", index=True, sa_type=Int64)
    conversation_id: int | None = Field(default=None, foreign_key="conversation.id", sa_type=Int64)


class Announcement(SQLModel, table=True):
    """R13 one-way posts, and R12 integration notices (transport, observations,
    absences): persisted once, with one recipient row per family member."""

    id: int | None = Field(default=None, primary_key=True, sa_type=Int64)
    organisation_id: int = Field(foreign_key="organisation.id", index=True, sa_type=Int64)
    school_id: int | None = Field(default=None, foreign_key="school.id", index=True, sa_type=Int64)
    author_id: int | None = Field(default=None, foreign_key="person.id", sa_type=Int64)
    integration_key_id: int | None = Field(default=None, foreign_key="integrationkey.id", sa_type=Int64)
    kind: str = Field(default="announcement", max_length=32)
    # JSON: {"groups": [ids]} | {"school": id} | {"organisation": id} | {"students": [ids]}
    audience: str = Field(sa_column=Column(Text, nullable=False))
    text: str = Field(sa_column=Column(Text, nullable=False))
    urgent: bool = Field(default=False)
    recipient_count: int = Field(default=0)
    created_at: datetime = Field(default_factory=utcnow)


class AnnouncementRecipient(SQLModel, table=True):
    """One row per family an announcement reaches (R13 read receipts, the per-child label).

    No foreign keys (migration 0006), like :class:`Notification`: an announcement
    writes thousands of these at once, and PostgreSQL checks a foreign key with
    a query per row — two thirds of the time of posting to a school.  The rows
    are made in the announcement's own transaction from that announcement and
    from guardianship rows, which have the keys; people are never deleted (R9)."""

    # On SQLite the table is its key's B-tree (WITHOUT ROWID, migration 0008):
    # one entry written per row, not a rowid row and a key entry.  A later batch
    # migration of this table must pass table_kwargs={"sqlite_with_rowid": False}
    # (not every SQLAlchemy reflects it, and compare_metadata does not check it).
    __table_args__ = (Index("ix_announcementrecipient_person", "person_id", "announcement_id"),
                      {"sqlite_with_rowid": False})
    announcement_id: int = Field(primary_key=True, sa_type=Int64)  # announcement.id
    person_id: int = Field(primary_key=True, sa_type=Int64)  # person.id
    # JSON list of the recipient's children the announcement concerns (the label).
    child_ids: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))
    read_at: datetime | None = None


class AnnouncementReaction(SQLModel, table=True):
    announcement_id: int = Field(foreign_key="announcement.id", primary_key=True, sa_type=Int64)
    person_id: int = Field(foreign_key="person.id", primary_key=True, sa_type=Int64)
    emoji: str = Field(primary_key=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class CollectiveSend(SQLModel, table=True):
    """R14: one message to many families, delivered by a resumable job."""

    __table_args__ = (UniqueConstraint("author_id", "client_id"),)
    id: int | None = Field(default=None, primary_key=True, sa_type=Int64)
    author_id: int = Field(foreign_key="person.id", index=True, sa_type=Int64)
    school_id: int = Field(foreign_key="school.id", sa_type=Int64)
    client_id: str = Field(max_length=64)
    text: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="running", max_length=16)  # running | done
    total: int = Field(default=0)
    done: int = Field(default=0)
    created_at: datetime = Field(default_factory=utcnow)
    # A lease in the database (not in Redis) so that one worker runs the job at a time.
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: float = Field(default=0.0)


class CollectiveTarget(SQLModel, table=True):
    send_id: int = Field(foreign_key="collectivesend.id", primary_key=True, sa_type=Int64)
    student_id: int = Field(foreign_key="student.id", primary_key=True, sa_type=Int64)
    conversation_id: int | None = Field(default=None, foreign_key="conversation.id", sa_type=Int64)
    message_id: int | None = Field(default=None, foreign_key="message.id", sa_type=Int64)
    done_at: datetime | None = None


class IntegrationKey(SQLModel, table=True):
    """R12: a school system's key to the publishing API, scoped to a school and kinds."""

    id: int | None = Field(default=None, primary_key=True, sa_type=Int64)
    school_id: int = Field(foreign_key="school.id", index=True, sa_type=Int64)
    name: str = Field(max_length=100)
    kinds: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))  # JSON list
    key_hash: str = Field(unique=True, max_length=64)  # sha256 of the key; the key is shown once
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class AuditEntry(SQLModel, table=True):
    """Who looked at or changed what (R9 archive reads, R10 locks).  Append-only:
    the database refuses UPDATE and DELETE on this table (migration 0003)."""

    id: int | None = Field(default=None, primary_key=True, sa_type=Int64)
    actor_id: int | None = Field(default=None, foreign_key="person.id", index=True, sa_type=Int64)
    school_id: int | None = Field(default=None, foreign_key="school.id", index=True, sa_type=Int64)
    action: str = Field(max_length=64)
    target: str = Field(default="", max_length=200)
    details: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    at: datetime = Field(default_factory=utcnow)


class Notification(SQLModel, table=True):
    """Something that should ping a person (R15–R17).  Created at once; delivered
    when ``deliver_at`` comes (now, or the start of a staff member's working time)."""

    # Partial indexes: each row is in only the ones it can be looked up by, so an
    # announcement's thousands of rows (delivered at once, no conversation) skip two.
    __table_args__ = (
        # The feed, newest first by id (R16; migration 0007).
        Index("ix_notification_feed", "person_id", "id"),
        # R15's release pass: held rows by due time.
        Index("ix_notification_due", "deliver_at", **_where("delivered_at IS NULL")),
        # The e-mail pass: rows neither read nor e-mailed yet.
        Index("ix_notification_unmailed", "delivered_at", **_where("read_at IS NULL AND emailed_at IS NULL")),
        # Reading a conversation reads its notifications.
        Index("ix_notification_conversation_id", "conversation_id", **_where("conversation_id IS NOT NULL")),
    )
    id: int | None = Field(default=None, primary_key=True, sa_type=Int64)
    # No foreign keys (migration 0006; see AnnouncementRecipient): the rows come, in
    # the event's own transaction, from participant and guardianship rows, which
    # have them; people and students are never deleted (R9).
    person_id: int = Field(sa_type=Int64)  # person.id
    child_id: int | None = Field(default=None, sa_type=Int64)  # student.id
    # message | added | announcement | reaction | transport | observation | absence
    kind: str = Field(max_length=32)
    # The text is rendered per reader language from a code and its fields (R22).
    code: str = Field(max_length=64)
    fields: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    # JSON link to the source: {"conversation_id":…, "message_id":…} or {"announcement_id":…}
    link: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    # Reading a conversation reads its notifications too.
    conversation_id: int | None = Field(default=None, sa_type=Int64)
    urgent: bool = Field(default=False)
    created_at: datetime = Field(default_factory=utcnow, sa_type=Moment)
    deliver_at: datetime = Field(default_factory=utcnow, sa_type=Moment)
    held: bool = Field(default=False)  # True when deliver_at was pushed to working time
    delivered_at: datetime | None = Field(default=None, sa_type=Moment)
    emailed_at: datetime | None = None
    read_at: datetime | None = None
    # Unused since migration 0010: a release is now one transaction (no lease), and
    # the slow part, telling people, is leased per NotificationDelivery row.  Kept
    # because dropping a column rebuilds the whole table on SQLite.
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: float = Field(default=0.0)


class NotificationDelivery(SQLModel, table=True):
    """One digest to send on one channel (``frame``, ``email``, ``push``): what is
    left to tell a person once their notifications are released (R15) or due for
    an unread e-mail.  Written in the transaction that releases them, so a
    committed release never lacks its deliveries; sent, retried with backoff or
    given up later, each attempt under a lease (migration 0010)."""

    __table_args__ = (
        # The send passes: rows still to send, per channel, by due time.
        Index("ix_notificationdelivery_due", "channel", "due_at", **_where("done_at IS NULL")),
    )
    id: int | None = Field(default=None, primary_key=True, sa_type=Int64)
    person_id: int = Field(sa_type=Int64)  # person.id (no foreign key, as Notification)
    channel: str = Field(max_length=16)
    digest: bool = Field(default=True)  # a held digest (R15), or unread notifications e-mailed
    # JSON list of the notification ids the digest carries (those read before it is
    # sent are left out of it then).
    notification_ids: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))
    created_at: datetime = Field(default_factory=utcnow, sa_type=Moment)
    due_at: float = Field(default=0.0)  # epoch seconds: the next attempt
    attempts: int = Field(default=0)  # counted when an attempt starts (a crash counts too)
    last_error: str | None = Field(default=None, max_length=100)  # an exception's class, never its text
    done_at: datetime | None = Field(default=None, sa_type=Moment)
    outcome: str | None = Field(default=None, max_length=16)  # sent | nothing (all read) | failed (given up)
    # The worker attempting it, until when (epoch seconds).
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: float = Field(default=0.0)


class NotificationPreference(SQLModel, table=True):
    """R17: a parent switches a kind off (or on again) for one child; 0 = not about a child."""

    person_id: int = Field(foreign_key="person.id", primary_key=True, sa_type=Int64)
    child_id: int = Field(default=0, primary_key=True, sa_type=Int64)
    kind: str = Field(primary_key=True, max_length=32)
    enabled: bool = Field(default=True)
