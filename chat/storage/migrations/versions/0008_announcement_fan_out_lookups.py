"""announcement fan-out look-ups: guardianship by student with the guardian; recipient rows without rowid

An announcement to a school reads its students' guardianships twice (the
families, then the notifications' INSERT … SELECT), a thousand at a time.
The index on ``guardianship(student_id)`` gave each guardianship's row id,
and the guardian was then read from the table row: ``(student_id,
person_id)`` holds both, so the look-up ends in the index.

On SQLite, the recipient rows (one per family, keyed by announcement and
person) were a rowid table beside its primary-key index: every row was
written twice over.  A ``WITHOUT ROWID`` table is that key's B-tree itself.
(PostgreSQL tables are heaps either way: unchanged.)

In-process, on the benchmark's directory, the three statements of a post to
1,000 families took 18 % less CPU with both (in one process, interleaved).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 05:00:00
"""

from __future__ import annotations

from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_guardianship_student_id', table_name='guardianship')
    op.create_index('ix_guardianship_student_id', 'guardianship', ['student_id', 'person_id'])
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table('announcementrecipient', recreate='always',
                                  table_kwargs={'sqlite_with_rowid': False}):
            pass


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table('announcementrecipient', recreate='always',
                                  table_kwargs={'sqlite_with_rowid': True}):
            pass
    op.drop_index('ix_guardianship_student_id', table_name='guardianship')
    op.create_index('ix_guardianship_student_id', 'guardianship', ['student_id'])
