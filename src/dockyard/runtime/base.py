"""The runtime interface: how one process of a release is started, watched and stopped.

Shaped like jupyterhub's ``Spawner``: ``start`` returns where the process listens,
``poll`` says whether it still runs, ``stop`` ends it, and ``ProcessHandle.state`` is a
JSON-able dict the caller persists so that ``load`` can re-attach after a server restart.
A runtime knows nothing of releases, routing or restarts: that is the supervisor's job.
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dockyard import sandbox
from dockyard.domain.formation import Formation, Scale
from dockyard.routetable import Backend

APP_DIR = "/app"
# The release is mounted read-only (a per-process copy is too slow to start), so HOME and
# anything the app writes live in the sandbox's private /tmp.
DEFAULT_HOME = "/tmp"  # noqa: S108 - the sandbox's own private tmpfs, not the host's /tmp
DEFAULT_PATH = "/app/bin:/usr/local/bin:/usr/bin:/bin"
# Names that become path components and container names: no separators, no dot-files.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PROFILE_LOOP = 'for f in /app/.profile.d/*.sh; do if [ -f "$f" ]; then . "$f"; fi; done; unset f; '


def check_name(kind: str, value: str) -> str:
    """Refuse a name that would not be a safe single path component."""
    if not _SAFE_NAME.match(value) or ".." in value:
        raise ValueError(f"unsafe {kind} {value!r}")
    return value


@dataclass(frozen=True)
class ProcessSpec:
    """Everything needed to start one process of a release."""

    app: str
    release_id: str
    process_type: str
    index: int  # 1-based, as in Scalingo's container names
    command: str  # a shell string from the Procfile, run inside the sandbox only
    # The app's variables; hidden from repr because they are often secrets.
    env: Mapping[str, str] = field(repr=False)
    release_dir: Path
    host_uid: int
    limits: sandbox.Limits
    log_path: Path  # host path where stdout and stderr are appended (see logfile.py)
    size: str = "M"  # the formation's size name, whose memory limit ``limits`` holds
    # A one-off attached to a user's terminal: its stdin, stdout and stderr are a fresh
    # pseudo-terminal (``ProcessHandle.terminal``) instead of the log file.
    terminal: bool = False

    @property
    def name(self) -> str:
        """``web-1``: how the process is named in logs."""
        return f"{self.process_type}-{self.index}"

    @property
    def container(self) -> str:
        """``myapp-web-1``: the process's name, also given to it as ``$CONTAINER``."""
        return f"{self.app}-{self.name}"

    @property
    def is_web(self) -> bool:
        return self.process_type == "web"


@dataclass(eq=False)
class ProcessHandle:
    """A started process. ``port`` is None for non-web processes; ``state`` is JSON-able."""

    spec: ProcessSpec
    host: str
    port: int | None
    state: dict[str, Any]
    # The pseudo-terminal's master side when ``spec.terminal``; the caller reads and
    # writes it, and closes it once done (``stop`` does not).
    terminal: int | None = None


def process_env(spec: ProcessSpec, port: int | None) -> dict[str, str]:
    """The environment a process starts with: defaults, then the app's variables, then
    what the platform decides (``PORT``, ``CONTAINER``), which the app cannot override."""
    env = {
        "HOME": DEFAULT_HOME,
        "PATH": DEFAULT_PATH,
        "LANG": "C.UTF-8",
        # Output goes to a pipe; unbuffered Python output reaches the logs as it is written.
        "PYTHONUNBUFFERED": "1",
    }
    env.update(spec.env)
    env["CONTAINER"] = spec.container
    env.pop("PORT", None)
    if port is not None:
        env["PORT"] = str(port)
    return env


def launch_argv(command: str) -> list[str]:
    """Heroku's launcher: source ``/app/.profile.d/*.sh``, then run the command as a shell
    string, as Procfiles expect (``FOO=1 python app.py`` is a valid command). The inner
    bash execs a single simple command itself, so the app (not a shell) receives SIGTERM.
    The command is the app owner's and only ever runs inside the sandbox; it is passed as
    an argument, never spliced into the launcher's own script."""
    return [
        "/bin/bash",
        "-c",
        _PROFILE_LOOP + 'exec /bin/bash -c "$1"',
        "dockyard-launcher",
        command,
    ]


class Runtime(ABC):
    """Starts, watches and stops single processes. Implementations are thread-safe."""

    # Called (from any thread) when a started process may have exited, so whoever polls
    # looks now instead of at its next pass. Runtimes that cannot tell never call it.
    exit_listener: Callable[[], None] | None = None

    def _exited(self) -> None:
        listener = self.exit_listener
        if listener is not None:
            listener()

    @abstractmethod
    def start(self, spec: ProcessSpec) -> ProcessHandle:
        """Start the process and return at once (booting is checked by the caller).

        A web process gets a free ``$PORT`` chosen by the runtime. Raises ``BootError``
        when the process cannot be started at all (no sandbox, unreachable release)."""

    @abstractmethod
    def poll(self, handle: ProcessHandle) -> int | None:
        """None while the process runs, else its exit status."""

    @abstractmethod
    def stop(self, handle: ProcessHandle, *, grace: float) -> None:
        """SIGTERM, up to ``grace`` seconds, then SIGKILL; releases everything the process
        held. Idempotent, and also the way to clean up after a process that exited."""

    def exit_reason(self, handle: ProcessHandle, status: int) -> str:
        """Why a process that exited with ``status`` ended, in words that follow its name
        (``web-1 exited with status 3``). A runtime that can tell more says so: "was
        killed: it used more than its 512 MiB memory limit"."""
        return f"exited with status {status}"

    def forget_app(self, host_uid: int) -> None:  # noqa: B027 - most runtimes hold nothing more
        """Release what the runtime holds for an app beyond its processes (its network
        namespace and cgroups on the local runtime), once none of them runs any more."""

    @abstractmethod
    def load(self, spec: ProcessSpec, state: Mapping[str, Any]) -> ProcessHandle | None:
        """Re-attach to a process started by an earlier server from its persisted
        ``state``; None when it is no longer running (the caller starts it again).

        ``spec`` is rebuilt by the caller because ``state`` never holds the app's
        variables: they stay in the database once, not copied into runtime state."""


@dataclass(frozen=True)
class Instance:
    """What ``observe`` reports of one instance."""

    name: str  # web-2
    process_type: str
    index: int
    command: str
    size: str
    state: str  # starting, running, crashed, stopped
    release_id: str
    started_at: float | None  # a Unix time; None when not running
    endpoint: Backend | None  # web instances that accept connections


class ReleaseArtifacts(Protocol):
    """What a runtime that runs images needs made of a release at the ``pushing`` step
    (the docker runtime's ``ReleaseImages``); the local runtime runs the directory itself."""

    def publish(
        self,
        *,
        app: str,
        release_id: str,
        release_dir: Path,
        process_types: Mapping[str, str],
        dependencies: Sequence[str] = (),
    ) -> int:
        """Make and store the release's artifact; its size in bytes. ``dependencies`` are
        the release's directories its buildpacks keep from build to build (``keep``):
        unchanged since an earlier release, they need not be stored again."""
        ...

    def remove(self, *, app: str, release_id: str) -> None: ...


class AppProcesses(Protocol):
    """What the services ask of the apps' running processes, whichever runtime runs them
    (``dockyard.runtime.supervisor.Supervisor`` over the local and docker runtimes,
    ``dockyard.runtime.swarm.apps.SwarmApps`` on Docker Swarm)."""

    def stop_app(self, app: str) -> None: ...
    def start_app(self, app: str) -> None: ...
    def restart_app(
        self, app: str, scope: Iterable[str] = (), env: Mapping[str, str] | None = None
    ) -> list[str]: ...
    def scale(
        self, app: str, formation: Formation, env: Mapping[str, str] | None = None
    ) -> None: ...
    def observe(self, app: str) -> list[Instance]: ...
    def converged(self, app: str) -> bool: ...
    def remove_app(self, app: str) -> None: ...
    def rename_app(self, old: str, new: str) -> None: ...
    def status(self, app: str) -> str: ...
    def app_logs(
        self, app: str, *, lines: int, only: Callable[[str], bool] | None = None
    ) -> list[str]: ...
    def follow_logs(
        self,
        app: str,
        *,
        stop: threading.Event,
        lines: int = 0,
        interval: float = 0.2,
        only: Callable[[str], bool] | None = None,
    ) -> Iterator[str]: ...


@dataclass
class Launch:
    """A release whose instances were started and are booting, not yet serving."""

    app: str
    release_id: str
    release_dir: Path
    process_types: dict[str, str]
    formation: dict[str, Scale]
    env: dict[str, str] = field(repr=False)
    started: list[ProcessHandle] = field(default_factory=list)


class AppRuntime(AppProcesses, Protocol):
    """What runs apps for a server: the services' ``AppProcesses``, plus the deployment's
    steps (``launch`` a release beside the current one, then ``complete`` the switch or
    ``abandon`` it) and the server's own life (``restore``, ``run``, ``shutdown``).

    The ``Supervisor`` reconciles instances itself; ``SwarmApps`` lets Swarm do it."""

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
    ) -> Launch: ...
    def complete(
        self,
        launch: Launch,
        *,
        log: Callable[[str], None],
        cancelled: Callable[[], bool] = ...,
    ) -> None: ...
    def abandon(
        self, launch: Launch, *, log: Callable[[str], None], explain: bool = True
    ) -> None: ...
    def retiring_releases(self, app: str) -> set[str]: ...
    def wait_release_stopped(self, app: str, release_id: str, timeout: float) -> bool: ...
    def restore(self, env_for: Callable[[str], Mapping[str, str]]) -> None: ...
    def run(self, stop_event: threading.Event) -> None: ...
    def shutdown(self) -> None: ...
    def on_remove(self, listener: Callable[[str], None]) -> None: ...
    def hand_over(self, app: str) -> None: ...
