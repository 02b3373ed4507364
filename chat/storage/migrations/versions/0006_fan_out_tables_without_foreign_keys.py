"""fan-out tables without foreign keys

An announcement writes one recipient row per family and one notification per
family and child, thousands at once; a message writes a notification per
member.  PostgreSQL checks each foreign key with a query per inserted row:
for a post to a school that was two thirds of the time of its INSERTs.  The
rows are made in the event's own transaction from rows that have the keys
(the announcement, guardianships, participants), and people and students are
never deleted (R9), so the keys are dropped from these two tables.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 17:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

# (table, column, referred table); PostgreSQL named them <table>_<column>_fkey.
KEYS = [("announcementrecipient", "announcement_id", "announcement"),
        ("announcementrecipient", "person_id", "person"),
        ("notification", "person_id", "person"),
        ("notification", "child_id", "student")]
# SQLite's are unnamed: batch mode names them by this convention to drop them.
SQLITE_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for table in ("announcementrecipient", "notification"):
            # Unnamed keys (as created) get the convention's name; named ones (after a downgrade) keep theirs.
            names = [key["name"] or SQLITE_NAMES["fk"] % {
                "table_name": table, "column_0_name": key["constrained_columns"][0],
                "referred_table_name": key["referred_table"]} for key in sa.inspect(bind).get_foreign_keys(table)]
            with op.batch_alter_table(table, naming_convention=SQLITE_NAMES) as batch:
                for name in names:
                    batch.drop_constraint(name, type_="foreignkey")
        return
    for table, column, _referred in KEYS:
        op.drop_constraint(f"{table}_{column}_fkey", table, type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in ("announcementrecipient", "notification"):
            with op.batch_alter_table(table) as batch:
                for t, column, referred in KEYS:
                    if t == table:
                        batch.create_foreign_key(f"{t}_{column}_fkey", referred, [column], ["id"])
        return
    for table, column, referred in KEYS:
        op.create_foreign_key(f"{table}_{column}_fkey", table, referred, [column], ["id"])
