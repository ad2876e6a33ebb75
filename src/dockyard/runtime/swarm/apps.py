"""SwarmApps: the apps' processes as Docker Swarm services; Swarm is the reconciler.

Each process type of an app is one service (``specs``) from the release's image in the
registry; the formation's amount is its replicas. Swarm keeps the tasks running,
reschedules what is lost and rolls updates out; dockyard only asks and watches:

- ``launch`` creates the services of a first release, or updates the existing ones to
  the new image (a rolling update, new tasks first); ``complete`` waits until every
  service runs its new tasks (a web task runs once its health check passed), or ends
  the deployment when a new task fails: ``crashed-error`` when it exited,
  ``timeout-error`` when it never answered on ``$PORT``. ``abandon`` rolls the services
  back (or removes those it created), so the previous release serves on;
- ``run`` reads the tasks a few times a second and routes each app to its running web
  tasks, at their node's address and published port: a task lost, restarted or
  rescheduled leaves the route and its successor joins it;
- a replaced task drains (``specs``): the launcher holds its ``SIGTERM`` back for the
  drain, and the next read of the tasks has dropped it from the route by then.

Persisted per app (``StateStore``), JSON-able: the release, its process types, the
formation and whether it is stopped, so ``status`` and ``scale`` know the app after a
server restart. The services themselves live in Swarm: dockyard's restart or stop leaves
them running.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from dockyard import sandbox
from dockyard.domain.formation import DEFAULT_SIZE, SIZES, Formation, Scale
from dockyard.errors import BootError, Conflict
from dockyard.routetable import Backend
from dockyard.runtime import applogs
from dockyard.runtime.appbook import AppBook, StateStore
from dockyard.runtime.base import Instance, Launch, ProcessSpec, check_name
from dockyard.runtime.boot import BootCancelled
from dockyard.runtime.supervisor import CRASHED_AFTER, RouteSink
from dockyard.runtime.swarm import tasks as swarm_tasks
from dockyard.runtime.swarm.logs import ServiceLogs, parse_line
from dockyard.runtime.swarm.specs import (
    LABEL_APP,
    LABEL_PREFIX,
    LABEL_TYPE,
    ServiceDefinition,
    Timings,
    network_name,
    service_spec,
)
from dockyard.runtime.swarm.tasks import Failure, Task

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.25
NODES_SECONDS = 5.0
BOOT_OUTPUT_LINES = 20
_RELEASE_WAIT_POLL = 0.5
# How long a question about an app waits for its adoption to read its state (a database
# read and a list of services: well under a second unless something is wrong).
ADOPTION_SECONDS = 10.0


@dataclass(eq=False)
class _App:
    name: str
    release_id: str
    process_types: dict[str, str]
    formation: dict[str, Scale]
    image: str
    stopped: bool = False
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def state(self) -> dict[str, Any]:
        return {
            "runtime": "swarm",
            "release_id": self.release_id,
            "process_types": dict(self.process_types),
            "formation": {t: [s.amount, s.size] for t, s in self.formation.items()},
            "image": self.image,
            "stopped": self.stopped,
        }


@dataclass
class SwarmLaunch(Launch):
    """A release whose services were created or updated, not yet serving."""

    image: str = ""
    # process type -> service id, for every service of the release.
    services: dict[str, str] = field(default_factory=dict)
    # Services that ran the previous release: their spec before the update.
    previous: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    failure: Failure | None = None


class SwarmApps(AppBook["_App"]):
    def __init__(
        self,
        client: docker.DockerClient,
        routes: RouteSink,
        store: StateStore,
        *,
        image_for: Callable[[str, str], str],
        prefix: str,
        timings: Timings,
        logs_dir: Path,
        host_uid_for: Callable[[str], int],
        poll_seconds: float = POLL_SECONDS,
        take_over: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(store, logs_dir)
        self.client = client
        self.routes = routes
        # In a worker process (services/routing.py): makes this worker the app's owner,
        # the one that routes it and answers for it, just before it routes a new release.
        self.take_over = take_over
        self.image_for = image_for
        self.prefix = prefix
        self.timings = timings
        self.host_uid_for = host_uid_for
        self.poll_seconds = poll_seconds
        self._routed: dict[str, tuple[tuple[Backend, ...], str]] = {}
        self._task_names: dict[str, tuple[str, int]] = {}
        self._nodes: dict[str, str] = {}
        self._nodes_read_at = 0.0
        self._removal_listeners: list[Callable[[str], None]] = []
        self.logs = ServiceLogs(client, logs_dir)
        self._adopting: set[str] = set()
        self._adoptions = threading.Condition()

    # -- deploying ----------------------------------------------------------------------

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
    ) -> SwarmLaunch:
        """Create or update the app's services to run the release (the image pushed at
        ``pushing``); returns at once, the tasks booting."""
        check_name("app name", app)
        check_name("release id", release_id)
        if not process_types:
            raise BootError(
                "The release has no process types to start: add a Procfile.", timed_out=False
            )
        wanted = {name: (formation or {}).get(name, Scale(1)) for name in process_types}
        if not any(scale.amount for scale in wanted.values()):
            raise BootError(
                "Every process type is scaled to zero: scale one up (scale web:1) to deploy.",
                timed_out=False,
            )
        launch = SwarmLaunch(
            app,
            release_id,
            release_dir,
            dict(process_types),
            wanted,
            dict(env),
            image=self.image_for(app, release_id),
        )
        try:
            network = self._ensure_network(app)
            existing = self._services_of(app)
            for process_type in sorted(process_types, key=lambda name: name != "web"):
                spec = self._spec(launch, process_type, network)
                scale = wanted[process_type]
                log(
                    f"Starting {process_type}: {process_types[process_type]}"
                    f" ({process_type}:{scale.amount}:{scale.size}, Swarm service {spec['Name']})"
                )
                current = existing.get(process_type)
                if current is None:
                    service_id = str(self.client.api.create_service(**_arguments(spec))["ID"])
                else:
                    service_id = str(current["ID"])
                    launch.previous[process_type] = current["Spec"]
                    self._update(service_id, spec)
                launch.services[process_type] = service_id
                self.logs.follow(service_id, app, process_type, self._task_name)
        except docker.errors.APIError as exc:
            self.abandon(launch, log=log, explain=False)
            raise BootError(
                f"Swarm refused the app's services: {exc.explanation or exc}", timed_out=False
            ) from None
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
    ) -> None:
        """Wait until every service runs the release's tasks, then make it the app's.
        ``BootError`` (the release rolled back, its output logged) when it does not."""
        swarm_launch = _swarm(launch)
        if "web" in swarm_launch.process_types:
            log("Waiting for web to accept connections on $PORT (Swarm's health check)")
        t = self.timings
        deadline = time.monotonic() + t.boot + 4 * t.check + t.check + 5
        try:
            while True:
                if cancelled():
                    raise BootCancelled("The deployment was cancelled.", timed_out=False)
                pending = self._pending(swarm_launch)
                if swarm_launch.failure is not None:
                    raise BootError(
                        swarm_launch.failure.message, timed_out=swarm_launch.failure.timed_out
                    )
                if not pending:
                    break
                if time.monotonic() > deadline:
                    doing = "accept connections on $PORT" if pending[0] == "web" else "start"
                    raise BootError(
                        f"The {pending[0]} process did not {doing} within {t.boot:g} seconds.",
                        timed_out=True,
                    )
                time.sleep(self.poll_seconds)
        except BootCancelled:
            self.abandon(swarm_launch, log=log, explain=False)
            raise
        except BootError:
            self.abandon(swarm_launch, log=log)
            raise
        except BaseException:
            self.abandon(swarm_launch, log=log, explain=False)
            raise
        self._switch(swarm_launch, log)

    def abandon(self, launch: Launch, *, log: Callable[[str], None], explain: bool = True) -> None:
        """Put the services back as they were: the created ones removed, the updated ones
        rolled back to the previous release (if Swarm has not already)."""
        swarm_launch = _swarm(launch)
        if explain:
            self._explain(swarm_launch, log)
        for process_type, service_id in list(swarm_launch.services.items()):
            previous = swarm_launch.previous.get(process_type)
            try:
                if previous is None:
                    self.logs.forget(service_id)
                    self.client.api.remove_service(service_id)
                elif not self._rolled_back(service_id):
                    self._update(service_id, previous)
                    log(f"The {process_type} service goes back to the previous release.")
                else:
                    log(f"Swarm rolled the {process_type} service back to the previous release.")
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as exc:
                logger.warning("could not roll back the %s service: %s", process_type, exc)
        swarm_launch.services.clear()
        if self._get(swarm_launch.app) is None:
            self._remove_network(swarm_launch.app)

    def _pending(self, launch: SwarmLaunch) -> list[str]:
        """The process types whose new tasks are not all running yet; sets
        ``launch.failure`` when one of them failed."""
        pending = []
        for process_type, service_id in launch.services.items():
            # All of them: a failed task may already be replaced, or rolled back.
            tasks = [
                task
                for task in self._tasks(service=service_id, all_states=True)
                if task.release_id == launch.release_id
            ]
            failure = swarm_tasks.failure_of(process_type, tasks, self.timings.boot)
            update = self._update_state(service_id) if process_type in launch.previous else ""
            if failure is None and update in swarm_tasks.ROLLED_BACK:
                failure = swarm_tasks.rollback_failure(process_type, tasks, self.timings.boot)
            if failure is not None:
                launch.failure = failure
                return [process_type]
            running = sum(1 for task in tasks if task.running)
            # An update is Swarm's to call good, after watching the new tasks for its
            # monitor period: a task that runs and dies a moment later is rolled back.
            if running < launch.formation[process_type].amount or update not in ("", "completed"):
                pending.append(process_type)
        return pending

    def _switch(self, launch: SwarmLaunch, log: Callable[[str], None]) -> None:
        app = launch.app
        with self._app_lock(app):
            if self.take_over is not None:
                self.take_over(app)
            old = self._get(app)
            new = _App(
                app,
                launch.release_id,
                launch.process_types,
                launch.formation,
                launch.image,
                env=launch.env,
            )
            with self._lock:
                self._apps[app] = new
            for process_type, service in self._services_of(app).items():
                if process_type not in launch.process_types:  # gone from the Procfile
                    self._remove_service(str(service["ID"]))
            self._persist(new)
            self._refresh_app(new, self._tasks_by_service())
        log(f"Release {launch.release_id} is up and serving.")
        self._event(app, f"release {launch.release_id} started")
        if old is not None:
            log(f"Swarm stops the previous release ({old.release_id}) after its drain.")

    def _explain(self, launch: SwarmLaunch, log: Callable[[str], None]) -> None:
        """What the failed task wrote last; with no failed task (a timeout), what each
        process type's new tasks wrote."""
        failure = launch.failure
        for process_type, service_id in launch.services.items():
            if failure is not None and failure.task_id:
                tasks = {failure.task_id}
            else:
                tasks = {
                    task.id
                    for task in self._tasks(service=service_id, all_states=True)
                    if task.release_id == launch.release_id
                }
            lines = self._task_output(service_id, tasks)
            if failure is not None and failure.task_id and not lines:
                continue  # the failed task is another process type's
            if not lines:
                log(f"{process_type} wrote nothing before it stopped.")
                continue
            log(f"Last lines written by {process_type}:")
            for line in lines:
                log(f"[{process_type}] {line}")

    def _task_output(self, service_id: str, tasks: set[str]) -> list[str]:
        """The last lines the service's ``tasks`` wrote (Swarm's service logs)."""
        lines: list[str] = []
        with contextlib.suppress(docker.errors.APIError, OSError, ValueError):
            stream = self.client.api.service_logs(
                service_id,
                details=True,
                stdout=True,
                stderr=True,
                timestamps=True,
                tail=200,
                is_tty=False,
            )
            for raw in b"".join(stream).splitlines():
                parsed = parse_line(raw)
                if parsed is not None and parsed[1] in tasks:
                    lines.append(parsed[2].decode(errors="replace"))
        return lines[-BOOT_OUTPUT_LINES:]

    # -- releases going away ------------------------------------------------------------

    def retiring_releases(self, app: str) -> set[str]:
        """Releases of ``app`` other than the current one whose tasks still run (draining)."""
        state = self._get(app)
        current = None if state is None else state.release_id
        found = set()
        for service in self._services_of(app).values():
            for task in self._tasks(service=str(service["ID"]), all_states=True):
                if task.release_id != current and task.state in (
                    "running",
                    *swarm_tasks.STARTING_STATES,
                ):
                    found.add(task.release_id)
        return found

    def wait_release_stopped(self, app: str, release_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while release_id in self.retiring_releases(app):
            if time.monotonic() > deadline:
                return False
            time.sleep(_RELEASE_WAIT_POLL)
        return True

    def wait_retired(self, timeout: float | None = None) -> None:
        """Nothing to wait for here: Swarm stops the replaced tasks on its own."""

    # -- lifecycle ----------------------------------------------------------------------

    def stop_app(self, app: str) -> None:
        """Every service to zero replicas (the formation is kept for ``start_app``)."""
        with self._app_lock(app):
            state = self._get(app)
            if state is None or state.stopped:
                return
            state.stopped = True
            self._apply(state)
            self.routes.set_status(app, "stopped")
            self._routed.pop(app, None)
            self._persist(state)
        self._event(app, "stopped")

    def start_app(self, app: str) -> None:
        with self._app_lock(app):
            state = self._require(app)
            if not state.stopped:
                return
            state.stopped = False
            self._apply(state)
            self._persist(state)
        self._event(app, "starting")

    def restart_app(
        self, app: str, scope: Iterable[str] = (), env: Mapping[str, str] | None = None
    ) -> list[str]:
        """A rolling restart (new tasks first) of the process types in ``scope`` (an
        instance name such as ``web-2`` restarts its whole type: Swarm replaces tasks, not
        chosen ones), with ``env`` when given. Returns the instances restarted."""
        wanted = set(scope)
        with self._app_lock(app):
            state = self._require(app)
            types = {
                name.rsplit("-", 1)[0] if name not in state.process_types else name
                for name in wanted
            }
            unknown = types - set(state.process_types)
            if unknown:
                raise Conflict(
                    f"Nothing to restart named {', '.join(sorted(wanted))}: the app runs "
                    f"{', '.join(sorted(state.process_types))}."
                )
            chosen = sorted(types or state.process_types)
            if env is not None:
                state.env = dict(env)
            state.stopped = False
            self._apply(state, force=frozenset(chosen))
            self._persist(state)
        names = [
            f"{process_type}-{index}"
            for process_type in chosen
            for index in range(1, state.formation[process_type].amount + 1)
        ]
        self._event(app, f"restarting {', '.join(names) or 'nothing'}")
        return names

    def scale(self, app: str, formation: Formation, env: Mapping[str, str] | None = None) -> None:
        """The services' replicas and sizes to ``formation`` (a size change rolls the
        tasks, new ones first). An app never deployed keeps it for its first release."""
        with self._app_lock(app):
            state = self._get(app)
            if state is None:
                return
            state.formation = {
                name: formation.get(name, state.formation.get(name, Scale(1)))
                for name in state.process_types
            }
            if env is not None:
                state.env = dict(env)
            self._apply(state)
            self._persist(state)
            self._refresh_app(state, self._tasks_by_service())
        shown = ", ".join(f"{n}:{s.amount}:{s.size}" for n, s in sorted(state.formation.items()))
        self._event(app, f"scaled to {shown}")

    def remove_app(self, app: str) -> None:
        with self._app_lock(app):
            with self._lock:
                self._apps.pop(app, None)
            self.routes.remove(app)
            self._routed.pop(app, None)
            for service in self._services_of(app).values():
                self._remove_service(str(service["ID"]))
            for listener in self._removal_listeners:
                listener(app)
            self._save(app, {})
            shutil.rmtree(self.logs_dir / app, ignore_errors=True)
            self._remove_network(app)
        with self._lock:
            self._app_locks.pop(app, None)

    def hand_over(self, app: str) -> None:
        """Another worker switched the app to a release of its own: the services are
        Swarm's and the new owner's now, so this worker only stops routing the app and
        following its logs; the route, the saved state and the services stay."""
        with self._app_lock(app):
            with self._lock:
                state = self._apps.pop(app, None)
            self._routed.pop(app, None)
            if state is None:
                return
            for service in self._services_of(app).values():
                self.logs.forget(str(service["ID"]))
        self._event(app, f"release {state.release_id} handed over to another worker")

    def rename_app(self, old: str, new: str) -> None:
        """The services are made again under the new name (new tasks, the same image);
        the old ones go. The route and the logs move."""
        check_name("app name", new)
        with self._app_lock(old), self._app_lock(new):
            with self._lock:
                if new in self._apps:
                    raise Conflict(f"An app called {new} is already running here.")
                state = self._apps.pop(old, None)
            self.routes.remove(old)
            self._routed.pop(old, None)
            services = self._services_of(old)
            if state is not None:
                state.name = new
                with self._lock:
                    self._apps[new] = state
                self._apply(state, create=True)
                self._persist(state)
            for service in services.values():
                self._remove_service(str(service["ID"]))
            self._remove_network(old)
            old_logs, new_logs = self.logs_dir / old, self.logs_dir / new
            if old_logs.is_dir():
                shutil.rmtree(new_logs, ignore_errors=True)
                old_logs.rename(new_logs)
        with self._lock:
            self._app_locks.pop(old, None)
        self._event(new, f"renamed from {old}")

    # -- what runs ----------------------------------------------------------------------

    def observe(self, app: str) -> list[Instance]:
        """One instance per slot of each service: Swarm's task for it, as dockyard's."""
        state = self._settled(app)
        if state is None:
            return []
        by_type = self._tasks_by_type(state)
        instances = []
        for process_type, command in state.process_types.items():
            scale = state.formation.get(process_type, Scale(1))
            amount = 0 if state.stopped else scale.amount
            current = swarm_tasks.current_tasks(by_type.get(process_type, []))
            # Swarm may scale down any slot: the instances are the tasks it keeps, named by
            # their slots (as their log files are), and a slot not filled yet is starting.
            kept = [current[slot] for slot in sorted(current)][:amount]
            free = (slot for slot in range(1, amount + len(current) + 1) if slot not in current)
            slots: list[tuple[int, Task | None]] = [(task.slot, task) for task in kept]
            slots += [(next(free), None) for _ in range(amount - len(kept))]
            for slot, task in slots:
                running = task is not None and task.running
                endpoint = None
                if running and task is not None and task.published_port is not None:
                    endpoint = Backend(self._node_address(task.node_id), task.published_port)
                instances.append(
                    Instance(
                        name=f"{process_type}-{slot}",
                        process_type=process_type,
                        index=slot,
                        command=command,
                        size=scale.size,
                        state="starting" if task is None else swarm_tasks.instance_state(task),
                        release_id=state.release_id if task is None else task.release_id,
                        started_at=task.started_at if task is not None and running else None,
                        endpoint=endpoint,
                    )
                )
        return sorted(instances, key=lambda i: (i.process_type != "web", i.process_type, i.index))

    def converged(self, app: str) -> bool:
        state = self._settled(app)
        if state is None:
            return True
        if state.stopped:
            return not any(
                task.state == "running"
                for tasks in self._tasks_by_type(state).values()
                for task in tasks
            )
        return all(i.state == "running" for i in self.observe(app))

    def status(self, app: str) -> str:
        state = self._settled(app)
        if state is None:
            return "new"
        if state.stopped:
            return "stopped"
        instances = self.observe(app)
        if all(i.state == "running" for i in instances):
            return "running"
        by_type = self._tasks_by_type(state, all_states=True)
        for tasks in by_type.values():
            failed: dict[int, int] = {}
            for task in tasks:
                if task.state in swarm_tasks.FAILED_STATES:
                    failed[task.slot] = failed.get(task.slot, 0) + 1
            if any(count >= CRASHED_AFTER for count in failed.values()):
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
        """A one-off (``one-off-<index>``) of the app's current release: a container of
        its image on this engine (``OneOffs`` over the docker runtime), not a service."""
        state = self._get(app)
        if state is None:
            raise Conflict(
                f"The app {app} has never been deployed: deploy it before running a command."
            )
        chosen = SIZES.get(size, SIZES[DEFAULT_SIZE])
        name = f"one-off-{index}"
        return ProcessSpec(
            app=app,
            release_id=state.release_id,
            process_type="one-off",
            index=index,
            command=command,
            env={**state.env, **env},
            release_dir=self.logs_dir / app,  # unused: the container runs the image
            host_uid=self.host_uid_for(app),
            limits=sandbox.Limits(
                memory_bytes=chosen.memory_bytes, max_processes=chosen.max_processes
            ),
            log_path=applogs.process_log_path(self.logs_dir / app, state.release_id, name),
            size=chosen.name,
            terminal=terminal,
        )

    # -- the server's life --------------------------------------------------------------

    def restore(self, env_for: Callable[[str], Mapping[str, str]]) -> None:
        """At server start: the apps' saved state, their services' logs followed again,
        their routes read from the tasks."""
        for app, saved in self.store.load_all().items():
            self._restore_app(app, saved, env_for)
        self.tick()

    def adopt(
        self, app: str, env_for: Callable[[str], Mapping[str, str]], claim: Callable[[], bool]
    ) -> bool:
        """This worker answers for ``app`` from now on, if ``claim`` makes it the app's
        owner (its owner is gone, services/presence.py): its saved state read, its
        services' logs followed, its route written from the tasks. Whether it did.

        From the claim on, the api asks this worker about the app; until the state is read
        those questions wait (``_settled``) rather than hear that the app runs nothing."""
        with self._adoptions:
            self._adopting.add(app)
        try:
            if not claim():
                return False
            saved = self.store.load_all().get(app)
            with self._app_lock(app):
                if not saved or not self._restore_app(app, saved, env_for):
                    return False
        finally:
            with self._adoptions:
                self._adopting.discard(app)
                self._adoptions.notify_all()
        self._event(app, "adopted by another worker: the one that ran it is gone")
        self.tick()
        return True

    def _settled(self, app: str) -> _App | None:
        """The app's state, once an adoption of it under way has read it."""
        state = self._get(app)
        if state is None:
            with self._adoptions:
                self._adoptions.wait_for(lambda: app not in self._adopting, ADOPTION_SECONDS)
            state = self._get(app)
        return state

    def _restore_app(
        self, app: str, saved: Mapping[str, Any], env_for: Callable[[str], Mapping[str, str]]
    ) -> bool:
        if not saved or saved.get("runtime") != "swarm":
            return False
        try:
            process_types = dict(saved["process_types"])
            state = _App(
                name=check_name("app name", app),
                release_id=check_name("release id", str(saved["release_id"])),
                process_types=process_types,
                formation={
                    name: Scale(int(amount), str(size))
                    for name, (amount, size) in (saved.get("formation") or {}).items()
                },
                image=str(saved.get("image", "")),
                stopped=bool(saved.get("stopped", False)),
                env=dict(env_for(app)),
            )
        except Exception:
            logger.exception("could not restore app %s from its saved state", app)
            return False
        with self._lock:
            self._apps[app] = state
        self._routed.pop(app, None)  # written again by the next tick
        for process_type, service in self._services_of(app).items():
            self.logs.follow(str(service["ID"]), app, process_type, self._task_name)
        if state.stopped:
            self.routes.set_status(app, "stopped")
        return True

    def run(self, stop_event: threading.Event) -> None:
        """Route every app to its running web tasks, a few times a second, until
        ``stop_event``."""
        while not stop_event.is_set():
            try:
                self.tick()
            except Exception:
                logger.exception("reading Swarm's tasks failed")
            stop_event.wait(self.poll_seconds)

    def tick(self) -> None:
        with self._lock:
            apps = list(self._apps.values())
        if not apps:
            return
        by_service = self._tasks_by_service()
        for state in apps:
            lock = self._app_lock(state.name)
            if not lock.acquire(blocking=False):
                continue  # a lifecycle change routes it itself
            try:
                if self._get(state.name) is state:
                    self._refresh_app(state, by_service)
            finally:
                lock.release()

    def shutdown(self) -> None:
        """Stop following logs. The services run on: Swarm keeps the apps up while
        dockyard restarts (or is upgraded)."""
        self.logs.close()

    def on_remove(self, listener: Callable[[str], None]) -> None:
        self._removal_listeners.append(listener)

    # -- helpers ------------------------------------------------------------------------

    def _refresh_app(self, state: _App, by_type: Mapping[tuple[str, str], list[Task]]) -> None:
        if state.stopped:
            return
        if "web" not in state.process_types:
            if self._routed.pop(state.name, None) is not None:
                self.routes.remove(state.name)
            return
        tasks = by_type.get((state.name, "web"), [])
        backends = tuple(swarm_tasks.endpoints(tasks, self._node_addresses()))
        empty = "scaled-down" if state.formation.get("web", Scale(1)).amount == 0 else "crashed"
        if self._routed.get(state.name) == (backends, empty):
            return
        self._routed[state.name] = (backends, empty)
        self.routes.set_backends(state.name, backends, empty=empty)

    def _spec(self, launch: SwarmLaunch, process_type: str, network: str) -> dict[str, Any]:
        return service_spec(
            ServiceDefinition(
                prefix=self.prefix,
                app=launch.app,
                process_type=check_name("process type", process_type),
                command=launch.process_types[process_type],
                release_id=launch.release_id,
                image=launch.image,
                scale=launch.formation[process_type],
                uid=self.host_uid_for(launch.app),
                network=network,
                env=launch.env,
            ),
            self.timings,
        )

    def _apply(
        self, state: _App, *, force: frozenset[str] = frozenset(), create: bool = False
    ) -> None:
        """The app's services to its state: formation, variables, stopped or not."""
        network = self._ensure_network(state.name)
        existing = {} if create else self._services_of(state.name)
        for process_type, command in state.process_types.items():
            scale = state.formation.get(process_type, Scale(1))
            spec = service_spec(
                ServiceDefinition(
                    prefix=self.prefix,
                    app=state.name,
                    process_type=process_type,
                    command=command,
                    release_id=state.release_id,
                    image=state.image,
                    scale=Scale(0, scale.size) if state.stopped else scale,
                    uid=self.host_uid_for(state.name),
                    network=network,
                    env=state.env,
                ),
                self.timings,
            )
            current = existing.get(process_type)
            try:
                if current is None:
                    service_id = str(self.client.api.create_service(**_arguments(spec))["ID"])
                    self.logs.follow(service_id, state.name, process_type, self._task_name)
                    continue
                if process_type in force:
                    spec["TaskTemplate"]["ForceUpdate"] = (
                        int(current["Spec"]["TaskTemplate"].get("ForceUpdate", 0)) + 1
                    )
                self._update(str(current["ID"]), spec)
            except docker.errors.APIError as exc:
                raise Conflict(f"Swarm refused the change: {exc.explanation or exc}") from None

    def _update(self, service_id: str, spec: Mapping[str, Any]) -> None:
        version = self.client.api.inspect_service(service_id)["Version"]["Index"]
        arguments = _arguments(spec)
        self.client.api.update_service(service_id, version, **arguments)

    def _update_state(self, service_id: str) -> str:
        """Swarm's state of the service's last update (``updating``, ``completed``,
        ``rollback_started``, …); "" when it has none."""
        try:
            status = self.client.api.inspect_service(service_id).get("UpdateStatus") or {}
        except docker.errors.NotFound:
            return "rollback_completed"  # gone: as good as given up
        return str(status.get("State", ""))

    def _rolled_back(self, service_id: str) -> bool:
        return self._update_state(service_id) in swarm_tasks.ROLLED_BACK

    def _services_of(self, app: str) -> dict[str, dict[str, Any]]:
        """The app's services by process type, as the Engine API describes them."""
        services = self.client.api.services(
            filters={"label": [f"{LABEL_PREFIX}={self.prefix}", f"{LABEL_APP}={app}"]}
        )
        return {str(s["Spec"]["Labels"].get(LABEL_TYPE, "")): s for s in services}

    def _tasks(self, *, service: str, all_states: bool = False) -> list[Task]:
        filters: dict[str, Any] = {"service": service}
        if not all_states:
            filters["desired-state"] = "running"
        try:
            raw = self.client.api.tasks(filters=filters)
        except docker.errors.NotFound:
            return []
        tasks = [swarm_tasks.parse_task(item) for item in raw]
        self._remember(tasks)
        return tasks

    def _tasks_by_service(self) -> dict[tuple[str, str], list[Task]]:
        """Every running task of this dockyard's services, by (app, process type): two
        requests, whatever the number of apps."""
        services = self.client.api.services(filters={"label": f"{LABEL_PREFIX}={self.prefix}"})
        if not services:
            return {}
        keys = {
            str(s["ID"]): (
                str(s["Spec"]["Labels"].get(LABEL_APP, "")),
                str(s["Spec"]["Labels"].get(LABEL_TYPE, "")),
            )
            for s in services
        }
        raw = self.client.api.tasks(filters={"service": list(keys), "desired-state": "running"})
        tasks = [swarm_tasks.parse_task(item) for item in raw]
        self._remember(tasks)
        grouped: dict[tuple[str, str], list[Task]] = {key: [] for key in keys.values()}
        for task in tasks:
            key = keys.get(task.service_id)
            if key is not None:
                grouped[key].append(task)
        return grouped

    def _tasks_by_type(self, state: _App, *, all_states: bool = False) -> dict[str, list[Task]]:
        return {
            process_type: self._tasks(service=str(service["ID"]), all_states=all_states)
            for process_type, service in self._services_of(state.name).items()
        }

    def _remember(self, tasks: Iterable[Task]) -> None:
        with self._lock:
            for task in tasks:
                self._task_names[task.id] = (task.release_id, task.slot)

    def _task_name(self, task_id: str) -> tuple[str, int] | None:
        """A task's release and slot, for its log lines (asked of Swarm if not seen)."""
        with self._lock:
            known = self._task_names.get(task_id)
        if known is not None:
            return known
        try:
            task = swarm_tasks.parse_task(self.client.api.inspect_task(task_id))
        except (docker.errors.APIError, OSError):
            return None
        if not task.release_id:
            return None
        self._remember([task])
        return task.release_id, task.slot

    def _node_addresses(self) -> dict[str, str]:
        now = time.monotonic()
        if now - self._nodes_read_at > NODES_SECONDS or not self._nodes:
            with contextlib.suppress(docker.errors.APIError):
                self._nodes = {
                    str(node["ID"]): swarm_tasks.node_address(node)
                    for node in self.client.api.nodes()
                }
                self._nodes_read_at = now
        return self._nodes

    def _node_address(self, node_id: str) -> str:
        return self._node_addresses().get(node_id) or "127.0.0.1"

    def _ensure_network(self, app: str) -> str:
        """The app's own overlay network: its tasks reach each other, not other apps'."""
        name = network_name(self.prefix, app)
        # The engine's name filter matches parts of names: ``-app-shop`` finds ``-app-shop2``.
        if any(n.get("Name") == name for n in self.client.api.networks(names=[name])):
            return name
        try:
            self.client.api.create_network(
                name,
                driver="overlay",
                labels={LABEL_PREFIX: self.prefix, LABEL_APP: app},
                check_duplicate=True,
            )
        except docker.errors.APIError as exc:
            if "already exists" not in str(exc):
                raise BootError(
                    f"The app's network could not be created: {exc.explanation or exc}",
                    timed_out=False,
                ) from None
        return name

    def _remove_network(self, app: str) -> None:
        """Once the app's tasks are gone (Swarm frees the network's endpoints after them)."""
        name = network_name(self.prefix, app)

        def remove() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    for network in self.client.api.networks(names=[name]):
                        if network.get("Name") == name:
                            self.client.api.remove_network(network["Id"])
                    return
                except docker.errors.NotFound:
                    return
                except docker.errors.APIError:
                    time.sleep(1)  # still in use by tasks shutting down

        threading.Thread(target=remove, name=f"swarm-network-{app}", daemon=True).start()

    def _remove_service(self, service_id: str) -> None:
        self.logs.forget(service_id)
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_service(service_id)



def _arguments(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A ``ServiceSpec`` as the SDK's ``create_service``/``update_service`` take it."""
    return {
        "task_template": spec["TaskTemplate"],
        "name": spec["Name"],
        "labels": spec.get("Labels"),
        "mode": spec.get("Mode"),
        "update_config": spec.get("UpdateConfig"),
        "rollback_config": spec.get("RollbackConfig"),
        "endpoint_spec": spec.get("EndpointSpec"),
    }


def _swarm(launch: Launch) -> SwarmLaunch:
    if not isinstance(launch, SwarmLaunch):
        raise TypeError(f"not a swarm launch: {launch!r}")
    return launch
