"""The route table: which running release answers for each app.

Pure data guarded by a lock, because the worker threads that finish deployments update it
while the router's event loop reads it. Reads are one dict lookup, so the lock is held
for nanoseconds and never awaited.

Statuses only matter when an app has no backend: they pick the page the router shows.

    status       backend kept?   page when there is no backend
    deploying    yes             503 "being deployed, try again in a moment"
    stopped      no              503 "stopped"
    crashed      no              502 "not answering"
    none         no              404 "no app is served at this name"

``deploying`` keeps the current backend because the previous release goes on serving
while the next one builds; ``stopped``, ``crashed`` and ``none`` mean nothing is running,
so the backend is dropped and traffic gets the page instead of a refused connection.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

STATUSES = frozenset({"deploying", "stopped", "crashed", "none"})
_KEEPS_BACKEND = frozenset({"deploying"})


@dataclass(frozen=True)
class Backend:
    """Where one release of an app listens."""

    host: str
    port: int


@dataclass(frozen=True)
class _Route:
    backend: Backend | None
    status: str


_NO_ROUTE = _Route(None, "none")


class RouteTable:
    """App name → backend and status. Safe to call from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Routes are immutable values swapped whole, so a reader sees either the old or
        # the new route, never half of each.
        self._routes: dict[str, _Route] = {}

    def set_backend(self, app: str, backend: Backend) -> None:
        """Send the app's new connections and requests to ``backend`` from now on."""
        with self._lock:
            self._routes[_key(app)] = _Route(backend, "running")

    def set_status(self, app: str, status: str) -> None:
        """Record what to tell visitors when the app has no backend (see module doc)."""
        if status not in STATUSES:
            raise ValueError(f"unknown route status {status!r}; expected one of {sorted(STATUSES)}")
        key = _key(app)
        with self._lock:
            current = self._routes.get(key, _NO_ROUTE)
            backend = current.backend if status in _KEEPS_BACKEND else None
            self._routes[key] = _Route(backend, status)

    def remove(self, app: str) -> None:
        """Forget the app: its host name answers 404 again."""
        with self._lock:
            self._routes.pop(_key(app), None)

    def lookup(self, app: str) -> Backend | None:
        # A plain dict read is atomic under the GIL and the value is immutable, so the hot
        # path skips the lock.
        return self._routes.get(_key(app), _NO_ROUTE).backend

    def status(self, app: str) -> str:
        """``running`` when there is a backend, else the last status set (``none`` if never)."""
        return self._routes.get(_key(app), _NO_ROUTE).status


def _key(app: str) -> str:
    # Host names are case-insensitive, and so are the app names derived from them.
    return app.lower()
