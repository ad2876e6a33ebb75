"""Which app a user's app name is, and its deployments version, kept in memory.

Every deployment read (list or show) first needs the app's id and deployments version
to find its rendered page in the page cache; reading them from the database was the
largest part of a cached listing's cost. The version only moves when a deployment is
created or changes status, and each of those publishes a ``new`` or ``status`` event on
the app's channel after it commits; deleting an app publishes ``_app_deleted``. The
bus reports every such batch to ``observe`` — this process's own before the request
that made the change is answered, other processes' when their notification arrives —
which drops the app's entry. A short time-to-live bounds what a lost notification (a
PostgreSQL bus reconnecting) could leave stale.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from dockyard.backends.eventbus.base import ALL_CHANNELS, Event
from dockyard.services import events as events_service
from dockyard.services.deployments import ListingKey

TTL_SECONDS = 5.0
MAX_ENTRIES = 10_000
# Log lines are most of the traffic and never change a version.
_UNCHANGING = frozenset({events_service.LOG})

Key = tuple[str, str]  # (owner id, app name)


class ListingKeys:
    def __init__(
        self, *, ttl: float = TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[Key, tuple[ListingKey, float]] = {}
        self._keys_of_app: dict[str, set[Key]] = {}
        self._lock = threading.Lock()
        # Bumped by every invalidation: a value read from the database before one must
        # not be stored after it (it may be the version the change replaced).
        self._generation = 0

    def get(self, key: Key) -> tuple[ListingKey | None, int]:
        """The cached value (None if absent or expired) and the generation to store under."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[1] > self.clock():
                return entry[0], self._generation
            return None, self._generation

    def put(self, key: Key, value: ListingKey, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
                self._keys_of_app.clear()
            self._entries[key] = (value, self.clock() + self.ttl)
            self._keys_of_app.setdefault(value.app_id, set()).add(key)

    def observe(self, channel: str, events: Sequence[Event]) -> None:
        if channel == ALL_CHANNELS:  # events were missed: anything may have changed
            with self._lock:
                self._generation += 1
                self._entries.clear()
                self._keys_of_app.clear()
            return
        app_id = events_service.app_of_channel(channel)
        if app_id is None or all(event.get("type") in _UNCHANGING for event in events):
            return
        with self._lock:
            self._generation += 1
            for key in self._keys_of_app.pop(app_id, ()):
                self._entries.pop(key, None)
