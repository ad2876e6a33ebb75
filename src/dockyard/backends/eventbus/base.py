"""Event bus interface: deployment events fanned out to WebSocket streams.

Events are published after they are stored, from any thread; subscribers live on the
server's event loop. A subscriber that falls too far behind is marked ``overflowed`` and
gets no more events (its stream is then closed), so one slow client never slows a build
or the other clients.

Every implementation passes tests/contract/test_eventbus_contract.py.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

Event = dict[str, Any]
SUBSCRIBER_BACKLOG = 10_000


class Subscription:
    """One subscriber's bounded queue of events for one channel."""

    def __init__(self, bus: EventBus, channel: str, backlog: int = SUBSCRIBER_BACKLOG) -> None:
        self.bus = bus
        self.channel = channel
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=backlog)
        self.overflowed = False

    def offer(self, event: Event) -> None:
        """Called on the event loop by the bus."""
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            # Wake the reader so it notices and closes its stream.
            self.queue.get_nowait()
            self.queue.put_nowait({"type": "_overflow"})

    async def get(self) -> Event:
        return await self.queue.get()

    def close(self) -> None:
        self.bus.unsubscribe(self)


Observer = Callable[[str, Sequence[Event]], None]
ALL_CHANNELS = "*"
log = logging.getLogger(__name__)


class EventBus(ABC):
    def __init__(self) -> None:
        self._observers: list[Observer] = []

    def observe(self, observer: Observer) -> None:
        """Call ``observer(channel, events)`` for every batch published by this process
        (in the publishing thread, before ``publish`` returns, so a change is observed
        before the request that made it is answered) and, on a networked bus, for every
        batch that arrives from another process (in the bus's thread). Observers must be
        quick and thread-safe. Register them before the server starts."""
        self._observers.append(observer)

    def _observed(self, channel: str, events: Sequence[Event]) -> None:
        for observer in self._observers:
            try:
                observer(channel, events)
            except Exception:
                # An observer's bug must not stop the events (or the publisher).
                log.exception("an event bus observer failed")

    def _observed_gap(self) -> None:
        """Events may have been missed (a networked bus reconnected): observers hear
        ``ALL_CHANNELS`` with no events, meaning anything may have changed."""
        self._observed(ALL_CHANNELS, [])

    @abstractmethod
    async def start(self) -> None:
        """Bind to the running event loop (and connect, for networked buses)."""

    def publish(self, channel: str, event: Event) -> None:
        """Deliver ``event`` to every subscriber of ``channel``; thread-safe, never blocks long."""
        self.publish_many(channel, [event])

    @abstractmethod
    def publish_many(self, channel: str, events: Sequence[Event]) -> None:
        """Deliver ``events`` in order, as one batch; thread-safe, never blocks long."""

    @abstractmethod
    def subscribe(self, channel: str, *, backlog: int = SUBSCRIBER_BACKLOG) -> Subscription:
        """Start receiving events of ``channel``; call on the event loop. Past ``backlog``
        unread events the subscription overflows (see ``Subscription``)."""

    @abstractmethod
    def unsubscribe(self, subscription: Subscription) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...
