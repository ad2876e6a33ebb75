"""Operations: changes that finish after their request was answered (scale, restart),
which the official client polls until they are ``done`` or in ``error``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from dockyard.db.engine import transaction
from dockyard.db.models import Operation
from dockyard.domain.records import UserRecord
from dockyard.errors import NotFound
from dockyard.services.access import Action, authorize
from dockyard.services.clock import as_utc, new_id, now

log = logging.getLogger(__name__)

PENDING, RUNNING, DONE, ERROR = "pending", "running", "done", "error"
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class OperationRecord:
    id: str
    app_id: str
    type: str
    status: str
    error: str | None
    created_at: datetime
    finished_at: datetime | None


def _record(row: Operation) -> OperationRecord:
    return OperationRecord(
        id=row.id,
        app_id=row.app_id,
        type=row.type,
        status=row.status,
        error=row.error,
        created_at=as_utc(row.created_at),
        finished_at=None if row.finished_at is None else as_utc(row.finished_at),
    )


def start(*, db: sessionmaker[Session], app_id: str, type: str) -> OperationRecord:
    with transaction(db) as session:
        row = Operation(
            id=new_id(), app_id=app_id, type=type, status=RUNNING, error=None, created_at=now()
        )
        session.add(row)
        session.flush()
        return _record(row)


def finish(*, db: sessionmaker[Session], operation_id: str, error: str | None = None) -> None:
    with transaction(db) as session:
        row = session.get(Operation, operation_id)
        if row is not None and row.status in (PENDING, RUNNING):
            row.status = DONE if error is None else ERROR
            row.error = error
            row.finished_at = now()


def find(
    *, db: sessionmaker[Session], owner: UserRecord, app_name: str, operation_id: str
) -> OperationRecord:
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.READ)
        row = session.get(Operation, operation_id)
        if row is None or row.app_id != app.id:
            raise NotFound("operation")
        return _record(row)


def watch(
    *,
    db: sessionmaker[Session],
    operation_id: str,
    done: Callable[[], bool],
    timeout: float,
    failure: str,
) -> threading.Thread:
    """End the operation once ``done()`` holds, or in error with ``failure`` after
    ``timeout`` seconds; in a thread of its own, which is returned started."""

    def wait() -> None:
        deadline = time.monotonic() + timeout
        try:
            while not done():
                if time.monotonic() >= deadline:
                    finish(db=db, operation_id=operation_id, error=failure)
                    return
                time.sleep(POLL_SECONDS)
            finish(db=db, operation_id=operation_id)
        except Exception:
            log.exception("operation %s could not be followed", operation_id)

    thread = threading.Thread(target=wait, name=f"operation-{operation_id[:8]}", daemon=True)
    thread.start()
    return thread
