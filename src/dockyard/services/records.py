"""Rows to records (``dockyard.domain.records``), read while their session is open."""

from __future__ import annotations

from datetime import datetime

from dockyard.db.models import ApiToken, App, Deployment, User, Variable
from dockyard.domain.records import (
    AppRecord,
    DeploymentRecord,
    TokenRecord,
    UserRecord,
    VariableRecord,
)
from dockyard.services.clock import as_utc


def user_record(row: User) -> UserRecord:
    return UserRecord(id=row.id, username=row.username, email=row.email, fullname=row.fullname)


def app_record(row: App) -> AppRecord:
    return AppRecord(
        id=row.id,
        name=row.name,
        owner=user_record(row.owner),
        status=row.status,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        force_https=bool(row.force_https),
    )


def deployment_record(row: Deployment) -> DeploymentRecord:
    return DeploymentRecord(
        id=row.id,
        app_id=row.app_id,
        status=row.status,
        git_ref=row.git_ref,
        previous_git_ref=row.previous_git_ref,
        created_at=as_utc(row.created_at),
        finished_at=_maybe_utc(row.finished_at),
        image_size=row.image_size,
        pusher=user_record(row.pusher),
        rollback_of=row.rollback_of,
    )


def variable_record(row: Variable) -> VariableRecord:
    return VariableRecord(id=row.id, name=row.name, value=row.value)


def token_record(row: ApiToken) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        name=row.name,
        created_at=as_utc(row.created_at),
        last_used_at=_maybe_utc(row.last_used_at),
    )


def _maybe_utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)
