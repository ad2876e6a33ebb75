"""JSON shapes of the API (API.md), rendered from service results — never ORM rows as is."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from dockyard.db.models import ApiToken, App, Deployment, User, Variable
from dockyard.services.clock import as_utc
from dockyard.settings import Settings


def timestamp(value: datetime | None) -> str | None:
    if value is None:
        return None
    return as_utc(value).isoformat(timespec="milliseconds")


def user(row: User) -> dict[str, Any]:
    return {
        "id": row.id,
        "username": row.username,
        "fullname": row.fullname,
        "email": row.email,
        "flags": {},
    }


def pusher(row: User) -> dict[str, Any]:
    return {"id": row.id, "username": row.username, "fullname": row.fullname, "email": row.email}


def app(row: App, settings: Settings, *, status: str | None = None) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
        "owner": {"id": row.owner.id, "username": row.owner.username, "email": row.owner.email},
        "url": settings.app_url(row.name),
        "status": status or row.status,
        "flags": {},
        "links": {
            "deployments_stream": f"{settings.ws_public_url}/v1/apps/{row.id}/deployments-stream"
        },
    }


def deployment(row: Deployment, app_name: str, settings: Settings) -> dict[str, Any]:
    finished = row.finished_at
    started = row.created_at
    duration = int((as_utc(finished) - as_utc(started)).total_seconds()) if finished else 0
    return {
        "id": row.id,
        "app_id": row.app_id,
        "created_at": timestamp(row.created_at),
        "finished_at": timestamp(finished),
        "status": row.status,
        "git_ref": row.git_ref,
        "previous_git_ref": row.previous_git_ref,
        "type": "archive",
        "duration": duration,
        "image_size": row.image_size or 0,
        "pusher": pusher(row.pusher),
        "links": {
            "output": f"{settings.public_url}/v1/apps/{app_name}/deployments/{row.id}/output"
        },
    }


def variable(row: Variable) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "value": row.value}


def token(row: ApiToken, secret: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "created_at": timestamp(row.created_at),
        "last_used_at": timestamp(row.last_used_at),
    }
    if secret is not None:
        body["token"] = secret  # shown once, at creation
    return body


def pagination(*, page: int, per_page: int, total_count: int) -> dict[str, Any]:
    total_pages = max(1, math.ceil(total_count / per_page))
    return {
        "current_page": page,
        "per_page": per_page,
        "prev_page": page - 1 if page > 1 else None,
        "next_page": page + 1 if page < total_pages else None,
        "total_pages": total_pages,
        "total_count": total_count,
    }
