"""What services hand to their callers: plain, immutable values, never ORM rows.

A row is tied to the session that loaded it (a lazy attribute read after the transaction
ends fails or, worse, queries again); these records are complete when returned, so the API,
the CLI and the dashboard can render them anywhere, from any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class UserRecord:
    id: str
    username: str
    email: str
    fullname: str


@dataclass(frozen=True)
class AppRecord:
    id: str
    name: str
    owner: UserRecord
    status: str
    created_at: datetime
    updated_at: datetime
    force_https: bool = False


@dataclass(frozen=True)
class DeploymentRecord:
    id: str
    app_id: str
    status: str
    git_ref: str
    previous_git_ref: str | None
    created_at: datetime
    finished_at: datetime | None
    image_size: int | None
    pusher: UserRecord
    rollback_of: str | None = None  # the deployment whose release a rollback started again


@dataclass(frozen=True)
class VariableRecord:
    id: str
    name: str
    value: str


@dataclass(frozen=True)
class TokenRecord:
    id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True)
class DomainRecord:
    """A custom domain of an app. ``tlscert`` is the owner's own certificate (PEM), if any;
    its key is never part of a record."""

    id: str
    app_id: str
    app_name: str
    name: str
    letsencrypt_enabled: bool
    tlscert: str | None
    created_at: datetime


@dataclass(frozen=True)
class CollaboratorRecord:
    id: str
    app_id: str
    user: UserRecord
    is_limited: bool
