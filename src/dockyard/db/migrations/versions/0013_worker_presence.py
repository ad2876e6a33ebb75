"""Which worker processes are alive: each says so every third of its lease, so that the
apps of a worker gone for good can be adopted by another (swarm runtime)

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A new table only: the previous version's processes never read it.
    op.create_table(
        "workers",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("runtime", sa.String(20), nullable=False),
        sa.Column("instance", sa.String(64), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("workers")
