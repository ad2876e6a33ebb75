"""The supervisor: reconciles every app's running instances towards its desired state.

The desired state of an app is its release and its formation: how many instances of each
process type run (``web-1``, ``web-2``, ``worker-1``, ...) and at which size (memory
limit). ``launch``/``complete`` roll out a new release beside the current one and switch
only when every new instance is up: the route then lists the new web instances, and the
old instances leave it, drain and stop, so traffic never meets a closed port. If the new
release does not boot, it is stopped and the current one goes on serving, untouched.
``scale`` and ``restart_app`` change the desired state of the current release; ``run`` (a
thread) then starts what is missing and restarts what died, with exponential backoff. The
route lists the web instances that accept connections, and only those: an instance
leaves it as soon as it is seen dead, and comes back once it answers again.
Statuses: ``new`` (never deployed), ``running``, ``restarting`` (a process is down and
being restarted), ``crashed`` (the same process failed ``CRASHED_AFTER`` times in a row;
still retried, at most every ``BACKOFF_CAP`` seconds), ``stopped``.

Persisted per app (``StateStore``), JSON-able::

    {"release_id": "r42", "release_dir": "/var/.../r42", "process_types": {"web": "..."},
     "formation": {"web": [2, "M"]}, "stopped": false,
     "processes": {"web-1": <the runtime's handle state>, ...}}

The app's variables are *not* in it: they live once, in the app's configuration, and the
caller hands them back to ``restore`` (``env_for``) as it passed them to ``deploy``.

Thread safety: ``_lock`` guards the dictionaries for moments only; each app has its own
lock that serializes its lifecycle changes (switch, stop, start, restart, supervision), so
a slow stop of one app never holds up another. Booting a new release holds no lock.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dockyard import sandbox
from dockyard.domain.formation import DEFAULT_SIZE, SIZES, Formation, Scale
from dockyard.errors import BootError, Conflict
from dockyard.routetable import Backend
from dockyard.runtime import applogs
from dockyard.runtime.appbook import AppBook, StateStore
from dockyard.runtime.base import (
    Instance,
    Launch,
    ProcessHandle,
    ProcessSpec,
    Runtime,
    check_name,
)
from dockyard.runtime.boot import accepts_connections, tail_log, wait_for_boot

logger = logging.getLogger(__name__)

BACKOFF_START = 1.0
BACKOFF_CAP = 30.0
STABLE_AFTER = 60.0  # seconds up after which a process's failures are forgotten
CRASHED_AFTER = 3
SETTLE_SECONDS = 0.5  # how long an app without web processes must stay up to count as booted
# How often the supervision pass runs while an instance is booting or due to restart, and
# while all is quiet. Quiet passes only catch exits a runtime did not report (its
# ``exit_listener``): at 0.5 s a dead instance still leaves the rotation within a second,
# and 50 apps at rest cost the server well under 1 % of a core.
TICK_SECONDS = 0.1
IDLE_TICK_SECONDS = 0.5
BOOT_CHECK_SECONDS = 0.02  # a booting instance is routed this soon after it listens
BOOT_OUTPUT_LINES = 20


class RouteSink(Protocol):
    """What the supervisor tells the router (``dockyard.routetable.RouteTable``)."""

    def set_backends(
        self, app: str, backends: Iterable[Backend], *, empty: str = "crashed"
    ) -> None: ...
    def set_status(self, app: str, status: str) -> None: ...
    def remove(self, app: str) -> None: ...


@dataclass(eq=False)
class _Process:
    spec: ProcessSpec
    handle: ProcessHandle | None = None
    started_at: float = 0.0
    # Web: accepts connections and is the route's backend. Others: running.
    up: bool = False
    failures: int = 0
    restart_at: float | None = None


@dataclass(frozen=True)
class InstanceEvent:
    """An instance changed state (``observe``'s states); ``detail`` says why, in words."""

    app: str
    instance: str
    state: str
    detail: str


@dataclass(eq=False)
class _App:
    name: str
    release_id: str
    release_dir: Path
    process_types: dict[str, str]
    formation: dict[str, Scale] = field(default_factory=dict)
    processes: dict[str, _Process] = field(default_factory=dict)
    stopped: bool = False
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def state(self) -> dict[str, Any]:
        return {
            "release_id": self.release_id,
            "release_dir": str(self.release_dir),
            "process_types": dict(self.process_types),
            "formation": {t: [scale.amount, scale.size] for t, scale in self.formation.items()},
            "stopped": self.stopped,
            "processes": {
                name: dict(process.handle.state)
                for name, process in self.processes.items()
                if process.handle is not None
            },
        }

    def handles(self) -> list[ProcessHandle]:
        return [p.handle for p in self.processes.values() if p.handle is not None]


class Supervisor(AppBook["_App"]):
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
        take_over: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(store, logs_dir)
        self.runtime = runtime
        # Called just before a new release of an app is routed: where several supervisors
        # share the route table (worker processes), this one runs the app from then on.
        self.take_over = take_over
        self.routes = routes
        self.boot_timeout = boot_timeout
        self.stop_grace = stop_grace
        self.host_uid_for = host_uid_for
        self.limits = limits
        self.clock = clock
        self.settle_seconds = settle_seconds
        self.drain_seconds = drain_seconds
        self._stop_draining = threading.Event()  # set at shutdown: stop them all now
        self._wake = threading.Event()
        runtime.exit_listener = self._wake.set
        self._next_pass = TICK_SECONDS  # seconds from one supervision pass to the next
        self._closing = False
        self._retiring: list[threading.Thread] = []
        self._retiring_releases: dict[str, set[str]] = {}  # app -> releases still stopping
        self._retired = threading.Condition(self._lock)  # notified as each one has stopped
        self._listeners: list[Callable[[InstanceEvent], None]] = []
        self._removal_listeners: list[Callable[[str], None]] = []

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
        formation: Formation | None = None,
    ) -> None:
        """Start the release, check that it boots, then switch the app to it: ``launch``
        then ``complete``, for callers with nothing to do while the release boots."""
        launch = self.launch(
            app, release_id, release_dir, process_types, env, log=log, formation=formation
        )
        self.complete(launch, log=log, cancelled=cancelled)

    def launch(
        self,
        app: str,
        release_id: str,
        release_dir: Path,
        process_types: Mapping[str, str],
        env: Mapping[str, str],
        *,
        log: Callable[[str], None],
        formation: Formation | None = None,
    ) -> Launch:
        """Start every instance of the release's ``formation`` (one of each process type
        when None) beside the current release, and return at once.

        The caller then ``complete``s it (boot check, then the switch) or ``abandon``s it;
        until then the app's current release is untouched. Raises ``BootError`` when a
        process cannot be started at all (what was started is stopped again)."""
        check_name("app name", app)
        check_name("release id", release_id)
        if not process_types:
            raise BootError(
                "The release has no process types to start: add a Procfile.", timed_out=False
            )
        wanted = _complete_formation(process_types, formation)
        launch = Launch(app, release_id, release_dir, dict(process_types), wanted, dict(env))
        if not any(wanted[name].amount for name in process_types):
            raise BootError(
                "Every process type is scaled to zero: scale one up (scale web:1) to deploy.",
                timed_out=False,
            )
        try:
            for spec in self._specs(app, release_id, release_dir, process_types, env, wanted):
                log(f"Starting {spec.name}: {spec.command}")
                launch.started.append(self.runtime.start(spec))
        except BootError:
            self.abandon(launch, log=log)
            raise
        except BaseException:
            self.abandon(launch, log=log, explain=False)
            raise
        return launch

    def complete(
        self,
        launch: Launch,
        *,
        log: Callable[[str], None],
        cancelled: Callable[[], bool] = lambda: False,
        before_switch: Callable[[], None] | None = None,
    ) -> None:
        """Wait until the launched release is up, run ``before_switch`` (the postdeploy
        hook), then switch the app to it.

        Raises ``BootError`` (after logging the failing process's last output lines) when
        it does not boot; it is then abandoned and the current release left as it was, as
        it is when ``before_switch`` raises."""
        try:
            self._wait_until_up(launch.started, log, cancelled)
            if before_switch is not None:
                before_switch()
        except BootError:
            self.abandon(launch, log=log)
            raise
        except BaseException:
            self.abandon(launch, log=log, explain=False)
            raise
        self._switch(launch, log)

    def abandon(self, launch: Launch, *, log: Callable[[str], None], explain: bool = True) -> None:
        """Stop a launched release that will not serve. With ``explain`` (it failed to
        boot), log what its exited processes wrote last, or every process's if none exited
        (a boot timeout: the output says what the app was doing)."""
        started = list(launch.started)
        launch.started.clear()
        failed = [h for h in started if self.runtime.poll(h) is not None] or started
        self._stop_all(started, grace=0)
        if explain:
            for handle in failed:
                self._log_output(handle, log)

    def _wait_until_up(
        self,
        started: list[ProcessHandle],
        log: Callable[[str], None],
        cancelled: Callable[[], bool],
    ) -> None:
        webs = [handle for handle in started if handle.spec.is_web]
        if webs:
            deadline = time.monotonic() + self.boot_timeout
            for web in webs:
                log(f"Waiting for {web.spec.name} to accept connections on $PORT")
                wait_for_boot(
                    self.runtime,
                    web,
                    timeout=max(0.0, deadline - time.monotonic()),
                    shown_timeout=self.boot_timeout,
                    cancelled=cancelled,
                )
        else:
            # Nothing to connect to: the processes must at least not die straight away.
            deadline = time.monotonic() + self.settle_seconds
            while time.monotonic() < deadline and not self._any_exited(started):
                time.sleep(0.01)
        for handle in started:
            status = self.runtime.poll(handle)
            if status is not None:
                reason = self.runtime.exit_reason(handle, status)
                raise BootError(
                    f"The {handle.spec.name} process {reason} while booting.", timed_out=False
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

    def _switch(self, launch: Launch, log: Callable[[str], None]) -> None:
        app, release_id = launch.app, launch.release_id
        now = self.clock()
        new = _App(
            app,
            release_id,
            launch.release_dir,
            launch.process_types,
            formation=launch.formation,
            env=launch.env,
        )
        for handle in launch.started:
            new.processes[handle.spec.name] = _Process(handle.spec, handle, now, up=True)
        with self._app_lock(app):
            if self.take_over is not None:
                self.take_over(app)
            with self._lock:
                old = self._apps.get(app)
                self._apps[app] = new
            # Route first, stop second: the old release serves until the new one does.
            self._update_rotation(new)
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
                args=(app, old.handles(), old.release_id, {release_id, old.release_id}),
                name=f"retire-{app}",
                daemon=True,
            )
            self._retiring.append(retiring)
            retiring.start()

    def _retire(
        self, app: str, handles: list[ProcessHandle], release_id: str, keep: set[str] | None
    ) -> None:
        # Drain first: requests the router already sent the old release finish, and the
        # new release's workers, still importing the app, do not compete for the CPU
        # with the old one's shutdown (on two cores that cost the first requests to the
        # new release 50-100 ms).
        self._stop_draining.wait(self.drain_seconds)
        try:
            self._stop_all(handles, grace=self.stop_grace)
        finally:
            if keep is not None:
                with self._retired:
                    self._retiring_releases.get(app, set()).discard(release_id)
                    self._retired.notify_all()
        if keep is not None:
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
            names = list(state.processes)
        self._event(app, "stopped")
        for name in names:
            self._emit(InstanceEvent(app, name, "stopped", "the app was stopped"))

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

    def restart_app(
        self, app: str, scope: Iterable[str] = (), env: Mapping[str, str] | None = None
    ) -> list[str]:
        """Stop the instances in ``scope`` (process types such as ``web``, or instance
        names such as ``web-2``; all of them when empty), then start them again
        (asynchronously, by ``run``), with ``env`` when given (the app's variables as they
        are now). Returns the names of the instances restarted.

        In place, like Scalingo's restart: an instance is out of the rotation from its stop
        until it answers again; a redeploy has no such gap."""
        wanted = set(scope)
        with self._app_lock(app):
            state = self._require(app)
            unknown = wanted - set(state.processes) - set(state.process_types)
            if unknown:
                raise Conflict(
                    f"Nothing to restart named {', '.join(sorted(unknown))}: the app runs "
                    f"{', '.join(sorted(state.processes)) or 'no instance'}."
                )
            chosen = [
                process
                for name, process in state.processes.items()
                if not wanted or name in wanted or process.spec.process_type in wanted
            ]
            handles = [p.handle for p in chosen if p.handle is not None]
            state.stopped = False
            if env is not None:
                state.env = dict(env)
            for process in chosen:
                if env is not None:
                    process.spec = dataclasses.replace(process.spec, env=dict(env))
                process.handle, process.up, process.failures = None, False, 0
                process.restart_at = self.clock()
            self._update_rotation(state)
            self._stop_all(handles, grace=self.stop_grace)
            self._persist(state)
        names = sorted(process.spec.name for process in chosen)
        self._event(app, f"restarting {', '.join(names) or 'nothing'}")
        for name in names:
            self._emit(InstanceEvent(app, name, "stopped", "restarting"))
        self._wake.set()
        return names

    def scale(
        self, app: str, formation: Formation, env: Mapping[str, str] | None = None
    ) -> None:
        """Make the current release run ``formation``: instances are added (started by
        ``run``, routed once they answer) or removed (out of the rotation first, then
        drained and stopped); an instance whose size changes is restarted at the new size.
        An app never deployed only keeps the formation for its first release."""
        with self._app_lock(app):
            state = self._get(app)
            if state is None:
                return
            wanted = _complete_formation(state.process_types, formation)
            if env is not None:  # instances started from now on see the variables as they are
                state.env = dict(env)
            removed, resized = self._reshape(state, wanted)
            state.formation = wanted
            self._update_rotation(state)
            self._persist(state)
        self._event(app, "scaled to " + _describe(wanted))
        for handle in removed:
            self._emit(InstanceEvent(app, handle.spec.name, "stopped", "scaled down"))
        if resized:
            self._stop_all(resized, grace=self.stop_grace)
        if removed:
            # Out of the rotation already: in-flight requests finish before the SIGTERM.
            retiring = threading.Thread(
                target=self._retire,
                args=(app, removed, state.release_id, None),
                name=f"scale-down-{app}",
                daemon=True,
            )
            self._retiring.append(retiring)
            retiring.start()
        self._wake.set()

    def _reshape(
        self, state: _App, wanted: dict[str, Scale]
    ) -> tuple[list[ProcessHandle], list[ProcessHandle]]:
        """Bring ``state``'s instances to ``wanted``: new ones are due to start (unless the
        app is stopped), resized ones are replaced. Returns the handles to stop: removed
        instances', then resized ones'."""
        due = None if state.stopped else self.clock()
        specs = {
            spec.name: spec
            for spec in self._specs(
                state.name, state.release_id, state.release_dir, state.process_types,
                state.env, wanted,
            )
        }
        removed = [
            handle
            for name in list(state.processes)
            if name not in specs and (handle := state.processes.pop(name).handle) is not None
        ]
        resized: list[ProcessHandle] = []
        for name, spec in specs.items():
            existing = state.processes.get(name)
            if existing is not None and existing.spec.size == spec.size:
                continue
            if existing is not None and existing.handle is not None:
                resized.append(existing.handle)
            state.processes[name] = _Process(spec, restart_at=due)
        return removed, resized

    def observe(self, app: str) -> list[Instance]:
        """The app's instances of its current release, in name order, with their states."""
        state = self._get(app)
        if state is None:
            return []
        with self._lock:
            processes = list(state.processes.values())
            stopped = state.stopped
        instances = []
        for process in processes:
            spec, handle = process.spec, process.handle
            if stopped:
                current = "stopped"
            elif handle is None:
                current = "crashed" if process.failures else "starting"
            else:
                current = "running" if process.up else "starting"
            endpoint = None
            if handle is not None and process.up and handle.port is not None:
                endpoint = Backend(handle.host, handle.port)
            instances.append(
                Instance(
                    name=spec.name,
                    process_type=spec.process_type,
                    index=spec.index,
                    command=spec.command,
                    size=spec.size,
                    state=current,
                    release_id=spec.release_id,
                    # The supervisor's clock is monotonic; callers show wall-clock times.
                    started_at=(
                        time.time() - (self.clock() - process.started_at)
                        if handle is not None
                        else None
                    ),
                    endpoint=endpoint,
                )
            )
        return sorted(instances, key=lambda i: (i.process_type != "web", i.process_type, i.index))

    def converged(self, app: str) -> bool:
        """Whether every instance the formation asks for is running (or the app stopped)."""
        state = self._get(app)
        if state is None:
            return True
        return all(i.state in ("running", "stopped") for i in self.observe(app))

    def remove_app(self, app: str) -> None:
        """Stop everything of the app and forget it: routes, state and logs."""
        with self._app_lock(app):
            with self._lock:
                state = self._apps.pop(app, None)
            self.routes.remove(app)
            if state is not None:
                self._stop_all(state.handles(), grace=self.stop_grace)
            for listener in self._removal_listeners:
                listener(app)  # what else runs of the app (its one-offs) goes too
            self._save(app, {})
            shutil.rmtree(self.logs_dir / app, ignore_errors=True)
            try:
                uid = self.host_uid_for(app)
            except KeyError:
                uid = None  # never had a row: nothing was made for it
            if uid is not None:
                self.runtime.forget_app(uid)
        with self._lock:
            self._app_locks.pop(app, None)

    def hand_over(self, app: str) -> None:
        """Another supervisor runs the app now (it routed a release of its own): stop
        this one's instances after the drain, leaving the route, the saved state and the
        app's sandbox to the new owner."""
        with self._app_lock(app):
            with self._lock:
                state = self._apps.pop(app, None)
            if state is None:
                return
            self._event(app, f"release {state.release_id} handed over to another worker")
            retiring = threading.Thread(
                target=self._retire,
                args=(app, state.handles(), state.release_id, None),
                name=f"hand-over-{app}",
                daemon=True,
            )
            self._retiring.append(retiring)
            retiring.start()

    def rename_app(self, old: str, new: str) -> None:
        """The app ``old`` is called ``new`` from now on: its state, route and logs move.

        Its instances restart under the new name (their ``$CONTAINER`` and log files carry
        it), in place as ``restart_app`` does; the sandbox uid is the app's, not its name's,
        and stays. Nothing to do for an app never deployed, but its logs still move."""
        check_name("app name", new)
        with self._app_lock(old), self._app_lock(new):
            with self._lock:
                if new in self._apps:
                    raise Conflict(f"An app called {new} is already running here.")
                state = self._apps.pop(old, None)
                retiring = self._retiring_releases.pop(old, None)
                if retiring is not None:
                    self._retiring_releases[new] = retiring
            self.routes.remove(old)
            handles = [] if state is None else state.handles()
            if state is not None:
                state.name = new
                specs = self._specs(
                    new, state.release_id, state.release_dir, state.process_types, state.env,
                    state.formation,
                )
                restart_at = None if state.stopped else self.clock()
                state.processes = {spec.name: _Process(spec, restart_at=restart_at) for spec in specs}
                with self._lock:
                    self._apps[new] = state
                self._update_rotation(state)
            self._stop_all(handles, grace=self.stop_grace)
            old_logs, new_logs = self.logs_dir / old, self.logs_dir / new
            if old_logs.is_dir():
                shutil.rmtree(new_logs, ignore_errors=True)
                old_logs.rename(new_logs)
            if state is not None:
                self._persist(state)
        with self._lock:
            self._app_locks.pop(old, None)
        self._event(new, f"renamed from {old}")
        self._wake.set()

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

    def one_off_spec(
        self,
        app: str,
        *,
        index: int,
        command: str,
        env: Mapping[str, str],
        size: str,
        terminal: bool,
    ) -> ProcessSpec:
        """A one-off instance (``one-off-<index>``) of the app's current release, with its
        variables under ``env`` and the limits of ``size``, like the formation's."""
        state = self._get(app)
        if state is None:
            raise Conflict(
                f"The app {app} has never been deployed: deploy it before running a command."
            )
        with self._lock:
            release_id, release_dir = state.release_id, state.release_dir
            variables = {**state.env, **env}
        chosen = SIZES.get(size, SIZES[DEFAULT_SIZE])
        name = f"one-off-{index}"
        return ProcessSpec(
            app=app,
            release_id=release_id,
            process_type="one-off",
            index=index,
            command=command,
            env=variables,
            release_dir=release_dir,
            host_uid=self.host_uid_for(app),
            limits=dataclasses.replace(
                self.limits,
                memory_bytes=chosen.memory_bytes,
                max_processes=min(chosen.max_processes, self.limits.max_processes),
            ),
            log_path=applogs.process_log_path(self.logs_dir / app, release_id, name),
            size=chosen.name,
            terminal=terminal,
        )

    def hook_spec(self, launch: Launch, *, command: str) -> ProcessSpec:
        """The postdeploy hook of a launched release: a one-off (``postdeploy-1``) of that
        release, with its variables and the limits of an M instance, like Scalingo's."""
        size = SIZES[DEFAULT_SIZE]
        return ProcessSpec(
            app=launch.app,
            release_id=launch.release_id,
            process_type="postdeploy",
            index=1,
            command=command,
            env=dict(launch.env),
            release_dir=launch.release_dir,
            host_uid=self.host_uid_for(launch.app),
            limits=dataclasses.replace(
                self.limits,
                memory_bytes=size.memory_bytes,
                max_processes=min(size.max_processes, self.limits.max_processes),
            ),
            log_path=applogs.process_log_path(
                self.logs_dir / launch.app, launch.release_id, "postdeploy-1"
            ),
            size=size.name,
        )

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
        process_types = dict(saved["process_types"])
        saved_formation = {
            name: Scale(int(amount), str(size))
            for name, (amount, size) in (saved.get("formation") or {}).items()
        }
        state = _App(
            name=check_name("app name", app),
            release_id=check_name("release id", str(saved["release_id"])),
            release_dir=Path(saved["release_dir"]),
            process_types=process_types,
            formation=_complete_formation(process_types, saved_formation),
            stopped=bool(saved.get("stopped", False)),
            env=dict(env),
        )
        handles: Mapping[str, Any] = saved.get("processes") or {}
        specs = self._specs(
            app, state.release_id, state.release_dir, state.process_types, env, state.formation
        )
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
            self._wake.wait(self._next_pass)
            self._wake.clear()

    def tick(self) -> None:
        """One supervision pass: notice exits, restart what is due, route what answers."""
        with self._lock:
            apps = list(self._apps.values())
        next_pass = IDLE_TICK_SECONDS
        for state in apps:
            lock = self._app_lock(state.name)
            # An app busy with a lifecycle change is looked at next time, not waited for.
            if not lock.acquire(blocking=False):
                next_pass = TICK_SECONDS
                continue
            try:
                if self._closing or state.stopped or self._get(state.name) is not state:
                    continue
                changed = False
                due: list[_Process] = []
                for process in list(state.processes.values()):
                    now = self.clock()
                    if process.handle is None:
                        if process.restart_at is not None and now >= process.restart_at:
                            due.append(process)
                    else:
                        changed |= self._supervise(state, process, now)
                    next_pass = min(next_pass, _due_in(process, now))
                if due:
                    changed |= self._start_due(state, due, self.clock())
                    next_pass = TICK_SECONDS
                if changed:
                    self._persist(state)
            finally:
                lock.release()
        self._next_pass = next_pass

    def _supervise(self, state: _App, process: _Process, now: float) -> bool:
        """Advance one started process; True when its handle changed (the state must be
        saved)."""
        assert process.handle is not None
        status = self.runtime.poll(process.handle)
        if status is None:
            self._check_running(state, process, now)
            return process.handle is None
        self.runtime.stop(process.handle, grace=0)  # release what it held
        reason = self.runtime.exit_reason(process.handle, status)
        self._failed(state, process, now, reason)
        return True

    def _start_due(self, state: _App, due: list[_Process], now: float) -> bool:
        """Start processes due to (re)start, side by side: ``scale web:4`` then costs one
        sandbox start, not four in a row. True when one started."""
        outcomes: dict[str, ProcessHandle | BootError] = {}

        def start(spec: ProcessSpec) -> None:
            try:
                outcomes[spec.name] = self.runtime.start(spec)
            except BootError as exc:
                outcomes[spec.name] = exc

        threads = [threading.Thread(target=start, args=(p.spec,)) for p in due[1:]]
        for thread in threads:
            thread.start()
        start(due[0].spec)  # this thread starts one of them itself
        for thread in threads:
            thread.join()
        started = False
        for process in due:
            name = process.spec.name
            outcome = outcomes[name]
            if isinstance(outcome, BootError):
                self._failed(state, process, now, f"could not be started: {outcome.message}")
                continue
            process.handle, process.started_at, process.restart_at = outcome, now, None
            process.up = not process.spec.is_web
            started = True
            self._event(state.name, f"{name} started")
            self._emit(InstanceEvent(state.name, name, "starting", "started"))
        return started

    def _check_running(self, state: _App, process: _Process, now: float) -> None:
        assert process.handle is not None
        handle = process.handle
        if process.up:
            if process.failures and now - process.started_at >= STABLE_AFTER:
                process.failures = 0
            return
        if handle.port is not None and accepts_connections(handle.host, handle.port):
            process.up = True
            self._update_rotation(state)
            self._event(state.name, f"{process.spec.name} is accepting connections")
            self._emit(InstanceEvent(state.name, process.spec.name, "running", "accepting"))
        elif now - process.started_at > self.boot_timeout:
            self.runtime.stop(handle, grace=0)
            reason = f"did not accept connections on $PORT within {self.boot_timeout:g} seconds"
            self._failed(state, process, now, reason)

    def _failed(self, state: _App, process: _Process, now: float, reason: str) -> None:
        if now - process.started_at >= STABLE_AFTER:
            process.failures = 0
        delay = min(BACKOFF_CAP, BACKOFF_START * 2**process.failures)
        process.failures += 1
        process.handle, process.up, process.restart_at = None, False, now + delay
        if process.spec.is_web:
            self._update_rotation(state)
        self._event(state.name, f"{process.spec.name} {reason}; restarting in {delay:g} s")
        self._emit(InstanceEvent(state.name, process.spec.name, "crashed", reason))

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
        formation: Formation,
    ) -> list[ProcessSpec]:
        """One spec per instance the formation asks for, web first: its boot decides, and
        the others may need it."""
        host_uid = self.host_uid_for(app)
        ordered = sorted(process_types.items(), key=lambda item: item[0] != "web")
        specs = []
        for process_type, command in ordered:
            scale = formation.get(process_type, Scale(1))
            size = SIZES.get(scale.size, SIZES[DEFAULT_SIZE])
            limits = dataclasses.replace(
                self.limits,
                memory_bytes=size.memory_bytes,
                max_processes=min(size.max_processes, self.limits.max_processes),
            )
            for index in range(1, scale.amount + 1):
                specs.append(
                    ProcessSpec(
                        app=app,
                        release_id=release_id,
                        process_type=check_name("process type", process_type),
                        index=index,
                        command=command,
                        env=dict(env),
                        release_dir=release_dir,
                        host_uid=host_uid,
                        limits=limits,
                        log_path=applogs.process_log_path(
                            self.logs_dir / app, release_id, f"{process_type}-{index}"
                        ),
                        size=size.name,
                    )
                )
        return specs

    def _update_rotation(self, state: _App) -> None:
        """Route the app to its web instances that accept connections, and only those."""
        if state.stopped:
            self.routes.set_status(state.name, "stopped")
            return
        if "web" not in state.process_types:
            self.routes.remove(state.name)
            return
        backends = [
            Backend(p.handle.host, p.handle.port)
            for p in state.processes.values()
            if p.spec.is_web and p.up and p.handle is not None and p.handle.port is not None
        ]
        web = state.formation.get("web", Scale(1))
        self.routes.set_backends(
            state.name, backends, empty="scaled-down" if web.amount == 0 else "crashed"
        )

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

    def subscribe(self, listener: Callable[[InstanceEvent], None]) -> None:
        """Call ``listener`` with every change of an instance's state, from the thread that
        made it (keep it short: it runs under the app's lock)."""
        self._listeners.append(listener)

    def on_remove(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(app)`` when an app is removed, before its logs are deleted."""
        self._removal_listeners.append(listener)

    def _emit(self, event: InstanceEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("an instance event listener failed")

    def _prune_logs(self, app: str, *, keep: set[str]) -> None:
        """Keep the logs of the current and the previous release only."""
        app_dir = self.logs_dir / app
        for path in app_dir.iterdir() if app_dir.is_dir() else []:
            if path.is_dir() and path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)


def _complete_formation(
    process_types: Mapping[str, str], formation: Formation | None
) -> dict[str, Scale]:
    """``formation`` for exactly the release's process types: one instance of each type it
    does not name."""
    given = formation or {}
    return {name: given.get(name, Scale(1)) for name in process_types}


def _describe(formation: Formation) -> str:
    return ", ".join(f"{name}:{s.amount}:{s.size}" for name, s in sorted(formation.items()))


def _due_in(process: _Process, now: float) -> float:
    """How soon ``process`` needs the next supervision pass: a booting one is checked every
    tick, one waiting out its restart delay when it is due; a running one only needs the
    quiet pass (its exit is reported by the runtime, or seen then)."""
    if process.handle is not None:
        return IDLE_TICK_SECONDS if process.up else BOOT_CHECK_SECONDS
    if process.restart_at is None:
        return IDLE_TICK_SECONDS
    return min(IDLE_TICK_SECONDS, max(TICK_SECONDS, process.restart_at - now))
