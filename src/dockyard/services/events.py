"""A deployment's ordered events: stored first, then published.

Log lines and status changes share one sequence per deployment, so ``output``, the
stream's replay and its live view are the same list read at different times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dockyard.backends.eventbus.base import EventBus
from dockyard.db.engine import transaction
from dockyard.db.models import DeploymentEvent

LOG = "log"
STATUS = "status"
# Published for the platform's own listeners, never sent to a stream's clients.
APP_DELETED = "_app_deleted"
# Who may see the app, or its name, changed (a collaborator removed, a rename).
ACCESS_CHANGED = "_access_changed"
# A longer build line is cut here (everywhere, so output and stream stay identical). The
# PostgreSQL bus no longer needs it (it splits what a NOTIFY cannot carry), but it keeps
# one line of a runaway build from weighing megabytes in the log and every stream.
MAX_LINE_CHARS = 4000


_CHANNEL_PREFIX = "app:"


def channel_for(app_id: str) -> str:
    return f"{_CHANNEL_PREFIX}{app_id}"


def app_of_channel(channel: str) -> str | None:
    return channel[len(_CHANNEL_PREFIX) :] if channel.startswith(_CHANNEL_PREFIX) else None


def wire_event(deployment_id: str, kind: str, content: str, seq: int) -> dict[str, Any]:
    data = {"content": content} if kind == LOG else {"status": content}
    return {"type": kind, "id": deployment_id, "seq": seq, "data": data}


@dataclass(frozen=True)
class StoredEvent:
    """An event as ``append`` stored it (what ``publish`` sends)."""

    deployment_id: str
    seq: int
    kind: str
    content: str


def append(
    session: Session, *, deployment_id: str, entries: Sequence[tuple[str, str]]
) -> list[StoredEvent]:
    """Add events inside the caller's transaction; numbers follow the stored maximum.

    One bulk INSERT, no ORM objects: a build printing a thousand lines a second spent a
    third of the server's Python time in the unit of work, holding the GIL that the
    event loop streaming those lines needs."""
    if not entries:
        return []  # an INSERT of no rows would be one row of defaults
    last = session.scalar(
        select(func.max(DeploymentEvent.seq)).where(DeploymentEvent.deployment_id == deployment_id)
    )
    rows = [
        StoredEvent(deployment_id, (last or 0) + offset, kind, _stored_content(kind, content))
        for offset, (kind, content) in enumerate(entries, start=1)
    ]
    session.execute(
        insert(DeploymentEvent),
        [
            {"deployment_id": r.deployment_id, "seq": r.seq, "kind": r.kind, "content": r.content}
            for r in rows
        ],
    )
    return rows


def _stored_content(kind: str, content: str) -> str:
    """A log line without its line ending, however it reached the log; at most
    MAX_LINE_CHARS."""
    if kind == LOG:
        content = content.rstrip("\r\n")
    return content[:MAX_LINE_CHARS]


def publish(bus: EventBus, *, app_id: str, rows: Sequence[StoredEvent]) -> None:
    bus.publish_many(
        channel_for(app_id),
        [wire_event(row.deployment_id, row.kind, row.content, row.seq) for row in rows],
    )


class DeploymentLog:
    """The writer of one deployment's log lines (used by the worker running it)."""

    def __init__(
        self, *, db: sessionmaker[Session], bus: EventBus, app_id: str, deployment_id: str
    ) -> None:
        self.db = db
        self.bus = bus
        self.app_id = app_id
        self.deployment_id = deployment_id

    def __call__(self, line: str) -> None:
        self.lines([line])

    def lines(self, lines: Sequence[str]) -> None:
        for _attempt in range(5):
            try:
                with transaction(self.db) as session:
                    rows = append(
                        session,
                        deployment_id=self.deployment_id,
                        entries=[(LOG, line) for line in lines],
                    )
                break
            except IntegrityError:
                continue  # a status change took the same number; take the next ones
        else:
            raise RuntimeError("could not store deployment log lines")
        publish(self.bus, app_id=self.app_id, rows=rows)


def events_since(
    session: Session, *, deployment_id: str, after_seq: int = 0
) -> list[DeploymentEvent]:
    return list(
        session.scalars(
            select(DeploymentEvent)
            .where(DeploymentEvent.deployment_id == deployment_id, DeploymentEvent.seq > after_seq)
            .order_by(DeploymentEvent.seq)
        )
    )


def output_text(session: Session, *, deployment_id: str) -> str:
    lines = session.scalars(
        select(DeploymentEvent.content)
        .where(DeploymentEvent.deployment_id == deployment_id, DeploymentEvent.kind == LOG)
        .order_by(DeploymentEvent.seq)
    )
    return "".join(line + "\n" for line in lines)
