"""``AppBook``: the bookkeeping both app runtimes keep per app (dockyard's supervisor and
Swarm's services): the apps' states, one lock per app, the saved runtime state and the
app's event log. What differs between them is what an app's state holds."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from dockyard.errors import Conflict
from dockyard.runtime import applogs
from dockyard.runtime.base import check_name
from dockyard.runtime.logfile import LogFile

logger = logging.getLogger(__name__)


class StateStore(Protocol):
    """Where runtime state survives a server restart (``services.runtime_state``)."""

    def save(self, app: str, state: dict[str, Any]) -> None: ...
    def load_all(self) -> dict[str, dict[str, Any]]: ...


class AppState(Protocol):
    @property
    def name(self) -> str: ...
    def state(self) -> dict[str, Any]: ...


S = TypeVar("S", bound=AppState)


class AppBook(Generic[S]):
    def __init__(self, store: StateStore, logs_dir: Path) -> None:
        self.store = store
        self.logs_dir = logs_dir
        self._lock = threading.Lock()
        self._apps: dict[str, S] = {}
        self._app_locks: dict[str, threading.Lock] = {}
        self._events_lock = threading.Lock()

    def _app_lock(self, app: str) -> threading.Lock:
        with self._lock:
            return self._app_locks.setdefault(app, threading.Lock())

    def _get(self, app: str) -> S | None:
        with self._lock:
            return self._apps.get(app)

    def _require(self, app: str) -> S:
        state = self._get(app)
        if state is None:
            raise Conflict(f"The app {app} has never been deployed: there is nothing to start.")
        return state

    def _persist(self, state: S) -> None:
        self._save(state.name, state.state())

    def _save(self, app: str, state: dict[str, Any]) -> None:
        # The processes are already running or stopped whatever the database says: a
        # failed save must not turn a done switch into a failed deployment. It is logged,
        # and the next change of the app saves the whole state again.
        try:
            self.store.save(app, state)
        except Exception:
            logger.exception("could not save the runtime state of app %s", app)

    def _event(self, app: str, text: str) -> None:
        """A line in the app's event log (``logs`` shows it among the app's lines)."""
        with self._events_lock:
            log = LogFile(applogs.events_log_path(self.logs_dir / app))
            try:
                log.write(text)
            finally:
                log.close()

    def app_logs(self, app: str, *, lines: int, only: applogs.NameFilter = None) -> list[str]:
        """The last ``lines`` lines of every process (or of those ``only`` names), in the
        wire format of ``applogs``."""
        check_name("app name", app)
        return applogs.recent_lines(self.logs_dir / app, lines, only)

    def follow_logs(
        self,
        app: str,
        *,
        stop: threading.Event,
        lines: int = 0,
        interval: float = 0.2,
        only: applogs.NameFilter = None,
    ) -> Iterator[str]:
        """The last ``lines`` lines, then new ones as they are written, until ``stop``.
        Blocking: an async endpoint iterates it in a thread."""
        check_name("app name", app)
        app_dir = self.logs_dir / app
        follower = applogs.Follower(app_dir, only)
        history = applogs.recent_lines(app_dir, lines, only)
        return itertools.chain(history, follower.follow(stop=stop, interval=interval))
