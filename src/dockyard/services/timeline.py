"""The app's timeline: an append-only record of what happened to it, by whom and when.

Each change records one event, named and shaped as Scalingo's (API-OPS §6), so the
official client's ``timeline`` prints it. Variable events carry names only: a value must
never land in a log nobody can edit. Domains and addons record theirs with ``record``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from dockyard.db.engine import transaction
from dockyard.db.models import App, Deployment, TimelineEvent
from dockyard.domain.formation import Scale
from dockyard.domain.records import UserRecord
from dockyard.services.access import Action, accessible_by, authorize
from dockyard.services.clock import as_utc, now

# The type names the client knows (GS/events_*.go); an unknown one prints generically.
DEPLOYMENT = "deployment"
NEW_VARIABLE = "new_variable"
EDIT_VARIABLE = "edit_variable"
EDIT_VARIABLES = "edit_variables"
DELETE_VARIABLE = "delete_variable"
RESTART = "restart"
STOP_APP = "stop_app"
RUN = "run"
SCALE = "scale"
NEW_APP = "new_app"
RENAME_APP = "rename_app"
DELETE_APP = "delete_app"
NEW_COLLABORATOR = "new_collaborator"
DELETE_COLLABORATOR = "delete_collaborator"


@dataclass(frozen=True)
class EventRecord:
    id: int
    app_id: str
    app_name: str
    user_id: str | None
    username: str
    email: str
    type: str
    type_data: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class EventPage:
    items: list[EventRecord]
    page: int
    per_page: int
    total_count: int


def add(
    session: Session,
    *,
    app_id: str,
    app_name: str,
    user: UserRecord,
    type: str,
    data: Mapping[str, Any],
) -> None:
    """Record an event in the caller's transaction: it commits with the change, or not."""
    session.add(
        TimelineEvent(
            app_id=app_id,
            app_name=app_name,
            user_id=user.id,
            username=user.username,
            email=user.email,
            type=type,
            type_data=dict(data),
            created_at=now(),
        )
    )


def record(
    *,
    db: sessionmaker[Session],
    app_id: str,
    app_name: str,
    user: UserRecord,
    type: str,
    data: Mapping[str, Any],
) -> None:
    """Record an event in a transaction of its own (for changes made outside the
    database: a restart, a scale applied, a domain or addon added)."""
    with transaction(db) as session:
        add(session, app_id=app_id, app_name=app_name, user=user, type=type, data=data)


# -- what each change records --------------------------------------------------------


def variables_changed(
    session: Session,
    *,
    app: App,
    user: UserRecord,
    added: Sequence[str] = (),
    modified: Sequence[str] = (),
    removed: Sequence[str] = (),
) -> None:
    """One event per change of the environment: the single-variable types when one
    variable changed (as ``env-set``/``env-unset`` of one name), ``edit_variables``
    otherwise. Names only: ``value`` stays empty."""
    changes = [(NEW_VARIABLE, n) for n in added] + [(EDIT_VARIABLE, n) for n in modified]
    changes += [(DELETE_VARIABLE, n) for n in removed]
    if not changes:
        return
    if len(changes) == 1:
        kind, name = changes[0]
        add(session, app_id=app.id, app_name=app.name, user=user, type=kind, data={"name": name})
        return
    add(
        session,
        app_id=app.id,
        app_name=app.name,
        user=user,
        type=EDIT_VARIABLES,
        data={
            "new_vars": [{"name": n} for n in added],
            "updated_vars": [{"name": n} for n in modified],
            "deleted_vars": [{"name": n} for n in removed],
        },
    )


def deployment_ended(session: Session, *, deployment: Deployment) -> None:
    """The deployment's event, at its final status, by its pusher."""
    app = session.get(App, deployment.app_id)
    if app is None:
        return
    finished = as_utc(deployment.finished_at or now())
    data = {
        "deployment_id": deployment.id,
        "deployment_uuid": deployment.id,
        "pusher": deployment.pusher.username,
        "git_ref": deployment.git_ref,
        "status": deployment.status,
        "duration": int((finished - as_utc(deployment.created_at)).total_seconds()),
    }
    if deployment.rollback_of is not None:
        data["rollback_of"] = deployment.rollback_of
    pusher = deployment.pusher
    add(
        session,
        app_id=app.id,
        app_name=app.name,
        user=UserRecord(
            id=pusher.id, username=pusher.username, email=pusher.email, fullname=pusher.fullname
        ),
        type=DEPLOYMENT,
        data=data,
    )


def formation_text(formation: Mapping[str, Scale]) -> dict[str, str]:
    """A formation as the ``scale`` event carries it: ``{"web": "2:M"}``."""
    return {name: f"{scale.amount}:{scale.size}" for name, scale in formation.items()}


# -- reading -------------------------------------------------------------------------


def app_events(
    *, db: sessionmaker[Session], user: UserRecord, app_name: str, page: int, per_page: int
) -> EventPage:
    """The app's events, newest first."""
    with transaction(db) as session:
        app = authorize(session, user=user, app_name=app_name, action=Action.READ)
        return _page(session, TimelineEvent.app_id == app.id, page, per_page)


def user_events(
    *, db: sessionmaker[Session], user: UserRecord, page: int, per_page: int
) -> EventPage:
    """The events of every app the user owns or collaborates on, and what they did
    themselves (an app they destroyed included), newest first."""
    with transaction(db) as session:
        apps = select(App.id).where(accessible_by(user.id))
        where = or_(TimelineEvent.app_id.in_(apps), TimelineEvent.user_id == user.id)
        return _page(session, where, page, per_page)


def _page(session: Session, where: Any, page: int, per_page: int) -> EventPage:
    total = session.scalar(select(func.count()).select_from(TimelineEvent).where(where)) or 0
    rows = session.scalars(
        select(TimelineEvent)
        .where(where)
        .order_by(TimelineEvent.id.desc())
        .offset((page - 1) * per_page)
        .limit(per_page)
    )
    return EventPage(
        items=[_event_record(row) for row in rows],
        page=page,
        per_page=per_page,
        total_count=total,
    )


def _event_record(row: TimelineEvent) -> EventRecord:
    return EventRecord(
        id=row.id,
        app_id=row.app_id,
        app_name=row.app_name,
        user_id=row.user_id,
        username=row.username,
        email=row.email,
        type=row.type,
        type_data=dict(row.type_data or {}),
        created_at=as_utc(row.created_at),
    )
