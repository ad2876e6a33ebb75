"""Keep each app's number of deployments, so listings do not count rows

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("apps") as batch_op:
        batch_op.add_column(
            sa.Column("deployment_count", sa.Integer(), nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE apps SET deployment_count = "
        "(SELECT count(*) FROM deployments WHERE deployments.app_id = apps.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("apps") as batch_op:
        batch_op.drop_column("deployment_count")
