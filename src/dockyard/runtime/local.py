"""LocalRuntime: each process in its own bubblewrap sandbox on this machine.

A process runs as the app's host uid with the release mounted read-only at ``/app``, a
private writable ``/tmp`` (also ``$HOME``), the app's variables and nothing of the
launcher's environment (see ``dockyard.sandbox``), in a memory cgroup of its own.

Network: with ``isolation`` (``dockyard.isolation``), every instance of an app runs in the
app's network namespace and listens on the namespace's address, where the router connects;
instances of one app share it, so each gets a port of its own (from ``FIRST_APP_PORT``).
Without it (sandbox off, not root), processes share the host's network and listen on
loopback ports the kernel picks; nothing then stops an app from reaching the host's
loopback services or another app's port.

Two things bubblewrap does not do for us:

- Signals: SIGTERM to bwrap kills the sandbox with SIGKILL at once (``--die-with-parent``
  and the pid namespace), the app never sees it. A graceful stop therefore signals the
  processes *inside* the sandbox, found by walking the host's process tree.
- Re-attaching: bwrap dies with its parent, so every process dies with the server and
  ``load`` always returns None; the supervisor starts the release again.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
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
from dockyard.isolation.apps import AppIsolation
from dockyard.isolation.network import NetworkSetupError
from dockyard.runtime.base import (
    APP_DIR,
    ProcessHandle,
    ProcessSpec,
    Runtime,
    launch_argv,
    process_env,
)
from dockyard.runtime.logfile import MAX_LINE_BYTES, LogFile, LogFiles
from dockyard.runtime.terminal import controlling, open_terminal

LOOPBACK = "127.0.0.1"
# $PORT of an app's first instance in its namespace (Heroku's habit); the next get 5001...
FIRST_APP_PORT = 5000
PORT_SPREAD = 20_000
_HOST_PORTS = ""  # the port space of processes sharing the host's network
# Output left in the pipe after the process died is drained for at most this long.
_DRAIN_SECONDS = 5.0


@dataclass(eq=False)
class LocalHandle(ProcessHandle):
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    reader: threading.Thread | None = field(default=None, repr=False)
    log: LogFile | None = field(default=None, repr=False)
    stop_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    stopped: bool = False
    port_space: str = _HOST_PORTS  # the network namespace the port belongs to
    killed_for_memory: bool = False  # read from its cgroup when it stopped


class LocalRuntime(Runtime):
    def __init__(
        self, *, log_files: LogFiles | None = None, isolation: AppIsolation | None = None
    ) -> None:
        self._logs = log_files or LogFiles()
        self._isolation = isolation
        self._ports_lock = threading.Lock()
        # Where this server's ports start in an app's namespace. A namespace is the app's
        # alone, but a second server on the host (tests run several) may use the same one
        # for an app of the same uid: starting apart keeps their instances' ports apart.
        self._first_port = FIRST_APP_PORT + secrets.randbelow(PORT_SPREAD)
        self._ports: dict[str, set[int]] = {}

    def start(self, spec: ProcessSpec) -> ProcessHandle:
        _check_reachable(spec.release_dir, spec.host_uid)
        host, netns, port_space = LOOPBACK, None, _HOST_PORTS
        if self._isolation is not None:
            try:
                network = self._isolation.ensure_network(spec.host_uid)
            except NetworkSetupError as exc:
                raise BootError(
                    f"The {spec.name} process could not be started: {exc.message}",
                    timed_out=False,
                ) from None
            host, netns, port_space = str(network.app_address), network.netns_path, network.netns
        port = self._reserve_port(port_space) if spec.is_web else None
        sandbox_spec = sandbox.SandboxSpec(
            host_uid=spec.host_uid,
            mounts=[sandbox.Mount(spec.release_dir, APP_DIR)],
            env=process_env(spec, port),
            cwd=APP_DIR,
            limits=spec.limits,
            hostname=spec.container[:63],
            netns=netns,
        )
        # A one-off attached to a user's terminal writes to it, not to the log.
        tty = open_terminal() if spec.terminal else None
        log = None if tty else self._logs.acquire(spec.log_path)
        argv = launch_argv(spec.command)
        try:
            if tty is None:
                proc = sandbox.start(sandbox_spec, argv)
            else:
                slave = tty.slave
                proc = sandbox.start(
                    sandbox_spec, controlling(argv), stdin=slave, stdout=slave, stderr=slave
                )
        except BuildError as exc:
            if log is not None:
                self._logs.release(log)
            if tty is not None:
                os.close(tty.master)
            self._release_port(port_space, port)
            raise BootError(
                f"The {spec.name} process could not be started: {exc.message}", timed_out=False
            ) from None
        finally:
            if tty is not None:
                os.close(tty.slave)  # the sandbox holds it now: its exit ends the terminal
        reader = None
        if log is not None:
            assert proc.stdout is not None
            reader = threading.Thread(
                target=self._copy_until_exit,
                args=(proc.stdout, log),
                name=f"log {spec.container}",
                daemon=True,
            )
            reader.start()
        return LocalHandle(
            spec=spec,
            host=host,
            port=port,
            state={"runtime": "local", "pid": proc.pid, "host": host, "port": port},
            terminal=None if tty is None else tty.master,
            proc=proc,
            reader=reader,
            log=log,
            port_space=port_space,
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
            assert proc is not None
            if proc.poll() is None and handle.port is not None and local.port_space and log:
                _explain_loopback_listener(proc.pid, handle.port, log)
            if proc.poll() is None and grace > 0 and signal_inside(proc.pid, signal.SIGTERM):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=grace)
            sandbox.kill(proc)
            # Every writer of the pipe died with the pid namespace: the reader gets EOF.
            if reader is not None:
                reader.join(_DRAIN_SECONDS)
            local.killed_for_memory = sandbox.oom_kills(proc) > 0  # before its cgroup goes
            sandbox.terminate(proc, grace_seconds=0)  # cgroup and pipes
            if log is not None:
                self._logs.release(log)
            self._release_port(local.port_space, handle.port)
            local.stopped = True

    def exit_reason(self, handle: ProcessHandle, status: int) -> str:
        local = _local(handle)
        killed = local.killed_for_memory
        if not killed and local.proc is not None:
            with local.stop_lock:
                if not local.stopped:
                    killed = sandbox.oom_kills(local.proc) > 0
        limit = handle.spec.limits.memory_bytes
        if killed and limit:
            return f"was killed: it used more than its {_mebibytes(limit)} memory limit"
        if killed:
            return "was killed for lack of memory"
        return super().exit_reason(handle, status)

    def forget_app(self, host_uid: int) -> None:
        if self._isolation is not None:  # its network namespace and cgroups
            self._isolation.remove_app(host_uid)

    def load(self, spec: ProcessSpec, state: Mapping[str, Any]) -> ProcessHandle | None:
        # Sandboxes die with the server that launched them (--die-with-parent).
        return None

    def _copy_until_exit(self, stream: IO[bytes], log: LogFile) -> None:
        _copy_lines(stream, log)
        # End of output: every process of the sandbox is gone (they die with its pid
        # namespace), so the supervisor need not wait for its next pass to notice.
        self._exited()

    def _reserve_port(self, port_space: str) -> int:
        with self._ports_lock:
            taken = self._ports.setdefault(port_space, set())
            if port_space != _HOST_PORTS:
                # The app's namespace holds its own instances only: the first port not
                # given to one of them is free.
                port = next(port for port in itertools.count(self._first_port) if port not in taken)
                taken.add(port)
                return port
            # On the host the kernel hands out a free port; remembering ours avoids giving
            # the same port to two processes that have not bound it yet.
            for _ in range(100):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                    probe.bind((LOOPBACK, 0))
                    port = probe.getsockname()[1]
                if port not in taken:
                    taken.add(port)
                    return port
        raise BootError("No free port was found for the web process.", timed_out=False)

    def _release_port(self, port_space: str, port: int | None) -> None:
        with self._ports_lock:
            self._ports.get(port_space, set()).discard(port or 0)


def _local(handle: ProcessHandle) -> LocalHandle:
    if not isinstance(handle, LocalHandle):
        raise TypeError(f"not a local process handle: {handle!r}")
    return handle


def _mebibytes(size: int) -> str:
    return f"{size / 1024**3:g} GiB" if size % 1024**3 == 0 else f"{size // 1024**2} MiB"


def _explain_loopback_listener(pid: int, port: int, log: LogFile) -> None:
    """Say in the process's log when it listens on $PORT on loopback only: in its own
    namespace, 127.0.0.1 is its alone and the router cannot connect (the boot check then
    times out without a word from the app)."""
    listening = _listeners(Path(f"/proc/{pid}/net/tcp"), port) | _listeners(
        Path(f"/proc/{pid}/net/tcp6"), port
    )
    if listening and listening <= {"loopback"}:
        log.write(
            f"dockyard: the app listens on 127.0.0.1:{port} ($PORT), which only the app "
            "itself can reach: listen on 0.0.0.0:$PORT so that the router can connect"
        )


_IPV6_LOOPBACK = "00000000000000000000000001000000"


def _listeners(table: Path, port: int) -> set[str]:
    """``loopback`` and/or ``other`` for the sockets listening on ``port`` in a
    /proc/PID/net/tcp{,6} table (the network namespace of that process)."""
    found: set[str] = set()
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[3] != "0A":  # 0A: LISTEN
            continue
        address, _, hex_port = fields[1].partition(":")
        if int(hex_port, 16) != port:
            continue
        # Addresses are in the kernel's byte order: 127.0.0.1 is 0100007F, ::1 ends in 01000000.
        loopback = address[6:] == "7F" if len(address) == 8 else address == _IPV6_LOOPBACK
        found.add("loopback" if loopback else "other")
    return found


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
