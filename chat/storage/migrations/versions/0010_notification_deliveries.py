"""notification deliveries: what is left to send, per digest and channel

A release of held notifications (R15) used to claim its rows under a lease,
then mark them delivered and send the frame, the e-mail and the push one
person at a time, retrying each send inline: a slow channel held up every
person after it, and a pass that outlived its lease was claimed again by
another worker and sent twice.  Now a release (or queueing unread
notifications for e-mail) is one transaction that also writes one row here per
digest and channel; the rows are sent, each attempt under its own lease,
retried with backoff and marked done only by the worker still holding them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 16:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'notificationdelivery',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('person_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('digest', sa.Boolean(), nullable=False),
        sa.Column('notification_ids', sa.Text(), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('due_at', sa.Float(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column('done_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column('lease_owner', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column('lease_until', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    condition = sa.text('done_at IS NULL')
    op.create_index('ix_notificationdelivery_due', 'notificationdelivery', ['channel', 'due_at'],
                    sqlite_where=condition, postgresql_where=condition)


def downgrade() -> None:
    op.drop_index('ix_notificationdelivery_due', table_name='notificationdelivery')
    op.drop_table('notificationdelivery')
