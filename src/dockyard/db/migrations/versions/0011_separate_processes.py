"""Separate api, worker and router processes (issue 17): the route table in the database,
the signing key shared by every API process, logs-URL grants any API process can check

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Only new tables: a process of the previous version, still running during a rolling
    # upgrade, never reads them and is not disturbed by them.
    op.create_table(
        "routes",
        sa.Column("app", sa.String(48), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("backends", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "platform_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
    )
    op.create_table(
        "log_grants",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "app_id",
            sa.String(36),
            sa.ForeignKey("apps.id", ondelete="CASCADE"),
            index=True,
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("log_grants")
    op.drop_table("platform_secrets")
    op.drop_table("routes")
