"""JSON shapes of the API (docs/api.md), rendered from the records services return."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any, NotRequired, overload

# typing_extensions: pydantic reads these on Python 3.11 only from there.
from typing_extensions import TypedDict

from dockyard.domain.formation import DEFAULT_SIZE, SIZES
from dockyard.domain.records import (
    AppRecord,
    CollaboratorRecord,
    DeploymentRecord,
    DomainRecord,
    TokenRecord,
    UserRecord,
    VariableRecord,
)
from dockyard.runtime.base import Instance
from dockyard.services.certificates import CertificateInfo
from dockyard.services.formation import ProcessType
from dockyard.services.operations import OperationRecord
from dockyard.services.timeline import EventRecord
from dockyard.settings import Settings

# -- the shapes, as typed models ---------------------------------------------------------
# The render functions below return these; ``dockyard.api.openapi`` generates the OpenAPI
# document from them (through pydantic), and the tests validate real responses against it.
# Keys are the wire's; ``total=False`` marks request bodies whose fields are optional.


class UserBody(TypedDict):
    id: str
    username: str
    fullname: str
    email: str
    flags: dict[str, Any]


class PusherBody(TypedDict):
    id: str
    username: str
    fullname: str
    email: str


class OwnerBody(TypedDict):
    id: str
    username: str
    email: str


class AppLinks(TypedDict):
    deployments_stream: str


class AppBody(TypedDict):
    id: str
    name: str
    created_at: str
    updated_at: str
    owner: OwnerBody
    url: str
    status: str
    flags: dict[str, Any]
    links: AppLinks
    force_https: bool  # plain-HTTP requests get a redirect to HTTPS (scalingo force-https)


class DeploymentLinks(TypedDict):
    output: str


class DeploymentBody(TypedDict):
    id: str
    app_id: str
    created_at: str
    finished_at: str | None
    status: str
    git_ref: str
    previous_git_ref: str | None
    type: str
    duration: int
    image_size: int
    pusher: PusherBody
    rollback_of: str | None
    links: DeploymentLinks


class VariableBody(TypedDict):
    id: str
    name: str
    value: str


class TokenBody(TypedDict):
    id: str
    name: str
    created_at: str
    last_used_at: str | None
    token: NotRequired[str]


class PaginationBody(TypedDict):
    current_page: int
    per_page: int
    prev_page: int | None
    next_page: int | None
    total_pages: int
    total_count: int


class PageMeta(TypedDict):
    pagination: PaginationBody


class ContainerSizeBody(TypedDict):
    id: str
    sku: str
    name: str
    human_name: str
    human_cpu: str
    memory: int
    pids_limit: int
    hourly_price: int
    thirtydays_price: int
    pricings: dict[str, Any]
    swap: int
    ordinal: int


class ContainerTypeBody(TypedDict):
    app_id: str
    name: str
    amount: int
    command: str
    size: str


class ContainerBody(TypedDict):
    id: str
    app_id: str
    created_at: str
    deleted_at: None
    command: str
    type: str
    type_index: int
    label: str
    state: str
    app: None
    container_size: ContainerSizeBody


class OperationBody(TypedDict):
    id: str
    app_id: str
    created_at: str
    finished_at: str | None
    status: str
    type: str
    error: str
    start_one_off_data: dict[str, Any] | None


class EventUser(TypedDict):
    id: str
    username: str
    email: str


class EventBody(TypedDict):
    id: str
    app_id: str
    app_name: str
    created_at: str
    user: EventUser
    type: str
    type_data: dict[str, Any]
    project_id: str
    project_name: str


class CollaboratorBody(TypedDict):
    id: str
    app_id: str
    username: str
    email: str
    status: str
    user_id: str
    is_limited: bool


class RegionBody(TypedDict):
    name: str
    display_name: str
    api: str
    ssh: str
    dashboard: str
    database_api: str
    default: bool


class SourceBody(TypedDict):
    id: str
    upload_url: str
    download_url: str


@overload
def timestamp(value: datetime) -> str: ...
@overload
def timestamp(value: datetime | None) -> str | None: ...
def timestamp(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="milliseconds")


def user(row: UserRecord) -> UserBody:
    return {
        "id": row.id,
        "username": row.username,
        "fullname": row.fullname,
        "email": row.email,
        "flags": {},
    }


def pusher(row: UserRecord) -> PusherBody:
    return {"id": row.id, "username": row.username, "fullname": row.fullname, "email": row.email}


def app(row: AppRecord, settings: Settings, *, status: str | None = None) -> AppBody:
    return {
        "id": row.id,
        "name": row.name,
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
        "owner": {"id": row.owner.id, "username": row.owner.username, "email": row.owner.email},
        "url": settings.app_url(row.name),
        "status": status or row.status,
        "force_https": row.force_https,
        "flags": {},
        "links": {
            "deployments_stream": f"{settings.ws_public_url}/v1/apps/{row.id}/deployments-stream"
        },
    }


def deployment(row: DeploymentRecord, app_name: str, settings: Settings) -> DeploymentBody:
    finished = row.finished_at
    started = row.created_at
    duration = int((finished - started).total_seconds()) if finished else 0
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
        "rollback_of": row.rollback_of,
        "links": {
            "output": f"{settings.public_url}/v1/apps/{app_name}/deployments/{row.id}/output"
        },
    }


def variable(row: VariableRecord) -> VariableBody:
    return {"id": row.id, "name": row.name, "value": row.value}


def token(row: TokenRecord, secret: str | None = None) -> TokenBody:
    body: TokenBody = {
        "id": row.id,
        "name": row.name,
        "created_at": timestamp(row.created_at),
        "last_used_at": timestamp(row.last_used_at),
    }
    if secret is not None:
        body["token"] = secret  # shown once, at creation
    return body


def pagination(*, page: int, per_page: int, total_count: int) -> PaginationBody:
    total_pages = max(1, math.ceil(total_count / per_page))
    return {
        "current_page": page,
        "per_page": per_page,
        "prev_page": page - 1 if page > 1 else None,
        "next_page": page + 1 if page < total_pages else None,
        "total_pages": total_pages,
        "total_count": total_count,
    }


def container_size(name: str) -> ContainerSizeBody:
    size = SIZES.get(name, SIZES[DEFAULT_SIZE])
    return {
        "id": size.name,
        "sku": size.name,
        "name": size.name,
        "human_name": size.name,
        "human_cpu": "shared",
        "memory": size.memory_bytes,
        "pids_limit": size.max_processes,
        "hourly_price": 0,
        "thirtydays_price": 0,
        "pricings": {},
        "swap": 0,
        "ordinal": list(SIZES).index(size.name),
    }


def container_type(app: AppRecord, process_type: ProcessType) -> ContainerTypeBody:
    """A process type of the formation, as ``scalingo containers`` and ``scale`` read it."""
    return {
        "app_id": app.id,
        "name": process_type.name,
        "amount": process_type.amount,
        "command": process_type.command,
        "size": process_type.size,
    }


def container(app: AppRecord, instance: Instance) -> ContainerBody:
    """One instance, as ``scalingo ps`` reads it (``created_at`` must never be null)."""
    started = instance.started_at if instance.started_at is not None else time.time()
    return {
        "id": f"{app.id}-{instance.name}",
        "app_id": app.id,
        "created_at": timestamp(datetime.fromtimestamp(started, UTC)),
        "deleted_at": None,
        "command": instance.command,
        "type": instance.process_type,
        "type_index": instance.index,
        "label": instance.name,
        "state": instance.state,
        "app": None,
        "container_size": container_size(instance.size),
    }


def operation(
    row: OperationRecord, start_one_off_data: dict[str, str] | None = None
) -> OperationBody:
    """``start_one_off_data`` (``attach_url``, ``container_id``) for a started one-off: the
    official client attaches to that URL once the operation is done."""
    return {
        "id": row.id,
        "app_id": row.app_id,
        "created_at": timestamp(row.created_at),
        "finished_at": timestamp(row.finished_at),
        "status": row.status,
        "type": row.type,
        "error": row.error or "",
        "start_one_off_data": start_one_off_data,
    }


def domain(
    row: DomainRecord, *, served: CertificateInfo | None, own: CertificateInfo | None
) -> dict[str, Any]:
    """A custom domain as ``scalingo domains`` prints it. ``served`` is the certificate the
    HTTPS router really presents for the name (None: none yet, or no HTTPS router); ``own``
    is the owner's certificate, if they gave one. Their private key is never shown."""
    served_here = served if served is not None and served.covers(row.name) else None
    by_acme = served_here is not None and own is None
    shown = served_here or own
    return {
        "id": row.id,
        "app_id": row.app_id,
        "name": row.name,
        # The client prints this field as the "TLS Subject" column.
        "tlscert": own.subject if own is not None else "",
        "tlskey": "",
        "ssl": own is not None,
        "validity": timestamp(shown.not_after) if shown is not None else None,
        "canonical": False,
        "letsencrypt_enabled": row.letsencrypt_enabled and own is None,
        "letsencrypt": by_acme,
        # "new" ("Creating"): ordered on the first HTTPS visit to the name (on-demand).
        "letsencrypt_status": "created" if by_acme else "new",
        "ssl_status": "success" if own is not None and served_here is not None else "pending",
        "acme_dns_fqdn": "",
        "acme_dns_value": "",
        "acme_dns_error": {"dns_provider": "", "variables": []},
        "created_at": timestamp(row.created_at),
    }
def event(row: EventRecord) -> EventBody:
    """One timeline event (API-OPS §6): the client prints it from ``type`` and ``type_data``."""
    return {
        "id": str(row.id),
        "app_id": row.app_id,
        "app_name": row.app_name,
        "created_at": timestamp(row.created_at),
        "user": {"id": row.user_id or "", "username": row.username, "email": row.email},
        "type": row.type,
        "type_data": row.type_data,
        "project_id": "",
        "project_name": "",
    }


def collaborator(row: CollaboratorRecord) -> CollaboratorBody:
    return {
        "id": row.id,
        "app_id": row.app_id,
        "username": row.user.username,
        "email": row.user.email,
        "status": "accepted",  # no invitations: an existing user has access at once
        "user_id": row.user.id,
        "is_limited": row.is_limited,
    }


# -- request bodies (what the handlers read; they answer a 422 saying what to change) ------


class AppFields(TypedDict):
    name: str


class AppCreate(TypedDict):
    app: AppFields


class RenameRequest(TypedDict):
    current_name: str
    new_name: str


class VariableFields(TypedDict):
    name: str
    value: str


class VariableCreate(TypedDict):
    variable: VariableFields


class VariablesUpdate(TypedDict):
    variables: list[VariableFields]


class VariableValue(TypedDict):
    value: str


class VariableUpdate(TypedDict):
    variable: VariableValue


class TokenFields(TypedDict):
    name: str


class TokenCreate(TypedDict):
    token: TokenFields


class DeploymentFields(TypedDict, total=False):
    source_url: str
    download_url: str  # the older name of source_url
    git_ref: str | None


class DeploymentCreate(TypedDict):
    deployment: DeploymentFields


class RollbackRequest(TypedDict, total=False):
    deployment_id: str  # left out: the successful release before the serving one


class RestartRequest(TypedDict, total=False):
    scope: list[str]


class ScaleItem(TypedDict, total=False):
    name: str
    amount: int
    size: str


class ScaleRequest(TypedDict):
    containers: list[ScaleItem]


class CollaboratorFields(TypedDict, total=False):
    email: str
    is_limited: bool


class CollaboratorAdd(TypedDict):
    collaborator: CollaboratorFields


class EmptyBody(TypedDict):
    pass
