"""Where the supervisor keeps what it needs to bring apps back after a restart."""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from dockyard.db.engine import transaction
from dockyard.db.models import App, RouteRow
from dockyard.services import routing
from dockyard.services.clock import now


class DatabaseStateStore:
    """The supervisor's ``StateStore``: one JSON document per app, in the apps table."""

    def __init__(self, db: sessionmaker[Session], *, owner: str | None = None) -> None:
        self.db = db
        # A worker process (services/routing.py) saves and restores only the apps it runs;
        # None: the one process of ``dockyard serve`` runs them all.
        self.owner = owner

    def save(self, app: str, state: dict[str, Any]) -> None:
        with transaction(self.db) as session:
            query = select(App).where(App.name == app)
            if self.owner is not None:
                query = query.where(
                    exists().where(RouteRow.app == App.name, RouteRow.owner == self.owner)
                )
            row = session.scalar(query)
            if row is not None:
                row.runtime_state = state or None
                row.updated_at = now()

    def load_all(self) -> dict[str, dict[str, Any]]:
        if self.owner is not None:
            return routing.owned_states(db=self.db, owner=self.owner)
        with transaction(self.db) as session:
            rows = session.execute(
                select(App.name, App.runtime_state).where(App.runtime_state.is_not(None))
            )
            return {name: state for name, state in rows if state}

    def sandbox_uid(self, app: str) -> int:
        with transaction(self.db) as session:
            uid = session.scalar(select(App.sandbox_uid).where(App.name == app))
        if uid is None:
            raise KeyError(app)
        return uid
