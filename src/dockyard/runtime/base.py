"""The runtime interface: how one process of a release is started, watched and stopped.

Shaped like jupyterhub's ``Spawner``: ``start`` returns where the process listens,
``poll`` says whether it still runs, ``stop`` ends it, and ``ProcessHandle.state`` is a
JSON-able dict the caller persists so that ``load`` can re-attach after a server restart.
A runtime knows nothing of releases, routing or restarts: that is the supervisor's job.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard import sandbox

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

    @abstractmethod
    def load(self, spec: ProcessSpec, state: Mapping[str, Any]) -> ProcessHandle | None:
        """Re-attach to a process started by an earlier server from its persisted
        ``state``; None when it is no longer running (the caller starts it again).

        ``spec`` is rebuilt by the caller because ``state`` never holds the app's
        variables: they stay in the database once, not copied into runtime state."""
