"""Several API processes without a shared disk: which one holds each uploaded source,
and which one holds each app's latest build cache (and when it was last reset)

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column and a new table: a process of the previous version, still running
    # during a rolling upgrade, neither reads nor needs them.
    op.add_column("sources", sa.Column("holder_url", sa.String(500), nullable=True))
    op.create_table(
        "build_caches",
        sa.Column(
            "app_id",
            sa.String(36),
            sa.ForeignKey("apps.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("holder_url", sa.String(500), nullable=True),
        sa.Column("etag", sa.String(100), nullable=True),
        sa.Column("reset_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("build_caches")
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("holder_url")
