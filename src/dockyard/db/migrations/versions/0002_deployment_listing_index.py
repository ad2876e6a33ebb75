"""Index covering the newest-first deployment listing (tie-break included)

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deployments_app_created_id", "deployments", ["app_id", "created_at", "id"])
    op.drop_index("ix_deployments_app_created", table_name="deployments")


def downgrade() -> None:
    op.create_index("ix_deployments_app_created", "deployments", ["app_id", "created_at"])
    op.drop_index("ix_deployments_app_created_id", table_name="deployments")
