"""The route table across processes (services/routing.py), on both databases: the worker
that runs an app writes its route, a router's table follows, and a hand-over moves the
right to write it."""

from __future__ import annotations

from dockyard.backends.eventbus.memory import MemoryEventBus
from dockyard.db.engine import make_engine, make_sessionmaker, migrate
from dockyard.routetable import Backend, RouteTable
from dockyard.services import routing


def test_the_owner_writes_the_route_and_a_hand_over_silences_the_previous_one(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    db = make_sessionmaker(engine)
    bus = MemoryEventBus()  # observers hear every publish at once, as on PostgreSQL
    router_table = RouteTable()
    routing.follow(db=db, bus=bus, routes=router_table)
    first, second = (routing.DatabaseRoutes(db, bus, owner=name) for name in ("w1", "w2"))
    handed_over: list[str] = []
    deleted: list[str] = []
    routing.on_owner_change(bus, "w1", handed_over=handed_over.append, deleted=deleted.append)

    first.set_backends("shop", [Backend("127.0.0.1", 5000)])
    assert router_table.status("shop") == "none"  # nobody took the app over yet

    first.take_over("shop")
    first.set_backends("shop", [Backend("127.0.0.1", 5000), Backend("127.0.0.1", 5001)])
    assert router_table.backends("shop") == (Backend("127.0.0.1", 5000), Backend("127.0.0.1", 5001))
    first.set_status("shop", "deploying")  # keeps the backends
    assert len(router_table.backends("shop")) == 2

    second.take_over("shop")
    assert handed_over == ["shop"]
    assert router_table.backends("shop")  # still the old release until the new one routes
    second.set_backends("shop", [Backend("127.0.0.1", 6000)])
    first.set_backends("shop", [], empty="crashed")  # a late write of the previous owner
    first.remove("shop")
    assert router_table.backends("shop") == (Backend("127.0.0.1", 6000),)
    assert first.owns("shop") is False and second.owns("shop") is True

    second.set_status("shop", "stopped")
    assert router_table.status("shop") == "stopped"
    routing.forget_app(db=db, bus=bus, app="shop")
    assert deleted == ["shop"]
    assert router_table.status("shop") == "none"

    # A router started later loads what is there.
    second.take_over("blog")
    second.set_backends("blog", [Backend("127.0.0.1", 7000)])
    late = RouteTable()
    routing.follow(db=db, bus=MemoryEventBus(), routes=late)
    assert late.backends("blog") == (Backend("127.0.0.1", 7000),)
    engine.dispose()
