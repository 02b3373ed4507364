"""64-bit ids on PostgreSQL: every id, every column that refers to one, and seqs

The protocol promises 64-bit integer ids (docs/protocol.md §1).  PostgreSQL's
INTEGER is 32-bit: an id from 2^31 on could not be looked up (asyncpg refused
the parameter, the client got ``internal.error``) and a table's sequence would
stop handing out ids at 2^31 − 1.  Here every integer id column, every column
that holds one (with a foreign key or not: the fan-out tables of 0006, the
notification's conversation and child, the event's message) and the seqs
(which clients send back as positions and history bounds) become BIGINT, and
the sequences behind the SERIAL keys become bigint sequences (a column's new
type does not change its sequence's).  Counters and sizes stay INTEGER.

SQLite: nothing to do, its INTEGER is 64-bit already.

Each table is rewritten once (one ALTER TABLE per table, all its columns at
once) with its indexes, under an exclusive lock, in the migration's one
transaction; docs/operations.md gives the time on a filled database.  The
downgrade narrows them back, and fails (changing nothing) if a value no longer
fits.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 12:00:00
"""

from __future__ import annotations

from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

# Per table, the columns that become BIGINT: referred tables before the tables
# that refer to them.
COLUMNS = {
    "organisation": ["id"],
    "school": ["id", "organisation_id"],
    "school_group": ["id", "school_id"],
    "person": ["id"],
    "staffschool": ["person_id", "school_id"],
    "teachergroup": ["person_id", "group_id"],
    "student": ["id", "organisation_id", "school_id", "group_id"],
    "guardianship": ["person_id", "student_id"],
    "conversation": ["id", "school_id", "child_id", "creator_id", "locked_by", "last_seq"],
    "participant": ["conversation_id", "person_id", "visible_from_seq", "last_read_seq"],
    "message": ["id", "conversation_id", "author_id", "seq"],
    "event": ["conversation_id", "seq", "actor_id", "message_id"],
    "messageversion": ["message_id"],
    "reaction": ["message_id", "person_id"],
    "upload": ["owner_id", "message_id", "conversation_id"],
    "integrationkey": ["id", "school_id"],
    "announcement": ["id", "organisation_id", "school_id", "author_id", "integration_key_id"],
    "announcementreaction": ["announcement_id", "person_id"],
    "announcementrecipient": ["announcement_id", "person_id"],
    "collectivesend": ["id", "author_id", "school_id"],
    "collectivetarget": ["send_id", "student_id", "conversation_id", "message_id"],
    "auditentry": ["id", "actor_id", "school_id"],
    "notification": ["id", "person_id", "child_id", "conversation_id"],
    "notificationpreference": ["person_id", "child_id"],
}


def _alter(sql_type: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table, columns in COLUMNS.items():
        op.execute(f"ALTER TABLE {table} " + ", ".join(f"ALTER COLUMN {c} TYPE {sql_type}" for c in columns))
    for table, columns in COLUMNS.items():
        if "id" in columns:
            sequence = bind.exec_driver_sql(f"SELECT pg_get_serial_sequence('{table}', 'id')").scalar()
            op.execute(f"ALTER SEQUENCE {sequence} AS {sql_type}")


def upgrade() -> None:
    _alter("BIGINT")


def downgrade() -> None:
    _alter("INTEGER")
