"""The route table: which running instances answer for each app.

Pure data guarded by a lock, because the worker threads that finish deployments update it
while the router's event loop reads it. Reads are one dict lookup, so the lock is held
for nanoseconds and never awaited.

Statuses only matter when an app has no backend: they pick the page the router shows.

    status       backends kept?  page when there is no backend
    deploying    yes             503 "being deployed, try again in a moment"
    stopped      no              503 "stopped"
    scaled-down  no              503 "scaled to zero web instances"
    crashed      no              502 "not answering"
    none         no              404 "no app is served at this name"

An app has one backend per running web instance; ``lookup`` takes them in turn (round
robin), and the runtime's supervisor takes an instance out of the rotation as soon as it
stops answering, and puts it back once it accepts connections again.

``deploying`` keeps the current backend because the previous release goes on serving
while the next one builds; ``stopped``, ``crashed`` and ``none`` mean nothing is running,
so the backend is dropped and traffic gets the page instead of a refused connection.

Besides ``APP.<apps domain>``, an app answers on its custom domains: ``set_hosts`` loads
them (host name -> app) with the apps that want HTTPS only and the domains served with a
certificate of their owner's, all from the domains table. ``subscribe`` tells a router
that pushes routes elsewhere (Caddy) that something changed.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

STATUSES = frozenset({"deploying", "stopped", "scaled-down", "crashed", "none"})
_KEEPS_BACKEND = frozenset({"deploying"})


@dataclass(frozen=True)
class Backend:
    """Where one release of an app listens."""

    host: str
    port: int


@dataclass(frozen=True)
class _Route:
    backends: tuple[Backend, ...]
    status: str
    # Whose turn it is; shared by the readers of one route, which only ever increment it.
    turns: itertools.count[int] = field(default_factory=itertools.count, compare=False)


_NO_ROUTE = _Route((), "none")


@dataclass(frozen=True)
class RouteSnapshot:
    """Everything the table holds, at one moment (for a router configured as a whole)."""

    # app -> (backends, status)
    routes: dict[str, tuple[tuple[Backend, ...], str]]
    aliases: dict[str, str]  # custom host name -> app
    force_https: frozenset[str]  # apps
    own_certificates: dict[str, tuple[str, str]]  # host -> (cert file, key file)


class RouteTable:
    """App name → backend and status. Safe to call from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Routes are immutable values swapped whole, so a reader sees either the old or
        # the new route, never half of each.
        self._routes: dict[str, _Route] = {}
        self._aliases: dict[str, str] = {}
        self._force_https: frozenset[str] = frozenset()
        self._own_certificates: dict[str, tuple[str, str]] = {}
        self._observers: list[Callable[[], None]] = []

    def subscribe(self, observer: Callable[[], None]) -> None:
        """Call ``observer()`` after every change, in the changing thread: it must be
        quick (set a flag) and thread-safe."""
        self._observers.append(observer)

    def _changed(self) -> None:
        for observer in self._observers:
            observer()

    def set_hosts(
        self,
        *,
        aliases: Mapping[str, str],
        force_https: Iterable[str] = (),
        own_certificates: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        """Replace the custom host names (host -> app), the apps served over HTTPS only and
        the hosts that have a certificate of their own (host -> cert and key files)."""
        with self._lock:
            self._aliases = {_key(host): _key(app) for host, app in aliases.items()}
            self._force_https = frozenset(_key(app) for app in force_https)
            self._own_certificates = dict(own_certificates or {})
        self._changed()

    def app_for_host(self, host: str) -> str | None:
        """The app a custom domain belongs to (``host`` without port), or None. A
        wildcard domain (``*.example.com``, where the operator allows them) covers one
        label, as in DNS and certificates; a name of its own wins over it."""
        name = host.lower().rstrip(".")
        app = self._aliases.get(name)
        if app is None and "." in name:
            app = self._aliases.get("*." + name.split(".", 1)[1])
        return app

    def forces_https(self, app: str) -> bool:
        return _key(app) in self._force_https

    def snapshot(self) -> RouteSnapshot:
        with self._lock:
            return RouteSnapshot(
                routes={app: (r.backends, r.status) for app, r in self._routes.items()},
                aliases=dict(self._aliases),
                force_https=self._force_https,
                own_certificates=dict(self._own_certificates),
            )

    def set_backend(self, app: str, backend: Backend) -> None:
        """Send the app's new connections and requests to ``backend`` alone from now on."""
        self.set_backends(app, [backend])

    def set_backends(
        self, app: str, backends: Iterable[Backend], *, empty: str = "crashed"
    ) -> None:
        """Send the app's requests to ``backends`` in turn from now on; with none, show the
        page of the ``empty`` status."""
        chosen = tuple(dict.fromkeys(backends))  # in order, once each
        with self._lock:
            self._routes[_key(app)] = _Route(chosen, "running" if chosen else empty)
        self._changed()

    def set_status(self, app: str, status: str) -> None:
        """Record what to tell visitors when the app has no backend (see module doc)."""
        if status not in STATUSES:
            raise ValueError(f"unknown route status {status!r}; expected one of {sorted(STATUSES)}")
        key = _key(app)
        with self._lock:
            current = self._routes.get(key, _NO_ROUTE)
            backends = current.backends if status in _KEEPS_BACKEND else ()
            self._routes[key] = _Route(backends, status)
        self._changed()

    def remove(self, app: str) -> None:
        """Forget the app: its host name answers 404 again."""
        with self._lock:
            self._routes.pop(_key(app), None)
        self._changed()

    def lookup(self, app: str, *, avoid: Backend | None = None) -> Backend | None:
        """The app's next backend in turn (not ``avoid`` if there is another), or None."""
        # A plain dict read is atomic under the GIL and the value is immutable, so the hot
        # path skips the lock; ``next`` on a count is atomic too.
        route = self._routes.get(_key(app), _NO_ROUTE)
        backends = route.backends
        if not backends:
            return None
        if len(backends) == 1:
            return backends[0]
        chosen = backends[next(route.turns) % len(backends)]
        if chosen == avoid:
            chosen = backends[next(route.turns) % len(backends)]
        return chosen

    def backends(self, app: str) -> tuple[Backend, ...]:
        return self._routes.get(_key(app), _NO_ROUTE).backends

    def status(self, app: str) -> str:
        """``running`` when there is a backend, else the last status set (``none`` if never)."""
        return self._routes.get(_key(app), _NO_ROUTE).status


def _key(app: str) -> str:
    # Host names are case-insensitive, and so are the app names derived from them.
    return app.lower()
