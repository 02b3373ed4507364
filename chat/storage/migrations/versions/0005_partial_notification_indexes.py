"""partial notification indexes

Each notification row is indexed only where it can be looked up: held rows by
due time (R15's release pass), rows neither read nor e-mailed by delivery time
(the e-mail pass, which scanned the whole table before), rows of a conversation
by conversation.  An announcement's rows — delivered at once, about no
conversation — go into two indexes fewer.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 17:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def _where(condition: str) -> dict:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade() -> None:
    op.drop_index('ix_notification_due', table_name='notification')
    op.drop_index('ix_notification_conversation_id', table_name='notification')
    op.create_index('ix_notification_due', 'notification', ['deliver_at'], **_where('delivered_at IS NULL'))
    op.create_index('ix_notification_unmailed', 'notification', ['delivered_at'],
                    **_where('read_at IS NULL AND emailed_at IS NULL'))
    op.create_index('ix_notification_conversation_id', 'notification', ['conversation_id'],
                    **_where('conversation_id IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('ix_notification_conversation_id', table_name='notification')
    op.drop_index('ix_notification_unmailed', table_name='notification')
    op.drop_index('ix_notification_due', table_name='notification')
    op.create_index('ix_notification_conversation_id', 'notification', ['conversation_id'])
    op.create_index('ix_notification_due', 'notification', ['delivered_at', 'deliver_at'])
