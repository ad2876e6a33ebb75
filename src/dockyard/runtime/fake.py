"""FakeRuntime: processes that are only sockets, for 10 ms tests of everything above the
runtime (the boot check, the supervisor, deployments).

A fake web process really listens on a loopback port once it "binds", so the boot check
runs unchanged against it. How a process behaves is chosen per command with
``Behaviour`` values, like jupyterhub's ``SlowSpawner``/``NeverSpawner``/``BadSpawner``:

    runtime = FakeRuntime(default=BOOTS)
    runtime.behaviours["python crash.py"] = EXITS_AT_BOOT
    runtime.behaviours["python slow.py"] = slow_to_bind(0.05)

Processes live in the ``FakeRuntime`` object, not with a server: sharing one between two
supervisors models a server restart with processes that survived it (``load`` works).
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dockyard.errors import BootError
from dockyard.runtime.base import ProcessHandle, ProcessSpec, Runtime, process_env
from dockyard.runtime.logfile import LogFile


@dataclass(frozen=True)
class Behaviour:
    bind_after: float | None = 0.0  # seconds until a web process listens; None: never
    exit_after: float | None = None  # seconds until it exits on its own; None: never
    exit_status: int = 1
    fails_to_start: bool = False  # start() raises BootError, like a missing sandbox
    output: tuple[str, ...] = ()  # lines written to the log at start


BOOTS = Behaviour()
NEVER_BINDS = Behaviour(bind_after=None)
EXITS_AT_BOOT = Behaviour(
    bind_after=None, exit_after=0.0, exit_status=1, output=("Error: something is missing",)
)
FAILS_TO_START = Behaviour(fails_to_start=True)


def slow_to_bind(seconds: float) -> Behaviour:
    return Behaviour(bind_after=seconds)


@dataclass(eq=False)
class _FakeProcess:
    id: int
    spec: ProcessSpec
    behaviour: Behaviour
    started: float
    env: dict[str, str]
    listener: socket.socket | None = None
    status: int | None = None
    timer: threading.Timer | None = field(default=None, repr=False)


class FakeRuntime(Runtime):
    def __init__(self, *, default: Behaviour = BOOTS) -> None:
        self.default = default
        self.behaviours: dict[str, Behaviour] = {}
        # ("start" | "stop", container, release_id), in order; tests may append their own.
        self.events: list[tuple[str, str, str]] = []
        self.stop_graces: list[float] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._processes: dict[int, _FakeProcess] = {}

    # -- Runtime ------------------------------------------------------------------------

    def start(self, spec: ProcessSpec) -> ProcessHandle:
        behaviour = self.behaviours.get(spec.command, self.default)
        if behaviour.fails_to_start:
            raise BootError(f"The {spec.name} process could not be started.", timed_out=False)
        port = _free_port() if spec.is_web else None
        log = LogFile(spec.log_path)
        try:
            for line in behaviour.output:
                log.write(line)
        finally:
            log.close()
        with self._lock:
            process = _FakeProcess(
                next(self._ids), spec, behaviour, time.monotonic(), process_env(spec, port)
            )
            self._processes[process.id] = process
            self.events.append(("start", spec.container, spec.release_id))
        if port is not None and behaviour.bind_after is not None:
            process.timer = threading.Timer(behaviour.bind_after, self._bind, (process, port))
            process.timer.daemon = True
            process.timer.start()
        return ProcessHandle(spec, "127.0.0.1", port, {"runtime": "fake", "id": process.id})

    def poll(self, handle: ProcessHandle) -> int | None:
        process = self._process(handle)
        with self._lock:
            exit_after = process.behaviour.exit_after
            due = exit_after is not None and time.monotonic() - process.started >= exit_after
            if process.status is None and due:
                self._end(process, process.behaviour.exit_status)
            return process.status

    def stop(self, handle: ProcessHandle, *, grace: float) -> None:
        process = self._process(handle)
        with self._lock:
            self.events.append(("stop", handle.spec.container, handle.spec.release_id))
            self.stop_graces.append(grace)
            if process.status is None:
                self._end(process, -15)

    def load(self, spec: ProcessSpec, state: Mapping[str, Any]) -> ProcessHandle | None:
        with self._lock:
            process = self._processes.get(int(state.get("id", 0)))
            if process is None or process.status is not None:
                return None
            port = process.listener.getsockname()[1] if process.listener else None
        return ProcessHandle(spec, "127.0.0.1", port, dict(state))

    # -- test controls ------------------------------------------------------------------

    def crash(self, handle: ProcessHandle, status: int = 137) -> None:
        """Make a running process exit, as if killed or crashed."""
        process = self._process(handle)
        with self._lock:
            if process.status is None:
                self._end(process, status)

    def env_of(self, handle: ProcessHandle) -> dict[str, str]:
        return dict(self._process(handle).env)

    def running(self) -> list[ProcessSpec]:
        with self._lock:
            return [p.spec for p in self._processes.values() if p.status is None]

    def kill_all(self) -> None:
        """Everything dies, as local processes do with their server."""
        with self._lock:
            for process in self._processes.values():
                if process.status is None:
                    self._end(process, -9)

    # -- internals ----------------------------------------------------------------------

    def _process(self, handle: ProcessHandle) -> _FakeProcess:
        with self._lock:
            return self._processes[int(handle.state["id"])]

    def _bind(self, process: _FakeProcess, port: int) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with self._lock:
            if process.status is not None:
                listener.close()
                return
            listener.bind(("127.0.0.1", port))
            listener.listen(16)  # the kernel completes handshakes: nobody needs to accept
            process.listener = listener

    def _end(self, process: _FakeProcess, status: int) -> None:
        process.status = status
        if process.timer is not None:
            process.timer.cancel()
        if process.listener is not None:
            process.listener.close()
            process.listener = None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
