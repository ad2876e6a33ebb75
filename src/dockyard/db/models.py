"""The database schema (SQLAlchemy 2 ORM). Rows never leave the services layer: the API
renders its own schemas from them (``dockyard.api.schemas``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(254))
    fullname: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    # SHA-256 of the token: tokens are high-entropy, so a fast hash is enough, and
    # the lookup by hash stays an index hit.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship(lazy="joined")


class App(Base):
    __tablename__ = "apps"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(48), unique=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # The unprivileged host uid this app's builds and processes run as.
    sandbox_uid: Mapped[int] = mapped_column(Integer, unique=True)
    status: Mapped[str] = mapped_column(String(20), default="new")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Kept with each new deployment so listing pages never count 10,000 rows.
    deployment_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Bumped with every change to any of the app's deployments: rendered listings are
    # cached under it, so a cached page is never older than the data.
    deployments_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # What the runtime needs to bring the current release back after a restart.
    runtime_state: Mapped[dict | None] = mapped_column(JSON)

    owner: Mapped[User] = relationship(lazy="joined")


class Variable(Base):
    __tablename__ = "variables"
    __table_args__ = (UniqueConstraint("app_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(Text)


class Source(Base):
    __tablename__ = "sources"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    upload_token_hash: Mapped[str] = mapped_column(String(64))
    download_token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    uploaded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    size: Mapped[int | None] = mapped_column(BigInteger)


class Deployment(Base):
    __tablename__ = "deployments"
    __table_args__ = (
        # Covers the newest-first listing, tie-break included, so a page is an index walk.
        Index("ix_deployments_app_created_id", "app_id", "created_at", "id"),
        Index("ix_deployments_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    pusher_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20))
    git_ref: Mapped[str] = mapped_column(String(255))
    previous_git_ref: Mapped[str | None] = mapped_column(String(255))
    # The full URL is needed to fetch; it is never rendered (it may carry a token).
    source_url: Mapped[str] = mapped_column(Text)
    source_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    image_size: Mapped[int | None] = mapped_column(BigInteger)
    process_types: Mapped[dict | None] = mapped_column(JSON)
    # Defaults from the buildpack's bin/release, under the app's own variables at run time.
    config_vars: Mapped[dict | None] = mapped_column(JSON)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)

    pusher: Mapped[User] = relationship(lazy="joined")


class DeploymentEvent(Base):
    """The ordered log of one deployment: log lines and status changes share one sequence,
    so the output endpoint, the stream's replay and its live view always agree."""

    __tablename__ = "deployment_events"
    __table_args__ = (UniqueConstraint("deployment_id", "seq"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(10))  # "log" | "status"
    content: Mapped[str] = mapped_column(Text)
