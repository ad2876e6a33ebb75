"""Which worker holds each deployment's release on its disk, so that a rollback to it is
claimed by that worker (separate worker processes keep releases in their own data dirs)

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A new nullable column only: the previous version's processes never read it.
    op.add_column("deployments", sa.Column("built_by", sa.String(200), nullable=True))


def downgrade() -> None:
    op.drop_column("deployments", "built_by")
