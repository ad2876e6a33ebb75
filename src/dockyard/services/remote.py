"""The apps' processes as an API process sees them when workers run them (``dockyard
api`` beside ``dockyard worker``): each question or order about an app is a call on the
bus to the worker that runs it (its route's owner, services/routing.py), answered by
that worker's supervisor.

    api ── {"type": "call", "id", "owner", "app", "method", "args"} ──► RUNTIME_CHANNEL
    worker (owner) runs it in a thread ── {"type": "reply", "id", "result" | "error"} ──►

No app variable travels on the bus: a call that needs them says so (``with_env``) and
the worker reads them from the database. An app no worker runs (never deployed) answers
as the supervisor does for it: status ``new``, no instances, nothing to stop. One-off
commands are calls too (services/remote_oneoffs.py).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dockyard.backends.eventbus.base import Event, EventBus
from dockyard.db.engine import transaction
from dockyard.db.models import RouteRow
from dockyard.domain.formation import Formation, Scale
from dockyard.errors import Conflict, DockyardError
from dockyard.routetable import Backend
from dockyard.runtime.base import AppProcesses, Instance

log = logging.getLogger(__name__)

# A worker's answer to a call about one-offs: (app, method, args) -> result.
OneOffCalls = Callable[[str, str, dict[str, Any]], Any]
ONE_OFF_CALLS = "one-off."

RUNTIME_CHANNEL = "runtime"
CALL_TIMEOUT_SECONDS = 15.0
# What a worker sends back of an app's log at most; a follower asks again for the rest.
MAX_LOG_LINES = 2000
FOLLOW_LINES = 200


class RemoteProcesses:
    """``AppProcesses`` over the bus, for a process that runs no apps itself."""

    def __init__(
        self, db: sessionmaker[Session], bus: EventBus, *, timeout: float = CALL_TIMEOUT_SECONDS
    ) -> None:
        self.db = db
        self.bus = bus
        self.timeout = timeout
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[threading.Event, list[Event]]] = {}
        bus.observe(self._observe)

    def _observe(self, channel: str, events: Sequence[Event]) -> None:
        if channel != RUNTIME_CHANNEL:
            return
        for event in events:
            if event.get("type") != "reply":
                continue
            with self._lock:
                waiting = self._pending.get(str(event.get("id")))
            if waiting is not None:
                waiting[1].append(event)
                waiting[0].set()

    def _owner(self, app: str) -> str | None:
        with transaction(self.db) as session:
            return session.scalar(select(RouteRow.owner).where(RouteRow.app == app))

    def call(self, app: str, method: str, default: Any, **args: Any) -> Any:
        """The answer of the app's worker to ``method(**args)``; ``default`` for an app no
        worker runs, unless it is a ``NeverDeployed``: then its ``Conflict``."""
        owner = self._owner(app)
        if owner is None:
            if isinstance(default, NeverDeployed):
                raise Conflict(f"The app {app} has never been deployed: {default.consequence}.")
            return default
        call_id = uuid.uuid4().hex
        answered, replies = threading.Event(), list[Event]()
        with self._lock:
            self._pending[call_id] = (answered, replies)
        try:
            self.bus.publish(
                RUNTIME_CHANNEL,
                {"type": "call", "id": call_id, "owner": owner, "app": app, "method": method,
                 "args": args},
            )
            if not answered.wait(self.timeout):
                raise Conflict(
                    f"The worker {owner!r} that runs {app} did not answer within "
                    f"{self.timeout:g} s: check that it is running (dockyard worker)."
                )
        finally:
            with self._lock:
                self._pending.pop(call_id, None)
        reply = replies[0]
        if "error" in reply:
            raise Conflict(str(reply["error"]))
        return reply.get("result")

    def stop_app(self, app: str) -> None:
        self.call(app, "stop_app", _NEVER_DEPLOYED)

    def start_app(self, app: str) -> None:
        self.call(app, "start_app", _NEVER_DEPLOYED)

    def restart_app(
        self, app: str, scope: Iterable[str] = (), env: Mapping[str, str] | None = None
    ) -> list[str]:
        result = self.call(
            app, "restart_app", _NEVER_DEPLOYED, scope=list(scope), with_env=env is not None
        )
        return [str(name) for name in result or []]

    def scale(self, app: str, formation: Formation, env: Mapping[str, str] | None = None) -> None:
        encoded = {name: [scale.amount, scale.size] for name, scale in formation.items()}
        self.call(app, "scale", None, formation=encoded, with_env=env is not None)

    def observe(self, app: str) -> list[Instance]:
        return [decode_instance(raw) for raw in self.call(app, "observe", []) or []]

    def converged(self, app: str) -> bool:
        return bool(self.call(app, "converged", True))

    def remove_app(self, app: str) -> None:
        # Deleting an app tells its worker through the route's removal (routing.forget_app).
        pass

    def rename_app(self, old: str, new: str) -> None:
        self.call(old, "rename_app", None, new=new)

    def status(self, app: str) -> str:
        """From the route the worker keeps, without a call: listings ask it of every app."""
        with transaction(self.db) as session:
            row = session.execute(
                select(RouteRow.backends, RouteRow.status).where(RouteRow.app == app)
            ).first()
        if row is None:
            return "new"
        if row.backends:
            return "running"
        return row.status if row.status in ("stopped", "crashed") else "running"

    def app_logs(
        self, app: str, *, lines: int, only: Callable[[str], bool] | None = None
    ) -> list[str]:
        # The filter is applied here (it is code, not data): the worker sends its most
        # recent lines, and the last ``lines`` that pass are kept.
        wanted = lines if only is None else MAX_LOG_LINES
        recent = [str(line) for line in self.call(app, "app_logs", [], lines=min(wanted, MAX_LOG_LINES))]
        if only is not None:
            recent = [line for line in recent if only(_process_of(line))]
        return recent[-lines:] if lines else []

    def follow_logs(
        self,
        app: str,
        *,
        stop: threading.Event,
        lines: int = 0,
        interval: float = 0.2,
        only: Callable[[str], bool] | None = None,
    ) -> Iterator[str]:
        """The last ``lines`` lines, then each new one, asked for every second."""
        seen = self.app_logs(app, lines=FOLLOW_LINES, only=only)
        yield from seen[-lines:] if lines else []
        while not stop.wait(max(interval, 1.0)):
            try:
                recent = self.app_logs(app, lines=FOLLOW_LINES, only=only)
            except DockyardError as exc:
                log.warning("following the logs of %s: %s", app, exc.message)
                continue
            fresh = _after(seen, recent)
            seen = recent
            yield from fresh


@dataclass(frozen=True)
class NeverDeployed:
    """A call's ``default`` that refuses, for an app no worker runs, with what that means."""

    consequence: str


_NEVER_DEPLOYED = NeverDeployed("there is nothing to start")


def _after(seen: list[str], recent: list[str]) -> list[str]:
    """The lines of ``recent`` written after the last line of ``seen`` (lines carry their
    timestamp, so the last one seen is found again unless it scrolled out: then all)."""
    if not seen:
        return recent
    last = seen[-1]
    for index in range(len(recent) - 1, -1, -1):
        if recent[index] == last:
            return recent[index + 1 :]
    return recent


def _process_of(line: str) -> str:
    """The process name of a log line in the wire format (``TIME [name] text``)."""
    start = line.find("[")
    end = line.find("]", start + 1)
    return line[start + 1 : end] if start >= 0 and end > start else ""


def decode_instance(raw: Mapping[str, Any]) -> Instance:
    endpoint = raw.get("endpoint")
    backend = None
    if isinstance(endpoint, str) and ":" in endpoint:
        host, _, port = endpoint.rpartition(":")
        backend = Backend(host, int(port))
    return Instance(
        name=str(raw["name"]),
        process_type=str(raw["process_type"]),
        index=int(raw["index"]),
        command=str(raw["command"]),
        size=str(raw["size"]),
        state=str(raw["state"]),
        release_id=str(raw["release_id"]),
        started_at=None if raw.get("started_at") is None else float(raw["started_at"]),
        endpoint=backend,
    )


def encode_instance(instance: Instance) -> dict[str, Any]:
    endpoint = instance.endpoint
    return {
        "name": instance.name,
        "process_type": instance.process_type,
        "index": instance.index,
        "command": instance.command,
        "size": instance.size,
        "state": instance.state,
        "release_id": instance.release_id,
        "started_at": instance.started_at,
        "endpoint": None if endpoint is None else f"{endpoint.host}:{endpoint.port}",
    }


def answer_calls(
    *,
    bus: EventBus,
    owner: str,
    processes: AppProcesses,
    env_for: Callable[[str], Mapping[str, str]],
    take_over: Callable[[str], None],
    one_offs: OneOffCalls | None = None,
) -> None:
    """In a worker: run the calls addressed to ``owner`` on its supervisor, each in a
    thread of its own (the bus's thread must not wait), and send the answers back.
    ``take_over(name)`` makes the route of a renamed app this worker's under its new name;
    ``one_offs(app, method, args)`` answers the calls about one-offs (``one-off.*``,
    services/remote_oneoffs.py)."""
    # A networked bus delivers a process's own publications twice (at once, and back
    # through LISTEN): each call is answered once. Ids are random; ten minutes of them.
    answered: dict[str, float] = {}
    answered_lock = threading.Lock()

    def first_time(call_id: str) -> bool:
        now = time.monotonic()
        with answered_lock:
            if call_id in answered:
                return False
            answered[call_id] = now
            for old in [key for key, at in answered.items() if now - at > 600]:
                del answered[old]
        return True

    def run(call: Event) -> None:
        app, args = str(call.get("app")), dict(call.get("args") or {})
        reply: Event = {"type": "reply", "id": call.get("id")}
        try:
            method = str(call.get("method"))
            if method == "rename_app":  # before the supervisor writes the new route
                take_over(str(args["new"]))
            reply["result"] = _answer(processes, env_for, one_offs, app, method, args)
        except DockyardError as exc:
            reply["error"] = exc.message
        except Exception:
            log.exception("the call %s on app %s failed", call.get("method"), app)
            reply["error"] = "The worker hit an internal error; its log has the details."
        bus.publish(RUNTIME_CHANNEL, reply)

    def observe(channel: str, events: Sequence[Event]) -> None:
        if channel != RUNTIME_CHANNEL:
            return
        for event in events:
            if (
                event.get("type") == "call"
                and event.get("owner") == owner
                and first_time(str(event.get("id")))
            ):
                threading.Thread(
                    target=run, args=(event,), name="dockyard-runtime-call", daemon=True
                ).start()

    bus.observe(observe)


def _answer(
    processes: AppProcesses,
    env_for: Callable[[str], Mapping[str, str]],
    one_offs: OneOffCalls | None,
    app: str,
    method: str,
    args: dict[str, Any],
) -> Any:
    if method.startswith(ONE_OFF_CALLS) and one_offs is not None:
        return one_offs(app, method, args)
    return _dispatch(processes, env_for, app, method, args)


def _dispatch(
    processes: AppProcesses,
    env_for: Callable[[str], Mapping[str, str]],
    app: str,
    method: str,
    args: dict[str, Any],
) -> Any:
    env = env_for(app) if args.get("with_env") else None
    if method == "stop_app":
        return processes.stop_app(app)
    if method == "start_app":
        return processes.start_app(app)
    if method == "restart_app":
        return processes.restart_app(app, [str(s) for s in args.get("scope", [])], env)
    if method == "scale":
        formation = {
            str(name): Scale(int(amount), str(size))
            for name, (amount, size) in dict(args.get("formation") or {}).items()
        }
        return processes.scale(app, formation, env)
    if method == "observe":
        return [encode_instance(instance) for instance in processes.observe(app)]
    if method == "converged":
        return processes.converged(app)
    if method == "rename_app":
        return processes.rename_app(app, str(args["new"]))
    if method == "app_logs":
        return processes.app_logs(app, lines=min(int(args.get("lines", 0)), MAX_LOG_LINES))
    raise Conflict(f"The worker does not know the call {method!r}: is it of an older version?")
