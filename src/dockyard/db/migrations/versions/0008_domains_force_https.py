"""Custom domains of apps (issue 19) and each app's force-HTTPS setting

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "domains",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "app_id",
            sa.String(36),
            sa.ForeignKey("apps.id", ondelete="CASCADE"),
            index=True,
            nullable=False,
        ),
        sa.Column("name", sa.String(253), nullable=False, unique=True),
        sa.Column("letsencrypt_enabled", sa.Boolean(), nullable=False),
        sa.Column("tlscert", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("apps") as batch:
        batch.add_column(
            sa.Column("force_https", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("force_https")
    op.drop_table("domains")
