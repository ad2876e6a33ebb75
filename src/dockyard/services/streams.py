"""What a deployment stream reads from the database: the app it follows, and the replay of
recent deployments with every event stored so far."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dockyard.db.engine import transaction
from dockyard.db.models import App, Deployment
from dockyard.domain.records import AppRecord, DeploymentRecord, UserRecord
from dockyard.domain.status import FINAL
from dockyard.errors import NotFound
from dockyard.services import events
from dockyard.services.access import Action, authorize
from dockyard.services.records import app_record, deployment_record

REPLAYED_DEPLOYMENTS = 5


@dataclass(frozen=True)
class Replay:
    """One deployment as the stream replays it: the deployment, then its events in order."""

    deployment: DeploymentRecord
    events: list[events.StoredEvent]


def followed_app(*, db: sessionmaker[Session], app_id: str, user: UserRecord) -> AppRecord | None:
    """The app a stream asks for, if ``user`` may follow it."""
    with transaction(db) as session:
        app = session.get(App, app_id)
        if app is None:
            return None
        try:
            return app_record(authorize(session, user=user, app_name=app.name, action=Action.READ))
        except NotFound:
            return None


def replay(*, db: sessionmaker[Session], app_id: str) -> list[Replay]:
    """The app's recent deployments (and any still running), oldest first."""
    with transaction(db) as session:
        recent = list(
            session.scalars(
                select(Deployment)
                .where(Deployment.app_id == app_id)
                .order_by(Deployment.created_at.desc())
                .limit(REPLAYED_DEPLOYMENTS)
            )
        )
        running = session.scalars(
            select(Deployment).where(Deployment.app_id == app_id, Deployment.status.not_in(FINAL))
        )
        chosen = {d.id: d for d in [*recent, *running]}
        return [
            Replay(
                deployment=deployment_record(deployment),
                events=[
                    events.StoredEvent(row.deployment_id, row.seq, row.kind, row.content)
                    for row in events.events_since(session, deployment_id=deployment.id)
                ],
            )
            for deployment in sorted(chosen.values(), key=lambda d: d.created_at)
        ]


def deployment(*, db: sessionmaker[Session], deployment_id: str) -> DeploymentRecord | None:
    with transaction(db) as session:
        row = session.get(Deployment, deployment_id)
        return None if row is None else deployment_record(row)
