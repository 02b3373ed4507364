"""accounts: passwords, e-mail codes, sessions, guardians on file, NIPs, throttling

R19-R21.  ``guardianship`` keeps its meaning for every rule (the parent sees the
child); what the school has on file moves to ``guardianonfile``.  Every
guardianship that exists when this runs was made by the directory, so it is
copied there: parents already using the hub keep their children, and the next
``directory load`` says who else is on file.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

INT64 = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.add_column('person', sa.Column('password_hash', sa.Text(), nullable=True))
    op.create_table(
        'guardianonfile',
        sa.Column('person_id', INT64, nullable=False),
        sa.Column('student_id', INT64, nullable=False),
        sa.ForeignKeyConstraint(['person_id'], ['person.id']),
        sa.ForeignKeyConstraint(['student_id'], ['student.id']),
        sa.PrimaryKeyConstraint('person_id', 'student_id'),
    )
    op.create_index('ix_guardianonfile_student_id', 'guardianonfile', ['student_id', 'person_id'])
    op.execute('INSERT INTO guardianonfile (person_id, student_id) SELECT person_id, student_id FROM guardianship')
    op.create_table(
        'emailcode',
        sa.Column('id', INT64, nullable=False),
        sa.Column('person_id', INT64, nullable=False),
        sa.Column('purpose', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('code_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('pending_hash', sa.Text(), nullable=True),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('spent', sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(['person_id'], ['person.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_emailcode_person_purpose', 'emailcode', ['person_id', 'purpose'])
    op.create_table(
        'authsession',
        sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('person_id', INT64, nullable=False),
        sa.Column('refresh_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('user_agent', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('last_used_at', sa.Float(), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
        sa.Column('ended_at', sa.Float(), nullable=True),
        sa.Column('ended_because', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.ForeignKeyConstraint(['person_id'], ['person.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_authsession_person_id', 'authsession', ['person_id'])
    op.create_table(
        'nip',
        sa.Column('id', INT64, nullable=False),
        sa.Column('student_id', INT64, nullable=False),
        sa.Column('nip_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
        sa.Column('used_at', sa.Float(), nullable=True),
        sa.Column('used_by', INT64, nullable=True),
        sa.ForeignKeyConstraint(['student_id'], ['student.id']),
        sa.ForeignKeyConstraint(['used_by'], ['person.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('nip_hash'),
    )
    op.create_index('ix_nip_student_id', 'nip', ['student_id'])
    op.create_table(
        'throttle',
        sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('window_start', sa.Float(), nullable=False),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('key'),
    )


def downgrade() -> None:
    op.drop_table('throttle')
    op.drop_index('ix_nip_student_id', table_name='nip')
    op.drop_table('nip')
    op.drop_index('ix_authsession_person_id', table_name='authsession')
    op.drop_table('authsession')
    op.drop_index('ix_emailcode_person_purpose', table_name='emailcode')
    op.drop_table('emailcode')
    op.drop_index('ix_guardianonfile_student_id', table_name='guardianonfile')
    op.drop_table('guardianonfile')
    op.drop_column('person', 'password_hash')
