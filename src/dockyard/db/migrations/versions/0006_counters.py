"""Counters that only grow: the last sandbox uid handed out, so that a deleted app's uid
is never given to another app (its processes could still be running)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "counters",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    op.execute(
        "INSERT INTO counters (name, value) "
        "SELECT 'sandbox_uid', (SELECT max(sandbox_uid) FROM apps) "
        "WHERE EXISTS (SELECT 1 FROM apps)"
    )


def downgrade() -> None:
    op.drop_table("counters")
