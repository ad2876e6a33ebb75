"""Where the supervisor keeps what it needs to bring apps back after a restart."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dockyard.db.engine import transaction
from dockyard.db.models import App
from dockyard.services.clock import now


class DatabaseStateStore:
    """The supervisor's ``StateStore``: one JSON document per app, in the apps table."""

    def __init__(self, db: sessionmaker[Session]) -> None:
        self.db = db

    def save(self, app: str, state: dict[str, Any]) -> None:
        with transaction(self.db) as session:
            row = session.scalar(select(App).where(App.name == app))
            if row is not None:
                row.runtime_state = state or None
                row.updated_at = now()

    def load_all(self) -> dict[str, dict[str, Any]]:
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
