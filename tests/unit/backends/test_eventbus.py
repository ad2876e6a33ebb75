"""The in-process event bus: fan-out on the loop, from any thread, bounded per subscriber."""

from __future__ import annotations

import asyncio
import threading

from dockyard.backends.eventbus.base import Subscription
from dockyard.backends.eventbus.memory import MemoryEventBus


def test_events_from_a_thread_reach_every_subscriber_in_order() -> None:
    async def scenario() -> list[list[int]]:
        bus = MemoryEventBus()
        await bus.start()
        subscriptions = [bus.subscribe("app:1") for _ in range(3)]
        other = bus.subscribe("app:2")

        def publish() -> None:
            for i in range(100):
                bus.publish("app:1", {"type": "log", "n": i})

        publisher = threading.Thread(target=publish)
        publisher.start()
        publisher.join()
        received = [[(await s.get())["n"] for _ in range(100)] for s in subscriptions]
        assert other.queue.empty()
        for subscription in subscriptions:
            subscription.close()
        bus.publish("app:1", {"type": "log", "n": -1})
        await asyncio.sleep(0)
        assert all(s.queue.empty() for s in subscriptions)
        await bus.close()
        return received

    assert asyncio.run(scenario()) == [list(range(100))] * 3


def test_a_slow_subscriber_is_cut_off_without_holding_up_the_others() -> None:
    async def scenario() -> None:
        bus = MemoryEventBus()
        await bus.start()
        slow = Subscription(bus, "app:1", backlog=10)
        bus.fanout.add(slow)
        fast = bus.subscribe("app:1")
        for i in range(50):
            bus.publish("app:1", {"type": "log", "n": i})
        assert slow.overflowed
        drained = [slow.queue.get_nowait() for _ in range(slow.queue.qsize())]
        assert drained[-1] == {"type": "_overflow"}
        assert [(await fast.get())["n"] for _ in range(50)] == list(range(50))
        await bus.close()

    asyncio.run(scenario())
