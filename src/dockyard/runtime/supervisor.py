"""The supervisor: owns every app's running formation and the switch between releases.

One formation per app: one process of each type of its current release (``web-1``,
``worker-1``, ...). ``deploy`` starts the next release beside the current one and only
switches when it is up: route to the new web process, then stop the old processes, so
traffic never meets a closed port. If the new release does not boot, it is stopped and
the current one goes on serving, untouched.

A process that dies later is restarted by ``run`` (a thread) with exponential backoff.
Statuses: ``new`` (never deployed), ``running``, ``restarting`` (a process is down and
being restarted), ``crashed`` (the same process failed ``CRASHED_AFTER`` times in a row;
still retried, at most every ``BACKOFF_CAP`` seconds), ``stopped``.

Persisted per app (``StateStore``), JSON-able::

    {"release_id": "r42", "release_dir": "/var/.../r42", "process_types": {"web": "..."},
     "stopped": false, "processes": {"web-1": <the runtime's handle state>, ...}}

The app's variables are *not* in it: they live once, in the app's configuration, and the
caller hands them back to ``restore`` (``env_for``) as it passed them to ``deploy``.

Thread safety: ``_lock`` guards the dictionaries for moments only; each app has its own
lock that serializes its lifecycle changes (switch, stop, start, restart, supervision), so
a slow stop of one app never holds up another. Booting a new release holds no lock.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dockyard import sandbox
from dockyard.errors import BootError, Conflict
from dockyard.router.table import Backend
from dockyard.runtime import applogs
from dockyard.runtime.base import ProcessHandle, ProcessSpec, Runtime, check_name
from dockyard.runtime.boot import accepts_connections, tail_log, wait_for_boot
from dockyard.runtime.logfile import LogFile

logger = logging.getLogger(__name__)

BACKOFF_START = 1.0
BACKOFF_CAP = 30.0
STABLE_AFTER = 60.0  # seconds up after which a process's failures are forgotten
CRASHED_AFTER = 3
SETTLE_SECONDS = 0.5  # how long an app without web processes must stay up to count as booted
TICK_SECONDS = 0.1
BOOT_OUTPUT_LINES = 20


class RouteSink(Protocol):
    """What the supervisor tells the router (``dockyard.router.table.RouteTable``)."""

    def set_backend(self, app: str, backend: Backend) -> None: ...
    def set_status(self, app: str, status: str) -> None: ...
    def remove(self, app: str) -> None: ...


class StateStore(Protocol):
    """Where each app's formation state is persisted (the caller's database).
    An empty dict means there is nothing to restore for that app."""

    def save(self, app: str, state: dict[str, Any]) -> None: ...
    def load_all(self) -> dict[str, dict[str, Any]]: ...


@dataclass(eq=False)
class _Process:
    spec: ProcessSpec
    handle: ProcessHandle | None = None
    started_at: float = 0.0
    # Web: accepts connections and is the route's backend. Others: running.
    up: bool = False
    failures: int = 0
    restart_at: float | None = None


@dataclass(eq=False)
class _App:
    name: str
    release_id: str
    release_dir: Path
    process_types: dict[str, str]
    processes: dict[str, _Process] = field(default_factory=dict)
    stopped: bool = False

    def state(self) -> dict[str, Any]:
        return {
            "release_id": self.release_id,
            "release_dir": str(self.release_dir),
            "process_types": dict(self.process_types),
            "stopped": self.stopped,
            "processes": {
                name: dict(process.handle.state)
                for name, process in self.processes.items()
                if process.handle is not None
            },
        }

    def handles(self) -> list[ProcessHandle]:
        return [p.handle for p in self.processes.values() if p.handle is not None]


class Supervisor:
    def __init__(
        self,
        runtime: Runtime,
        routes: RouteSink,
        store: StateStore,
        *,
        boot_timeout: float,
        stop_grace: float,
        logs_dir: Path,
        host_uid_for: Callable[[str], int],
        limits: sandbox.Limits,
        clock: Callable[[], float] = time.monotonic,
        settle_seconds: float = SETTLE_SECONDS,
        drain_seconds: float = 0.0,
    ) -> None:
        self.runtime = runtime
        self.routes = routes
        self.store = store
        self.boot_timeout = boot_timeout
        self.stop_grace = stop_grace
        self.logs_dir = logs_dir
        self.host_uid_for = host_uid_for
        self.limits = limits
        self.clock = clock
        self.settle_seconds = settle_seconds
        self.drain_seconds = drain_seconds
        self._stop_draining = threading.Event()  # set at shutdown: stop them all now
        self._lock = threading.Lock()
        self._apps: dict[str, _App] = {}
        self._app_locks: dict[str, threading.Lock] = {}
        self._events_lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._retiring: list[threading.Thread] = []
        self._retiring_releases: dict[str, set[str]] = {}  # app -> releases still stopping
        self._retired = threading.Condition(self._lock)  # notified as each one has stopped

    # -- deploying ----------------------------------------------------------------------

    def deploy(
        self,
        app: str,
        release_id: str,
        release_dir: Path,
        process_types: Mapping[str, str],
        env: Mapping[str, str],
        *,
        log: Callable[[str], None],
        cancelled: Callable[[], bool] = lambda: False,
        launched: Callable[[], None] = lambda: None,
    ) -> None:
        """Start the release, check that it boots, then switch the app to it.

        Raises ``BootError`` (after logging the failing process's last output lines) when
        it does not boot; the app's current release is then left exactly as it was.
        ``launched`` is called once every process is started, while they boot; what it
        raises stops them and fails the deploy in the same way."""
        check_name("app name", app)
        check_name("release id", release_id)
        if not process_types:
            raise BootError(
                "The release has no process types to start: add a Procfile.", timed_out=False
            )
        specs = self._specs(app, release_id, release_dir, process_types, env)
        started: list[ProcessHandle] = []
        try:
            for spec in specs:
                log(f"Starting {spec.name}: {spec.command}")
                started.append(self.runtime.start(spec))
            launched()
            self._wait_until_up(started, log, cancelled)
        except BootError:
            failed = [h for h in started if self.runtime.poll(h) is not None] or started
            self._stop_all(started, grace=0)
            for handle in failed:
                self._log_output(handle, log)
            raise
        except BaseException:
            self._stop_all(started, grace=0)
            raise
        self._switch(app, release_id, release_dir, process_types, started, log)

    def _wait_until_up(
        self,
        started: list[ProcessHandle],
        log: Callable[[str], None],
        cancelled: Callable[[], bool],
    ) -> None:
        web = next((handle for handle in started if handle.spec.is_web), None)
        if web is not None:
            log(f"Waiting for {web.spec.name} to accept connections on $PORT")
            wait_for_boot(self.runtime, web, timeout=self.boot_timeout, cancelled=cancelled)
        else:
            # Nothing to connect to: the processes must at least not die straight away.
            deadline = time.monotonic() + self.settle_seconds
            while time.monotonic() < deadline and not self._any_exited(started):
                time.sleep(0.01)
        for handle in started:
            status = self.runtime.poll(handle)
            if status is not None:
                raise BootError(
                    f"The {handle.spec.name} process exited with status {status} while booting.",
                    timed_out=False,
                )

    def _any_exited(self, handles: list[ProcessHandle]) -> bool:
        return any(self.runtime.poll(handle) is not None for handle in handles)

    def _log_output(self, handle: ProcessHandle, log: Callable[[str], None]) -> None:
        lines = tail_log(handle.spec.log_path, BOOT_OUTPUT_LINES)
        if not lines:
            log(f"{handle.spec.name} wrote nothing before it stopped.")
            return
        log(f"Last lines written by {handle.spec.name}:")
        for line in lines:
            log(f"[{handle.spec.name}] {line}")

    def _switch(
        self,
        app: str,
        release_id: str,
        release_dir: Path,
        process_types: Mapping[str, str],
        started: list[ProcessHandle],
        log: Callable[[str], None],
    ) -> None:
        now = self.clock()
        new = _App(app, release_id, release_dir, dict(process_types))
        for handle in started:
            new.processes[handle.spec.name] = _Process(handle.spec, handle, now, up=True)
        web = next((handle for handle in started if handle.spec.is_web), None)
        with self._app_lock(app):
            with self._lock:
                old = self._apps.get(app)
                self._apps[app] = new
            # Route first, stop second: the old release serves until the new one does.
            if web is not None and web.port is not None:
                self.routes.set_backend(app, Backend(web.host, web.port))
            else:
                self.routes.remove(app)
            self._persist(new)
        log(f"Release {release_id} is up and serving.")
        self._event(app, f"release {release_id} started")
        if old is not None:
            log(f"Stopping the previous release ({old.release_id}).")
            # Traffic already goes to the new release: the old one's SIGTERM and grace
            # period need not delay the deployment's success.
            with self._lock:
                self._retiring_releases.setdefault(app, set()).add(old.release_id)
            retiring = threading.Thread(
                target=self._retire,
                args=(app, old, {release_id, old.release_id}),
                name=f"retire-{app}",
                daemon=True,
            )
            self._retiring.append(retiring)
            retiring.start()

    def _retire(self, app: str, old: _App, keep: set[str]) -> None:
        # Drain first: requests the router already sent the old release finish, and the
        # new release's workers, still importing the app, do not compete for the CPU
        # with the old one's shutdown (on two cores that cost the first requests to the
        # new release 50-100 ms).
        self._stop_draining.wait(self.drain_seconds)
        try:
            self._stop_all(old.handles(), grace=self.stop_grace)
        finally:
            with self._retired:
                self._retiring_releases.get(app, set()).discard(old.release_id)
                self._retired.notify_all()
        self._prune_logs(app, keep=keep)

    def retiring_releases(self, app: str) -> set[str]:
        """Releases of ``app`` switched away from whose processes may still run (draining
        or stopping): their files must stay."""
        with self._lock:
            return set(self._retiring_releases.get(app, ()))

    def wait_release_stopped(self, app: str, release_id: str, timeout: float) -> bool:
        """Wait until a release switched away from has stopped; False on timeout."""
        with self._retired:
            return self._retired.wait_for(
                lambda: release_id not in self._retiring_releases.get(app, ()), timeout
            )

    def wait_retired(self, timeout: float | None = None) -> None:
        """Wait until previous releases switched away from are stopped (tests, shutdown)."""
        for thread in list(self._retiring):
            thread.join(timeout)
        self._retiring = [thread for thread in self._retiring if thread.is_alive()]

    # -- lifecycle ----------------------------------------------------------------------

    def stop_app(self, app: str) -> None:
        """Stop every process (SIGTERM, grace, SIGKILL); they stay stopped until started."""
        with self._app_lock(app):
            state = self._get(app)
            if state is None or state.stopped:
                return
            handles = state.handles()
            self._reset(state, restart_at=None)
            state.stopped = True
            self.routes.set_status(app, "stopped")
            self._persist(state)
            self._stop_all(handles, grace=self.stop_grace)
        self._event(app, "stopped")

    def start_app(self, app: str) -> None:
        """Start a stopped app's current release again (asynchronously, by ``run``)."""
        with self._app_lock(app):
            state = self._require(app)
            if not state.stopped:
                return
            state.stopped = False
            self._reset(state, restart_at=self.clock())
            self._persist(state)
        self._event(app, "starting")
        self._wake.set()

    def restart_app(self, app: str) -> None:
        """Stop the current processes, then start them again (asynchronously, by ``run``).

        In place, like Scalingo's restart: there is a short gap; a redeploy has none."""
        with self._app_lock(app):
            state = self._require(app)
            handles = state.handles()
            state.stopped = False
            self._reset(state, restart_at=None)
            self.routes.set_status(app, "crashed")
            self._stop_all(handles, grace=self.stop_grace)
            for process in state.processes.values():
                process.restart_at = self.clock()
            self._persist(state)
        self._event(app, "restarting")
        self._wake.set()

    def remove_app(self, app: str) -> None:
        """Stop everything of the app and forget it: routes, state and logs."""
        with self._app_lock(app):
            with self._lock:
                state = self._apps.pop(app, None)
            self.routes.remove(app)
            if state is not None:
                self._stop_all(state.handles(), grace=self.stop_grace)
            self._save(app, {})
            shutil.rmtree(self.logs_dir / app, ignore_errors=True)
        with self._lock:
            self._app_locks.pop(app, None)

    def status(self, app: str) -> str:
        state = self._get(app)
        if state is None:
            return "new"
        with self._lock:
            processes = list(state.processes.values())
            if state.stopped:
                return "stopped"
        if all(process.handle is not None and process.up for process in processes):
            return "running"
        if any(process.failures >= CRASHED_AFTER for process in processes):
            return "crashed"
        return "restarting"

    # -- logs ---------------------------------------------------------------------------

    def app_logs(self, app: str, *, lines: int) -> list[str]:
        """The last ``lines`` lines of every process, ``<time> [web-1] <line>``."""
        check_name("app name", app)
        return applogs.recent_lines(self.logs_dir / app, lines)

    def follow_logs(
        self, app: str, *, stop: threading.Event, lines: int = 0, interval: float = 0.2
    ) -> Iterator[str]:
        """The last ``lines`` lines, then new ones as they are written, until ``stop``.
        Blocking: an async endpoint iterates it in a thread."""
        check_name("app name", app)
        app_dir = self.logs_dir / app
        follower = applogs.Follower(app_dir)
        history = applogs.recent_lines(app_dir, lines)
        return itertools.chain(history, follower.follow(stop=stop, interval=interval))

    # -- restore, supervision, shutdown -------------------------------------------------

    def restore(self, env_for: Callable[[str], Mapping[str, str]]) -> None:
        """At server start: re-attach to (or start again) each app's current release.

        ``env_for(app)`` returns the variables the release runs with: what ``deploy`` got.
        Web processes are routed as soon as they accept connections (``run``/``tick``)."""
        now = self.clock()
        for app, saved in self.store.load_all().items():
            if not saved:
                continue
            try:
                state = self._restored(app, saved, env_for(app), now)
            except Exception:
                logger.exception("could not restore app %s from its saved state", app)
                continue
            with self._lock:
                self._apps[app] = state
            if state.stopped:
                self.routes.set_status(app, "stopped")
        self.tick()

    def _restored(
        self, app: str, saved: Mapping[str, Any], env: Mapping[str, str], now: float
    ) -> _App:
        state = _App(
            name=check_name("app name", app),
            release_id=check_name("release id", str(saved["release_id"])),
            release_dir=Path(saved["release_dir"]),
            process_types=dict(saved["process_types"]),
            stopped=bool(saved.get("stopped", False)),
        )
        handles: Mapping[str, Any] = saved.get("processes") or {}
        specs = self._specs(app, state.release_id, state.release_dir, state.process_types, env)
        for spec in specs:
            process = _Process(spec)
            state.processes[spec.name] = process
            if state.stopped:
                continue
            handle = self.runtime.load(spec, handles[spec.name]) if spec.name in handles else None
            if handle is None:
                process.restart_at = now
            else:
                process.handle, process.started_at = handle, now
                process.up = not spec.is_web  # a web process is routed once it answers
        return state

    def run(self, stop_event: threading.Event) -> None:
        """The supervision loop; run it in a thread until ``stop_event`` is set."""
        while not stop_event.is_set():
            try:
                self.tick()
            except Exception:
                # The loop must outlive any one app's failure; the error is still reported.
                logger.exception("supervision pass failed")
            self._wake.wait(TICK_SECONDS)
            self._wake.clear()

    def tick(self) -> None:
        """One supervision pass: notice exits, restart what is due, route what answers."""
        with self._lock:
            apps = list(self._apps.values())
        for state in apps:
            lock = self._app_lock(state.name)
            # An app busy with a lifecycle change is looked at next time, not waited for.
            if not lock.acquire(blocking=False):
                continue
            try:
                if self._closing or state.stopped or self._get(state.name) is not state:
                    continue
                changed = False
                for process in list(state.processes.values()):
                    changed |= self._supervise(state, process, self.clock())
                if changed:
                    self._persist(state)
            finally:
                lock.release()

    def _supervise(self, state: _App, process: _Process, now: float) -> bool:
        """Advance one process; True when its handle changed (the state must be saved)."""
        name = process.spec.name
        if process.handle is not None:
            status = self.runtime.poll(process.handle)
            if status is None:
                self._check_running(state, process, now)
                return process.handle is None
            self.runtime.stop(process.handle, grace=0)  # release what it held
            self._failed(state, process, now, f"exited with status {status}")
            return True
        if process.restart_at is None or now < process.restart_at:
            return False
        try:
            handle = self.runtime.start(process.spec)
        except BootError as exc:
            self._failed(state, process, now, f"could not be started: {exc.message}")
            return False
        process.handle, process.started_at, process.restart_at = handle, now, None
        process.up = not process.spec.is_web
        self._event(state.name, f"{name} started")
        return True

    def _check_running(self, state: _App, process: _Process, now: float) -> None:
        assert process.handle is not None
        handle = process.handle
        if process.up:
            if process.failures and now - process.started_at >= STABLE_AFTER:
                process.failures = 0
            return
        if handle.port is not None and accepts_connections(handle.host, handle.port):
            process.up = True
            self.routes.set_backend(state.name, Backend(handle.host, handle.port))
            self._event(state.name, f"{process.spec.name} is accepting connections")
        elif now - process.started_at > self.boot_timeout:
            self.runtime.stop(handle, grace=0)
            reason = f"did not accept connections on $PORT within {self.boot_timeout:g} seconds"
            self._failed(state, process, now, reason)

    def _failed(self, state: _App, process: _Process, now: float, reason: str) -> None:
        if process.spec.is_web:
            self.routes.set_status(state.name, "crashed")
        if now - process.started_at >= STABLE_AFTER:
            process.failures = 0
        delay = min(BACKOFF_CAP, BACKOFF_START * 2**process.failures)
        process.failures += 1
        process.handle, process.up, process.restart_at = None, False, now + delay
        self._event(state.name, f"{process.spec.name} {reason}; restarting in {delay:g} s")

    def shutdown(self) -> None:
        """Stop every process of every app (the server is exiting). The saved state is
        left as it is, so ``restore`` brings the same formations back."""
        self._stop_draining.set()
        self.wait_retired(timeout=self.stop_grace + 5)
        with self._lock:
            self._closing = True
            apps = list(self._apps.values())
        handles = [handle for state in apps for handle in state.handles()]
        self._stop_all(handles, grace=self.stop_grace)

    # -- helpers ------------------------------------------------------------------------

    def _specs(
        self,
        app: str,
        release_id: str,
        release_dir: Path,
        process_types: Mapping[str, str],
        env: Mapping[str, str],
    ) -> list[ProcessSpec]:
        host_uid = self.host_uid_for(app)
        # web first: it is the one whose boot decides, and the others may need it.
        ordered = sorted(process_types.items(), key=lambda item: item[0] != "web")
        return [
            ProcessSpec(
                app=app,
                release_id=release_id,
                process_type=check_name("process type", process_type),
                index=1,
                command=command,
                env=dict(env),
                release_dir=release_dir,
                host_uid=host_uid,
                limits=self.limits,
                log_path=applogs.process_log_path(
                    self.logs_dir / app, release_id, f"{process_type}-1"
                ),
            )
            for process_type, command in ordered
        ]

    def _stop_all(self, handles: list[ProcessHandle], *, grace: float) -> None:
        """Stop processes in parallel, so N stubborn processes cost one grace, not N."""
        if len(handles) <= 1:
            for handle in handles:
                self.runtime.stop(handle, grace=grace)
            return
        threads = [
            threading.Thread(target=self.runtime.stop, args=(handle,), kwargs={"grace": grace})
            for handle in handles
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _reset(self, state: _App, *, restart_at: float | None) -> None:
        for process in state.processes.values():
            process.handle, process.up, process.failures = None, False, 0
            process.restart_at = restart_at

    def _app_lock(self, app: str) -> threading.Lock:
        with self._lock:
            return self._app_locks.setdefault(app, threading.Lock())

    def _get(self, app: str) -> _App | None:
        with self._lock:
            return self._apps.get(app)

    def _require(self, app: str) -> _App:
        state = self._get(app)
        if state is None:
            raise Conflict(f"The app {app} has never been deployed: there is nothing to start.")
        return state

    def _persist(self, state: _App) -> None:
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
        with self._events_lock:
            log = LogFile(applogs.events_log_path(self.logs_dir / app))
            try:
                log.write(text)
            finally:
                log.close()

    def _prune_logs(self, app: str, *, keep: set[str]) -> None:
        """Keep the logs of the current and the previous release only."""
        app_dir = self.logs_dir / app
        for path in app_dir.iterdir() if app_dir.is_dir() else []:
            if path.is_dir() and path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)
