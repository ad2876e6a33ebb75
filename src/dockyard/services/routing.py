"""The route table across processes: what a worker's supervisor routes, every router
process serves (``dockyard api`` / ``worker`` / ``router`` on PostgreSQL).

One row per app in ``routes``: its backends (``host:port`` of the web instances that
answer) and the status shown when it has none, written by the one worker whose
supervisor runs the app — its **owner** — and published on ``ROUTES_CHANNEL``. A router
process loads every row at start and each changed app's row again when a notification
names it (everything again after a gap of the bus), so it needs no disk and no address
of any worker.

Ownership moves with deployments: the worker that switches an app to a new release
takes the app over (``take_over``) just before it routes the new release, and the
previous owner, told on ``ROUTES_CHANNEL``, drains and stops its instances (``hand_over``
of the supervisor) without writing the route any more. Every write is conditional on
the owner, so a late write of the previous owner (an old instance seen dead while it
drains) never overwrites the new one's route.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from dockyard.backends.eventbus.base import ALL_CHANNELS, Event, EventBus
from dockyard.db.engine import transaction
from dockyard.db.models import App, RouteRow
from dockyard.routetable import STATUSES, Backend, RouteTable
from dockyard.services.clock import now

log = logging.getLogger(__name__)

ROUTES_CHANNEL = "routes"
ROUTE_CHANGED = "route"  # {"type": "route", "app": name}
OWNER_CHANGED = "owner"  # {"type": "owner", "app": name, "owner": worker name}
ROUTE_REMOVED = "removed"  # {"type": "removed", "app": name}: the app was deleted


def _encode(backends: Iterable[Backend]) -> list[str]:
    return [f"{backend.host}:{backend.port}" for backend in dict.fromkeys(backends)]


def _decode(raw: Any) -> list[Backend]:
    backends = []
    for item in raw if isinstance(raw, list) else []:
        host, _, port = str(item).rpartition(":")
        if host and port.isdigit():
            backends.append(Backend(host, int(port)))
    return backends


class DatabaseRoutes:
    """The supervisor's ``RouteSink`` in a worker process: writes the app's row when this
    worker (``owner``) runs it, then tells the routers."""

    def __init__(self, db: sessionmaker[Session], bus: EventBus, *, owner: str) -> None:
        self.db = db
        self.bus = bus
        self.owner = owner

    def set_backends(
        self, app: str, backends: Iterable[Backend], *, empty: str = "crashed"
    ) -> None:
        encoded = _encode(backends)
        self._write(app, backends=encoded, status="running" if encoded else empty)

    def set_status(self, app: str, status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown route status {status!r}; expected one of {sorted(STATUSES)}")
        if status == "deploying":  # keeps the backends (routetable.py)
            self._write(app, backends=None, status=status)
        else:
            self._write(app, backends=[], status=status)

    def remove(self, app: str) -> None:
        with transaction(self.db) as session:
            gone = session.execute(  # type: ignore[attr-defined]  # a DELETE's CursorResult
                delete(RouteRow).where(RouteRow.app == app, RouteRow.owner == self.owner)
            ).rowcount
        if gone:
            self.bus.publish(ROUTES_CHANNEL, {"type": ROUTE_CHANGED, "app": app})

    def _write(self, app: str, *, backends: list[str] | None, status: str) -> None:
        values: dict[str, Any] = {"status": status, "updated_at": now()}
        if backends is not None:
            values["backends"] = backends
        with transaction(self.db) as session:
            written = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
                update(RouteRow)
                .where(RouteRow.app == app, RouteRow.owner == self.owner)
                .values(**values)
            ).rowcount
        if written:
            self.bus.publish(ROUTES_CHANNEL, {"type": ROUTE_CHANGED, "app": app})

    def take_over(self, app: str) -> None:
        """This worker runs ``app`` from now on: the route keeps its backends (the
        previous owner's release serves until this one routes its own), and the previous
        owner hears that it must let go."""
        with transaction(self.db) as session:
            row = session.scalar(select(RouteRow).where(RouteRow.app == app).with_for_update())
            if row is None:
                session.add(
                    RouteRow(app=app, owner=self.owner, backends=[], status="none", updated_at=now())
                )
            else:
                row.owner = self.owner
                row.updated_at = now()
        self.bus.publish(ROUTES_CHANNEL, {"type": OWNER_CHANGED, "app": app, "owner": self.owner})

    def owns(self, app: str) -> bool:
        with transaction(self.db) as session:
            return session.scalar(select(RouteRow.owner).where(RouteRow.app == app)) == self.owner


def forget_app(*, db: sessionmaker[Session], bus: EventBus, app: str) -> None:
    """The app was deleted: its route goes, and its owner stops what it runs of it."""
    with transaction(db) as session:
        session.execute(delete(RouteRow).where(RouteRow.app == app))
    bus.publish(ROUTES_CHANNEL, {"type": ROUTE_REMOVED, "app": app})


def owned_states(*, db: sessionmaker[Session], owner: str) -> dict[str, dict[str, Any]]:
    """The saved runtime state of each app that ``owner`` runs (what it restores)."""
    with transaction(db) as session:
        rows = session.execute(
            select(App.name, App.runtime_state)
            .join(RouteRow, RouteRow.app == App.name)
            .where(RouteRow.owner == owner, App.runtime_state.is_not(None))
        )
        return {name: state for name, state in rows if state}


def load(*, db: sessionmaker[Session], routes: RouteTable, apps: Sequence[str] | None) -> None:
    """Copy the rows of ``apps`` (all when None) into a router process's route table."""
    with transaction(db) as session:
        query = select(RouteRow.app, RouteRow.backends, RouteRow.status)
        if apps is not None:
            query = query.where(RouteRow.app.in_(apps))
        rows = {row.app: row for row in session.execute(query)}
    known = set(routes.snapshot().routes) if apps is None else set(apps)
    for app in known - set(rows):
        routes.remove(app)
    for app, row in rows.items():
        backends = _decode(row.backends)
        if backends:
            routes.set_backends(app, backends)
        elif row.status in STATUSES:
            routes.set_status(app, row.status)
        else:
            routes.set_backends(app, [])


def follow(*, db: sessionmaker[Session], bus: EventBus, routes: RouteTable) -> None:
    """Keep a router process's route table equal to the rows: loaded now, each app's row
    again when a worker changes it, and all of them after a gap of the bus."""

    def reload(channel: str, events: Sequence[Event]) -> None:
        if channel == ALL_CHANNELS:
            load(db=db, routes=routes, apps=None)
        elif channel == ROUTES_CHANNEL:
            apps = sorted({str(e["app"]) for e in events if isinstance(e.get("app"), str)})
            if apps:
                load(db=db, routes=routes, apps=apps)

    load(db=db, routes=routes, apps=None)
    bus.observe(reload)


def on_owner_change(
    bus: EventBus,
    owner: str,
    *,
    handed_over: Callable[[str], None],
    deleted: Callable[[str], None],
) -> None:
    """Call ``handed_over(app)`` when another worker took an app over, ``deleted(app)``
    when the app was deleted (in the bus's thread: both must be quick, and may be called
    twice for one change)."""

    def observe(channel: str, events: Sequence[Event]) -> None:
        if channel != ROUTES_CHANNEL:
            return
        for event in events:
            app = event.get("app")
            if not isinstance(app, str):
                continue
            if event.get("type") == ROUTE_REMOVED:
                deleted(app)
            elif event.get("type") == OWNER_CHANGED and event.get("owner") != owner:
                handed_over(app)

    bus.observe(observe)


# The routers' access lines, on their way to the worker that keeps each app's logs.
ROUTER_LINES_CHANNEL = "router-lines"
RouterLines = Mapping[str, Sequence[tuple[float, str]]]


def forward_router_lines(bus: EventBus) -> Callable[[RouterLines], None]:
    """A router process's access-log writer: each batch (every fraction of a second)
    goes on the bus; the bus cuts what one notification cannot carry."""

    def forward(batch: RouterLines) -> None:
        lines = {app: [[at, text] for at, text in entries] for app, entries in batch.items()}
        bus.publish(ROUTER_LINES_CHANNEL, {"type": "lines", "lines": lines})

    return forward


def collect_router_lines(bus: EventBus, write: Callable[[RouterLines], None]) -> None:
    """In a worker: hand the routers' lines to ``write`` (``RouterLogs.write``, which keeps
    only those of apps whose logs are on this worker)."""

    def observe(channel: str, events: Sequence[Event]) -> None:
        if channel != ROUTER_LINES_CHANNEL:
            return
        for event in events:
            raw = event.get("lines")
            if not isinstance(raw, dict):
                continue
            batch = {
                str(app): [
                    (float(entry[0]), str(entry[1]))
                    for entry in entries
                    if isinstance(entry, list) and len(entry) == 2
                ]
                for app, entries in raw.items()
                if isinstance(entries, list)
            }
            write(batch)

    bus.observe(observe)
