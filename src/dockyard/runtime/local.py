"""LocalRuntime: each process in its own bubblewrap sandbox on this machine.

A process runs as the app's host uid with the release mounted read-only at ``/app``, a
private writable ``/tmp`` (also ``$HOME``), the app's variables and nothing of the
launcher's environment (see ``dockyard.sandbox``). It shares the host's network so the
router can reach ``$PORT`` on loopback; the app can therefore also bind other interfaces,
which a firewall in front of the host has to close (the docker runtime does not share).

Two things bubblewrap does not do for us:

- Signals: SIGTERM to bwrap kills the sandbox with SIGKILL at once (``--die-with-parent``
  and the pid namespace), the app never sees it. A graceful stop therefore signals the
  processes *inside* the sandbox, found by walking the host's process tree.
- Re-attaching: bwrap dies with its parent, so every process dies with the server and
  ``load`` always returns None; the supervisor starts the release again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dockyard import sandbox
from dockyard.errors import BootError, BuildError
from dockyard.runtime.base import (
    APP_DIR,
    ProcessHandle,
    ProcessSpec,
    Runtime,
    launch_argv,
    process_env,
)
from dockyard.runtime.logfile import MAX_LINE_BYTES, LogFile, LogFiles

LOOPBACK = "127.0.0.1"
# Output left in the pipe after the process died is drained for at most this long.
_DRAIN_SECONDS = 5.0


@dataclass(eq=False)
class LocalHandle(ProcessHandle):
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    reader: threading.Thread | None = field(default=None, repr=False)
    log: LogFile | None = field(default=None, repr=False)
    stop_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    stopped: bool = False


class LocalRuntime(Runtime):
    def __init__(self, *, log_files: LogFiles | None = None) -> None:
        self._logs = log_files or LogFiles()
        self._ports_lock = threading.Lock()
        self._ports: set[int] = set()

    def start(self, spec: ProcessSpec) -> ProcessHandle:
        _check_reachable(spec.release_dir, spec.host_uid)
        port = self._reserve_port() if spec.is_web else None
        sandbox_spec = sandbox.SandboxSpec(
            host_uid=spec.host_uid,
            mounts=[sandbox.Mount(spec.release_dir, APP_DIR)],
            env=process_env(spec, port),
            cwd=APP_DIR,
            limits=spec.limits,
            hostname=spec.container[:63],
        )
        log = self._logs.acquire(spec.log_path)
        try:
            proc = sandbox.start(sandbox_spec, launch_argv(spec.command))
        except BuildError as exc:
            self._logs.release(log)
            self._release_port(port)
            raise BootError(
                f"The {spec.name} process could not be started: {exc.message}", timed_out=False
            ) from None
        assert proc.stdout is not None
        reader = threading.Thread(
            target=_copy_lines,
            args=(proc.stdout, log),
            name=f"log {spec.container}",
            daemon=True,
        )
        reader.start()
        return LocalHandle(
            spec=spec,
            host=LOOPBACK,
            port=port,
            state={"runtime": "local", "pid": proc.pid, "port": port},
            proc=proc,
            reader=reader,
            log=log,
        )

    def poll(self, handle: ProcessHandle) -> int | None:
        proc = _local(handle).proc
        assert proc is not None
        return proc.poll()

    def stop(self, handle: ProcessHandle, *, grace: float) -> None:
        local = _local(handle)
        with local.stop_lock:
            if local.stopped:
                return
            proc, reader, log = local.proc, local.reader, local.log
            assert proc is not None and reader is not None and log is not None
            if proc.poll() is None and grace > 0 and signal_inside(proc.pid, signal.SIGTERM):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=grace)
            sandbox.kill(proc)
            # Every writer of the pipe died with the pid namespace: the reader gets EOF.
            reader.join(_DRAIN_SECONDS)
            sandbox.terminate(proc, grace_seconds=0)  # cgroup and pipes
            self._logs.release(log)
            self._release_port(handle.port)
            local.stopped = True

    def load(self, spec: ProcessSpec, state: Mapping[str, Any]) -> ProcessHandle | None:
        # Sandboxes die with the server that launched them (--die-with-parent).
        return None

    def _reserve_port(self) -> int:
        # The kernel hands out a free port; remembering ours avoids giving the same port
        # to two processes that have not bound it yet.
        with self._ports_lock:
            for _ in range(100):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                    probe.bind((LOOPBACK, 0))
                    port: int = probe.getsockname()[1]
                if port not in self._ports:
                    self._ports.add(port)
                    return port
        raise BootError("No free port was found for the web process.", timed_out=False)

    def _release_port(self, port: int | None) -> None:
        with self._ports_lock:
            self._ports.discard(port or 0)


def _local(handle: ProcessHandle) -> LocalHandle:
    if not isinstance(handle, LocalHandle):
        raise TypeError(f"not a local process handle: {handle!r}")
    return handle


def _copy_lines(stream: IO[bytes], log: LogFile) -> None:
    with contextlib.suppress(OSError, ValueError):
        while line := stream.readline(MAX_LINE_BYTES):
            log.write(line)


def _check_reachable(release_dir: Path, uid: int) -> None:
    """bwrap opens the release as the app's uid, so every parent must be searchable by it;
    say so plainly instead of letting bwrap fail with a bare "Permission denied"."""
    path = release_dir.resolve()
    for directory in [*reversed(path.parents), path]:
        try:
            info = directory.stat()
        except OSError:
            raise BootError(
                f"The release directory {path} does not exist.", timed_out=False
            ) from None
        if info.st_uid == uid:
            searchable = info.st_mode & stat.S_IXUSR
        elif info.st_gid == uid:
            searchable = info.st_mode & stat.S_IXGRP
        else:
            searchable = info.st_mode & stat.S_IXOTH
        if not searchable:
            raise BootError(
                f"The release directory {path} cannot be reached by the app's user (uid {uid})"
                f": {directory} is not searchable by it (the releases directory's parents"
                " need mode 0711 or the like).",
                timed_out=False,
            )


def signal_inside(bwrap_pid: int, signum: int) -> bool:
    """Send ``signum`` to every process inside the sandbox, not to bwrap or its pid-1
    helper (a signal to either ends the sandbox with SIGKILL). False if none was found."""
    children = _children_by_parent()
    inner_init = children.get(bwrap_pid, [])
    targets: list[int] = []
    pending = [pid for init in inner_init for pid in children.get(init, [])]
    while pending:
        pid = pending.pop()
        targets.append(pid)
        pending.extend(children.get(pid, []))
    for pid in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
    return bool(targets)


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as file:
                data = file.read()
        except OSError:
            continue  # exited while we looked
        # The command name may contain spaces and parentheses: parse after the last ')'.
        fields = data[data.rindex(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children
