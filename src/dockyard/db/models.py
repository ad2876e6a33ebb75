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
    false,
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
    # Plain-HTTP requests to the app are redirected to HTTPS (``scalingo force-https``).
    force_https: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    owner: Mapped[User] = relationship(lazy="joined")


class Counter(Base):
    """A number that only grows (``sandbox_uid``: the last uid handed to an app)."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
class Domain(Base):
    """A host name of one app's own: one app across all users (``name`` is unique)."""

    __tablename__ = "domains"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    letsencrypt_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # A certificate of the owner's (PEM). Its private key is never in the database: it
    # is a 0600 file in the data dir (services/domains.py).
    tlscert: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


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
    # The API process whose disk holds the uploaded archive (its DOCKYARD_INTERNAL_URL):
    # workers fetch it there. None before the upload (and for uploads older than 0012).
    holder_url: Mapped[str | None] = mapped_column(String(500))


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
    # A rollback starts this (successful, still retained) deployment's release again,
    # without a build.
    rollback_of: Mapped[str | None] = mapped_column(String(36))
    # The name of the worker that claimed it (DOCKYARD_WORKER_NAME): its release, if it
    # made one, is kept in that worker's data dir.
    built_by: Mapped[str | None] = mapped_column(String(200))

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


class FormationRow(Base):
    """One process type of an app's formation (``dockyard.domain.formation``)."""

    __tablename__ = "formations"
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True)
    process_type: Mapped[str] = mapped_column(String(63), primary_key=True)
    amount: Mapped[int] = mapped_column(Integer)
    size: Mapped[str] = mapped_column(String(8))


class Operation(Base):
    """An asynchronous change the official client may poll (scale, restart)."""

    __tablename__ = "operations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebSession(Base):
    """A dashboard sign-in (``dockyard.services.web_sessions``): the browser holds the
    secret in a cookie; only its SHA-256 digest is stored, as for API tokens."""

    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the secret's digest
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # The API token it was opened with: revoking that token ends the session too.
    token_id: Mapped[str] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Collaborator(Base):
    """A user other than the owner who may do everything with the app but destroy it and
    manage its collaborators (``dockyard.services.access``)."""

    __tablename__ = "collaborators"
    __table_args__ = (UniqueConstraint("app_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    is_limited: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship(lazy="joined")


class TimelineEvent(Base):
    """One entry of an app's timeline (``scalingo timeline``): append-only.

    No foreign key to the app: the app's ``delete_app`` event outlives it, and a user's
    timeline still shows it. The actor's name and email are copied for the same reason."""

    __tablename__ = "timeline_events"
    __table_args__ = (
        Index("ix_timeline_events_app_id_id", "app_id", "id"),
        Index("ix_timeline_events_user_id_id", "user_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(36))
    app_name: Mapped[str] = mapped_column(String(48))
    user_id: Mapped[str | None] = mapped_column(String(36))
    username: Mapped[str] = mapped_column(String(64))
    email: Mapped[str] = mapped_column(String(254))
    type: Mapped[str] = mapped_column(String(40))
    type_data: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Addon(Base):
    """A database of one app's (``dockyard.addons``): one per provider and app.

    The password is stored as the app's variables store its URL: the server needs it to
    hand the URL out again and to make backups."""

    __tablename__ = "addons"
    __table_args__ = (UniqueConstraint("app_id", "provider"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    plan: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(63))
    # provisioning, running, deprovisioning (services/addons.py)
    status: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text, default="")
    password: Mapped[str] = mapped_column(String(128))
    # The unprivileged host uid the server runs as (never an app's, never reused).
    host_uid: Mapped[int] = mapped_column(Integer, unique=True)
    port: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AddonBackup(Base):
    """A dump of an addon's data in the blob store. It belongs to the app, not the addon,
    so that it can be restored into the addon that replaces a removed one."""

    __tablename__ = "addon_backups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    addon_id: Mapped[str] = mapped_column(String(36))
    provider: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RouteRow(Base):
    """An app's route as the worker that runs it published it (separate processes): the
    router processes load it into their route table (``services.routing``)."""

    __tablename__ = "routes"

    app: Mapped[str] = mapped_column(String(48), primary_key=True)
    # The worker (DOCKYARD_WORKER_NAME) whose supervisor runs the app; only it writes here.
    owner: Mapped[str] = mapped_column(String(200))
    backends: Mapped[list] = mapped_column(JSON)  # ["host:port", ...]
    status: Mapped[str] = mapped_column(String(20))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WorkerRow(Base):
    """A worker process (DOCKYARD_WORKER_NAME) and when it last said it is alive
    (``services.presence``)."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    runtime: Mapped[str] = mapped_column(String(20))  # DOCKYARD_RUNTIME
    # The process now running under the name; "" once it stopped cleanly.
    instance: Mapped[str] = mapped_column(String(64))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PlatformSecret(Base):
    """Secrets every process of one dockyard must share (the JWT signing key), on
    PostgreSQL where processes have no data directory in common."""

    __tablename__ = "platform_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))  # hex


class LogGrant(Base):
    """A logs URL's capability (services/logaccess.py), kept as its SHA-256 digest."""

    __tablename__ = "log_grants"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class BuildCacheRow(Base):
    """Where an app's latest build cache is kept, sent by the worker that built it
    (separate processes): on the disk of the API process that received it, which alone
    serves it (services/build_caches.py)."""

    __tablename__ = "build_caches"

    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True)
    # The holder's DOCKYARD_INTERNAL_URL and the copy's ETag; None after a reset.
    holder_url: Mapped[str | None] = mapped_column(String(500))
    etag: Mapped[str | None] = mapped_column(String(100))
    # When the cache was last reset: a build started earlier may not send its cache.
    reset_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
