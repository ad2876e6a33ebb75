"""Which worker processes are alive, and the apps of the ones that are not.

Each ``dockyard worker`` says it is alive (``beat``) every third of its lease. A worker
not heard of for ``SILENT_LEASES`` leases is gone: its running deployments were already
ended by the lease rule (services/deployments.py); its apps still have it as their owner
(services/routing.py), so nobody answers for them. On the swarm runtime the apps run on
without it (Swarm keeps the services), so another worker may **adopt** them: it becomes
their owner, exactly one worker per app (the change is conditional on the old owner), and
from then on answers for them, routes them and follows their logs. A worker started again
under the gone one's name takes back only what nobody adopted meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from dockyard.backends.eventbus.base import EventBus
from dockyard.db.engine import transaction
from dockyard.db.models import RouteRow, WorkerRow
from dockyard.services.clock import as_utc, now
from dockyard.services.routing import OWNER_CHANGED, ROUTES_CHANNEL

# A worker that missed this many leases' worth of beats (three beats per lease) is gone:
# a restart (an upgrade) takes seconds, far less.
SILENT_LEASES = 2


def beat(*, db: sessionmaker[Session], name: str, runtime: str, instance: str) -> None:
    """The worker ``name`` (the process ``instance``) is alive now."""
    with transaction(db) as session:
        row = session.get(WorkerRow, name)
        if row is None:
            session.add(WorkerRow(name=name, runtime=runtime, instance=instance, seen_at=now()))
        else:
            row.runtime, row.instance, row.seen_at = runtime, instance, now()


def last_beat(*, db: sessionmaker[Session], name: str) -> tuple[str, datetime] | None:
    """The process last alive under ``name`` ("" if it stopped cleanly) and when."""
    with transaction(db) as session:
        row = session.get(WorkerRow, name)
        return None if row is None else (row.instance, as_utc(row.seen_at))


def name_in_use(
    *,
    db: sessionmaker[Session],
    name: str,
    beat_seconds: float,
    wait: Callable[[float], object] = time.sleep,
) -> bool:
    """Whether another process runs as the worker ``name`` now. A process that beat
    lately may be this one's predecessor, dead a moment ago (a crash, then a restart): it
    is alive only if it beats again within one more interval."""
    seen = last_beat(db=db, name=name)
    if seen is None or not seen[0] or seen[1] < now() - timedelta(seconds=2 * beat_seconds):
        return False
    wait(beat_seconds + 1)
    again = last_beat(db=db, name=name)
    return again is not None and bool(again[0]) and again[1] > seen[1]


def leave(*, db: sessionmaker[Session], name: str, instance: str) -> None:
    """The worker stops cleanly: the next process under its name need not wait for it.
    Its last beat stays: if it never comes back, its apps are adopted as a gone one's."""
    with transaction(db) as session:
        session.execute(
            update(WorkerRow)
            .where(WorkerRow.name == name, WorkerRow.instance == instance)
            .values(instance="")
        )


def orphans(*, db: sessionmaker[Session], me: str, lease_seconds: float) -> dict[str, str]:
    """The apps whose owner is gone (silent for ``SILENT_LEASES`` leases), with that
    owner's name. An owner never heard of is not gone: it may be a worker of the previous
    version, which does not say it is alive, running beside this one during an upgrade."""
    silent_since = now() - timedelta(seconds=SILENT_LEASES * lease_seconds)
    with transaction(db) as session:
        rows = session.execute(
            select(RouteRow.app, RouteRow.owner)
            .join(WorkerRow, WorkerRow.name == RouteRow.owner)
            .where(RouteRow.owner != me, WorkerRow.seen_at < silent_since)
        )
        return {app: owner for app, owner in rows}


def adopt(*, db: sessionmaker[Session], bus: EventBus, app: str, gone: str, me: str) -> bool:
    """``me`` owns ``app`` from now on, if ``gone`` still did (another worker may have
    adopted it first, or a new deployment moved it): whether it did."""
    with transaction(db) as session:
        changed = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
            update(RouteRow)
            .where(RouteRow.app == app, RouteRow.owner == gone)
            .values(owner=me, updated_at=now())
        ).rowcount
    if changed:
        bus.publish(ROUTES_CHANNEL, {"type": OWNER_CHANGED, "app": app, "owner": me})
    return bool(changed)
