"""In-process event bus (the embedded default)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict
from collections.abc import Sequence

from dockyard.backends.eventbus.base import SUBSCRIBER_BACKLOG, Event, EventBus, Subscription


class LocalFanout:
    """Subscriber bookkeeping shared by the buses: deliver on the loop, from any thread."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._lock = threading.Lock()

    def add(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers[subscription.channel].add(subscription)

    def remove(self, subscription: Subscription) -> None:
        with self._lock:
            subscribers = self._subscribers.get(subscription.channel)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[subscription.channel]

    def deliver(self, channel: str, events: Sequence[Event]) -> None:
        """Run on the loop thread."""
        with self._lock:
            targets = list(self._subscribers.get(channel, ()))
        for subscription in targets:
            for event in events:
                subscription.offer(event)

    def deliver_threadsafe(self, channel: str, events: Sequence[Event]) -> None:
        """Deliver from any thread; a batch crosses to the loop in one callback, so its
        readers wake once for it, not once per event."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.deliver(channel, events)
        else:
            # The loop may close between the check and the call: then nobody listens.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.deliver, channel, events)


class FanoutBus(EventBus):
    """A bus whose subscribers live in this process; subclasses decide how events arrive."""

    def __init__(self) -> None:
        super().__init__()
        self.fanout = LocalFanout()

    def subscribe(self, channel: str, *, backlog: int = SUBSCRIBER_BACKLOG) -> Subscription:
        subscription = Subscription(self, channel, backlog)
        self.fanout.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.fanout.remove(subscription)


class MemoryEventBus(FanoutBus):
    async def start(self) -> None:
        self.fanout.loop = asyncio.get_running_loop()

    def publish_many(self, channel: str, events: Sequence[Event]) -> None:
        batch = list(events)
        self._observed(channel, batch)
        self.fanout.deliver_threadsafe(channel, batch)

    async def close(self) -> None:
        self.fanout.loop = None
