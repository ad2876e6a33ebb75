"""Who may do what with an app: the one place every service asks.

The owner may do everything. A collaborator may do everything but destroy the app and
manage its collaborators; asked to, they get a 403 that says so (they know the app
exists). Anyone else gets "app not found", exactly as for an app that does not exist, so
a stranger cannot even learn an app's name is taken by probing.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from dockyard.db.models import App, Collaborator
from dockyard.domain.records import UserRecord
from dockyard.errors import Forbidden, NotFound


class Action(StrEnum):
    READ = "read"  # see the app, its deployments, variables, instances, logs, timeline
    DEPLOY = "deploy"  # deploy, roll back, cancel a deployment, reset the build cache
    MANAGE = "manage"  # variables, scale, restart, stop/start, rename
    DESTROY = "destroy"
    COLLABORATORS = "collaborators"  # add or remove collaborators


OWNER_ONLY = frozenset({Action.DESTROY, Action.COLLABORATORS})

_WHY_OWNER_ONLY = {
    Action.DESTROY: "Only the app's owner can destroy it; ask {owner}.",
    Action.COLLABORATORS: "Only the app's owner can manage its collaborators; ask {owner}.",
}


def authorize(session: Session, *, user: UserRecord, app_name: str, action: Action) -> App:
    """The app called ``app_name`` if ``user`` may do ``action`` with it.

    Raises ``NotFound("app")`` when the user is neither owner nor collaborator, and
    ``Forbidden`` when a collaborator asks for an owner-only action."""
    app = session.scalar(select(App).where(App.name == app_name))
    if app is None:
        raise NotFound("app")
    if app.owner_id == user.id:
        return app
    if not is_collaborator(session, app_id=app.id, user_id=user.id):
        raise NotFound("app")
    if action in OWNER_ONLY:
        raise Forbidden(
            _WHY_OWNER_ONLY[action].format(owner=app.owner.email), code="owner_only"
        )
    return app


def is_collaborator(session: Session, *, app_id: str, user_id: str) -> bool:
    return (
        session.scalar(
            select(Collaborator.id).where(
                Collaborator.app_id == app_id, Collaborator.user_id == user_id
            )
        )
        is not None
    )


def accessible_by(user_id: str) -> ColumnElement[bool]:
    """A WHERE clause on ``App``: the apps ``user_id`` owns or collaborates on."""
    collaborated = select(Collaborator.app_id).where(Collaborator.user_id == user_id)
    return or_(App.owner_id == user_id, App.id.in_(collaborated))
