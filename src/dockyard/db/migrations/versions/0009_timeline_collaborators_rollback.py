"""The timeline (app events), collaborators, and a deployment's ``rollback_of``

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "collaborators",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "app_id",
            sa.String(36),
            sa.ForeignKey("apps.id", ondelete="CASCADE"),
            index=True,
            nullable=False,
        ),
        sa.Column(
            "user_id",
            sa.String(36),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            index=True,
            nullable=False,
        ),
        sa.Column("is_limited", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("app_id", "user_id"),
    )
    op.create_table(
        "timeline_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("app_id", sa.String(36), nullable=False),
        sa.Column("app_name", sa.String(48), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("type_data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_timeline_events_app_id_id", "timeline_events", ["app_id", "id"])
    op.create_index("ix_timeline_events_user_id_id", "timeline_events", ["user_id", "id"])
    op.add_column("deployments", sa.Column("rollback_of", sa.String(36), nullable=True))


def downgrade() -> None:
    op.drop_column("deployments", "rollback_of")
    op.drop_index("ix_timeline_events_user_id_id", "timeline_events")
    op.drop_index("ix_timeline_events_app_id_id", "timeline_events")
    op.drop_table("timeline_events")
    op.drop_table("collaborators")
