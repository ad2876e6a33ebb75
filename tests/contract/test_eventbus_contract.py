"""What every event bus does, checked on each implementation alike: the in-process bus
and the PostgreSQL one (real LISTEN/NOTIFY on a fresh database).

A new bus joins by adding a param to ``make_bus``. Each test is one scenario on a fresh
event loop; events are published from threads, as the workers and the API do.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence

import pytest

from dockyard.backends.eventbus.base import Event, EventBus, Subscription
from dockyard.backends.eventbus.memory import MemoryEventBus
from dockyard.backends.eventbus.postgres import PostgresEventBus

BusFactory = Callable[[], EventBus]
DELIVERY_SECONDS = 10  # an event must arrive within this; only a broken bus waits that long


@pytest.fixture(params=["memory", "postgresql"])
def make_bus(request: pytest.FixtureRequest) -> BusFactory:
    if request.param == "memory":
        return MemoryEventBus
    url: str = request.getfixturevalue("postgres_url")
    return lambda: PostgresEventBus(url)


def run(make_bus: BusFactory, scenario: Callable[[EventBus], Awaitable[None]]) -> None:
    async def main() -> None:
        bus = make_bus()
        await bus.start()
        try:
            await scenario(bus)
        finally:
            await bus.close()

    asyncio.run(main())


async def receive(subscription: Subscription, count: int) -> list[Event]:
    return [
        await asyncio.wait_for(subscription.get(), timeout=DELIVERY_SECONDS) for _ in range(count)
    ]


async def publish(bus: EventBus, channel: str, events: Sequence[Event]) -> None:
    """From a worker thread, as builds publish."""
    await asyncio.to_thread(bus.publish_many, channel, events)


def test_events_reach_every_subscriber_of_their_channel_in_order(make_bus: BusFactory) -> None:
    async def scenario(bus: EventBus) -> None:
        subscriptions = [bus.subscribe("app:1") for _ in range(3)]
        other = bus.subscribe("app:2")

        def one_by_one() -> None:
            for n in range(100):
                bus.publish("app:1", {"type": "log", "n": n})

        await asyncio.to_thread(one_by_one)
        for subscription in subscriptions:
            assert [e["n"] for e in await receive(subscription, 100)] == list(range(100))
        assert other.queue.empty()

    run(make_bus, scenario)


def test_a_batch_of_thousands_of_lines_arrives_whole_and_in_order(make_bus: BusFactory) -> None:
    batch = [{"type": "log", "seq": n, "data": {"content": f"line {n}"}} for n in range(3000)]

    async def scenario(bus: EventBus) -> None:
        subscription = bus.subscribe("app:1")
        await publish(bus, "app:1", batch[:10])
        await publish(bus, "app:1", batch[10:])
        assert await receive(subscription, len(batch)) == batch

    run(make_bus, scenario)


def test_events_of_any_size_and_characters_arrive_intact(make_bus: BusFactory) -> None:
    # Each escapes to ~24 KB of JSON: PostgreSQL refuses notifications of 8,000 bytes.
    events = [
        {"type": "log", "seq": 1, "data": {"content": "é" * 4000}},
        {"type": "log", "seq": 2, "data": {"content": '"' * 4000 + "\\" * 4000}},
        {"type": "log", "seq": 3, "data": {"content": "\x01" * 4000}},
        {"type": "status", "seq": 4, "data": {"status": "success"}},
    ]

    async def scenario(bus: EventBus) -> None:
        subscription = bus.subscribe("app:1")
        await publish(bus, "app:1", events)
        assert await receive(subscription, len(events)) == events

    run(make_bus, scenario)


def test_a_closed_subscription_gets_nothing_more(make_bus: BusFactory) -> None:
    async def scenario(bus: EventBus) -> None:
        leaving, staying = bus.subscribe("app:1"), bus.subscribe("app:1")
        await publish(bus, "app:1", [{"n": 1}])
        assert await receive(leaving, 1) == [{"n": 1}]
        leaving.close()
        await publish(bus, "app:1", [{"n": 2}])
        # One path, one order: once the staying subscriber has the event, the one that
        # left would have had it too.
        assert await receive(staying, 2) == [{"n": 1}, {"n": 2}]
        assert leaving.queue.empty()

    run(make_bus, scenario)


def test_a_slow_subscriber_is_cut_off_without_holding_up_the_others(
    make_bus: BusFactory,
) -> None:
    events = [{"type": "log", "n": n} for n in range(50)]

    async def scenario(bus: EventBus) -> None:
        slow = bus.subscribe("app:1", backlog=10)
        fast = bus.subscribe("app:1")
        await publish(bus, "app:1", events)
        assert await receive(fast, 50) == events
        assert slow.overflowed
        drained = [slow.queue.get_nowait() for _ in range(slow.queue.qsize())]
        assert len(drained) == 10
        assert drained[-1] == {"type": "_overflow"}  # wakes the reader to close its stream

    run(make_bus, scenario)


def test_observers_see_each_batch_before_publish_returns(make_bus: BusFactory) -> None:
    seen: list[tuple[str, list[Event]]] = []
    lock = threading.Lock()

    def observer(channel: str, events: Sequence[Event]) -> None:
        with lock:
            seen.append((channel, list(events)))

    def failing(channel: str, events: Sequence[Event]) -> None:
        raise RuntimeError("an observer's bug")

    async def scenario(bus: EventBus) -> None:
        subscription = bus.subscribe("app:1")
        batch = [{"type": "status", "n": 1}, {"type": "status", "n": 2}]
        await publish(bus, "app:1", batch)
        with lock:
            assert ("app:1", batch) in seen
        # The failing observer stopped neither the publisher nor the delivery.
        assert await receive(subscription, 2) == batch

    bus_factory = make_bus

    def observed_bus() -> EventBus:
        bus = bus_factory()
        bus.observe(failing)
        bus.observe(observer)
        return bus

    run(observed_bus, scenario)
