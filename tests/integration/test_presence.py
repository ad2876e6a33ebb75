"""Workers' presence (services/presence.py), on both databases: a worker silent for two
leases is gone, and exactly one other worker adopts each of its apps; a worker never heard
of (the previous version's, during an upgrade) is not gone."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Engine, update

from dockyard.backends.eventbus.memory import MemoryEventBus
from dockyard.db.engine import make_engine, make_sessionmaker, migrate, transaction
from dockyard.db.models import WorkerRow
from dockyard.services import presence, routing
from dockyard.services.clock import now

LEASE = 30.0


def test_the_apps_of_a_silent_worker_are_adopted_once(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        check_adoption(engine)
    finally:
        engine.dispose()


def check_adoption(engine: Engine) -> None:
    migrate(engine)
    db = make_sessionmaker(engine)
    bus = MemoryEventBus()
    for worker, app in (("w1", "shop"), ("w2", "blog"), ("old", "legacy")):
        routing.DatabaseRoutes(db, bus, owner=worker).take_over(app)
    told: list[str] = []
    routing.on_owner_change(bus, "w1", handed_over=told.append, deleted=lambda app: None)
    for worker in ("w1", "w2", "w3"):
        presence.beat(db=db, name=worker, runtime="swarm", instance=f"{worker}-1")
    assert presence.orphans(db=db, me="w3", lease_seconds=LEASE) == {}

    # w1 said it was alive a minute ago: more than two leases.
    with transaction(db) as session:
        session.execute(
            update(WorkerRow)
            .where(WorkerRow.name == "w1")
            .values(seen_at=now() - timedelta(seconds=2 * LEASE + 1))
        )
    # "old" never said anything (the previous version's worker): it is not gone.
    assert presence.orphans(db=db, me="w3", lease_seconds=LEASE) == {"shop": "w1"}
    assert presence.orphans(db=db, me="w1", lease_seconds=LEASE) == {}  # not its own

    assert presence.adopt(db=db, bus=bus, app="shop", gone="w1", me="w3") is True
    assert presence.adopt(db=db, bus=bus, app="shop", gone="w1", me="w2") is False  # too late
    assert routing.DatabaseRoutes(db, bus, owner="w3").owns("shop")
    assert told == ["shop"]  # w1, if it was only slow, lets go
    assert presence.orphans(db=db, me="w2", lease_seconds=LEASE) == {}

    presence.beat(db=db, name="w1", runtime="swarm", instance="w1-2")  # back: its other apps are its own
    assert presence.orphans(db=db, me="w3", lease_seconds=LEASE) == {}


def test_a_second_worker_under_a_live_ones_name_is_told_apart_from_a_restart(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        db = make_sessionmaker(engine)
        waits: list[float] = []

        def in_use(meanwhile: Callable[[], object] = lambda: None) -> bool:
            def wait(seconds: float) -> None:
                waits.append(seconds)
                meanwhile()

            return presence.name_in_use(db=db, name="w1", beat_seconds=10, wait=wait)

        assert not in_use()  # never seen
        presence.beat(db=db, name="w1", runtime="local", instance="host:1")
        # It beat a moment ago: alive only if it beats again meanwhile.
        assert in_use(lambda: presence.beat(db=db, name="w1", runtime="local", instance="host:1"))
        assert not in_use()  # it did not: it died, and this is its restart
        assert waits == [11, 11]
        presence.leave(db=db, name="w1", instance="host:1")
        assert not in_use() and len(waits) == 2  # stopped cleanly: no wait at all
        assert presence.last_beat(db=db, name="w1") is not None
    finally:
        engine.dispose()
