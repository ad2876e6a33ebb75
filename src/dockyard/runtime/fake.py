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

It passes the same contract suite as the real runtimes (tests/contract/
test_runtime_contract.py), where ``Behaviour`` is also how the real ones are told what
their test app does: what a fake process does, a real one does too.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dockyard.errors import BootError
from dockyard.runtime.base import ProcessHandle, ProcessSpec, Runtime, process_env
from dockyard.runtime.logfile import LogFile

# Exit statuses as a runtime reports them (a shell's convention: 128 + the signal).
KILLED = 128 + 9
TERMINATED = 128 + 15


@dataclass(frozen=True)
class Behaviour:
    bind_after: float | None = 0.0  # seconds until a web process listens; None: never
    exit_after: float | None = None  # seconds until it exits on its own; None: never
    exit_status: int = 1
    fails_to_start: bool = False  # start() raises BootError, like a missing sandbox
    output: tuple[str, ...] = ()  # lines written to the log at start
    echo_env: tuple[str, ...] = ()  # then ``NAME=value`` for each of these variables
    # On SIGTERM: die of it (TERMINATED), exit cleanly (0), or ignore it (killed after
    # the stop's grace period).
    on_sigterm: Literal["dies", "exits", "ignores"] = "dies"


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
    socket_: socket.socket | None = None  # bound from the start; listening once it "binds"
    status: int | None = None
    killed_for_memory: bool = False
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
        # The port is held from the start (bound, not yet listening, so connections are
        # refused until the process "binds"): a port only probed free and bound later
        # can meanwhile become some connection's local port, and the bind then fails.
        socket_ = _bound_socket() if spec.is_web else None
        port = socket_.getsockname()[1] if socket_ is not None else None
        env = process_env(spec, port)
        log = LogFile(spec.log_path)
        try:
            for line in behaviour.output:
                log.write(line)
            for name in behaviour.echo_env:
                log.write(f"{name}={env.get(name, '')}")
        finally:
            log.close()
        with self._lock:
            process = _FakeProcess(
                next(self._ids), spec, behaviour, time.monotonic(), env, socket_=socket_
            )
            self._processes[process.id] = process
            self.events.append(("start", spec.container, spec.release_id))
        if socket_ is not None and behaviour.bind_after is not None:
            process.timer = threading.Timer(behaviour.bind_after, self._listen, (process,))
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
            running = process.status is None
            on_sigterm = process.behaviour.on_sigterm
        if running and grace > 0 and on_sigterm == "ignores":
            time.sleep(grace)  # a real runtime waits out the grace period too
        with self._lock:
            if process.status is None:
                if grace <= 0 or on_sigterm == "ignores":
                    self._end(process, KILLED)
                else:
                    self._end(process, 0 if on_sigterm == "exits" else TERMINATED)

    def exit_reason(self, handle: ProcessHandle, status: int) -> str:
        if self._process(handle).killed_for_memory:
            return "was killed: it used more than its memory limit"
        return super().exit_reason(handle, status)

    def load(self, spec: ProcessSpec, state: Mapping[str, Any]) -> ProcessHandle | None:
        with self._lock:
            process = self._processes.get(int(state.get("id", 0)))
            if process is None or process.status is not None:
                return None
            port = process.socket_.getsockname()[1] if process.socket_ else None
        return ProcessHandle(spec, "127.0.0.1", port, dict(state))

    # -- test controls ------------------------------------------------------------------

    def crash(
        self, handle: ProcessHandle, status: int = KILLED, *, out_of_memory: bool = False
    ) -> None:
        """Make a running process exit, as if killed (for memory, too) or crashed."""
        process = self._process(handle)
        with self._lock:
            if process.status is None:
                process.killed_for_memory = out_of_memory
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

    def _listen(self, process: _FakeProcess) -> None:
        with self._lock:
            if process.status is None and process.socket_ is not None:
                process.socket_.listen(16)  # the kernel completes handshakes: nobody accepts

    def _end(self, process: _FakeProcess, status: int) -> None:
        process.status = status
        self._exited()
        if process.timer is not None:
            process.timer.cancel()
        if process.socket_ is not None:
            process.socket_.close()
            process.socket_ = None


def _bound_socket() -> socket.socket:
    bound = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        bound.bind(("127.0.0.1", 0))
    except OSError:
        bound.close()
        raise
    return bound
