"""The bubblewrap sandbox that every build and every app process runs in.

This module is a security boundary. A sandboxed process:

- runs as an unprivileged host uid (never root), in new user, pid, ipc, uts and mount
  namespaces, with no capabilities, in a new session, dying with its launcher;
- sees the read-only system (/usr, /etc, the CA bundle, pip's configuration), a private
  /tmp, /proc of its own pid namespace, and only the directories its spec mounts;
- starts from a scrubbed environment: bwrap itself is launched with exactly the spec's
  variables as its environment, which it passes on (``--clearenv`` alone would leave the
  launcher's environment readable in ``/proc/1/environ``, and ``--setenv NAME VALUE``
  would show every value on the host's process list);
- is limited in processes, file size and (where cgroups are writable) memory, in a cgroup
  of its own (``dockyard.isolation.cgroups``);
- with ``netns``, is in that network namespace (an app's, ``dockyard.isolation``): the
  launcher enters it before bwrap, which cannot join one itself.

When the pid namespace's init exits, the kernel kills every process left in it, so
nothing started by a build (``setsid nohup … &`` included) outlives it.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dockyard.errors import BuildError
from dockyard.isolation.cgroups import SandboxCgroup

# Read-only system paths every sandbox sees. /etc carries the CA bundle and pip's
# system configuration, which builds need to reach the package index through its proxy.
SYSTEM_RO_BINDS: tuple[str, ...] = ("/usr", "/etc")
SYSTEM_RO_BINDS_IF_PRESENT: tuple[str, ...] = ("/opt/wheels", "/opt/pypi", "/opt/pypi-more")
SYSTEM_SYMLINKS: tuple[tuple[str, str], ...] = (
    ("usr/lib", "/lib"),
    ("usr/lib64", "/lib64"),
    ("usr/bin", "/bin"),
    ("usr/sbin", "/sbin"),
)
SANDBOX_INSIDE_UID = 1000
NAMESPACE_TEARDOWN_SECONDS = 5.0
# Covers the launcher's exec chain (sh, prlimit, setpriv: 5-20 ms) and bwrap's own fork.
NAMESPACE_INIT_LOOKUP_SECONDS = 0.25


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    writable: bool = False


@dataclass(frozen=True)
class Limits:
    max_processes: int = 256
    max_file_bytes: int = 2 * 1024**3
    memory_bytes: int | None = 2 * 1024**3
    open_files: int = 4096


@dataclass(frozen=True)
class SandboxSpec:
    """Everything that decides what one sandboxed process can see and do."""

    host_uid: int
    mounts: Sequence[Mount]
    env: Mapping[str, str]
    cwd: str
    limits: Limits = field(default_factory=Limits)
    share_network: bool = True
    # A named network namespace (``/run/netns/NAME``) to run in instead of the host's
    # (``share_network`` then shares that one). Entering it needs root.
    netns: Path | None = None
    hostname: str = "dockyard"
    # A host directory to be the sandbox's ``/`` instead of an empty tmpfs. Directories in
    # it (a build's /app and /cache) are then one mount, so hard links between them work
    # (``link()`` across two bind mounts fails with EXDEV even on one file system). Its
    # mount points are made by ``spawn``; keep it root-owned so the sandbox cannot write
    # to ``/`` itself.
    root: Path | None = None


def bwrap_path() -> str:
    path = shutil.which("bwrap")
    if path is None:
        raise BuildError(
            "The build sandbox is not available: bubblewrap (bwrap) is not installed. "
            "Install it (apt-get install -y bubblewrap); dockyard refuses to build unsandboxed."
        )
    return path


def check_tools() -> None:
    """Raise, saying what to install, if bwrap or a launcher step is missing."""
    bwrap_path()
    for tool in LAUNCHER_TOOLS:
        if not os.access(tool, os.X_OK):
            raise BuildError(
                f"The sandbox launcher needs {tool}, which is missing: install it "
                "(apt-get install -y util-linux)."
            )


def command(spec: SandboxSpec, argv: Sequence[str]) -> list[str]:
    """The bwrap argv that runs ``argv`` inside ``spec``."""
    args = [
        bwrap_path(),
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--uid", str(SANDBOX_INSIDE_UID),
        "--gid", str(SANDBOX_INSIDE_UID),
        "--hostname", spec.hostname,
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        *(["--bind", str(spec.root), "/"] if spec.root is not None else []),
        "--proc", "/proc",
        "--dev", "/dev",
        "--tmpfs", "/tmp",  # noqa: S108 - a private tmpfs inside the sandbox
    ]  # fmt: skip
    if not spec.share_network:
        args.append("--unshare-net")
    for path in SYSTEM_RO_BINDS:
        args += ["--ro-bind", path, path]
    for path in SYSTEM_RO_BINDS_IF_PRESENT:
        args += ["--ro-bind-try", path, path]
    if spec.root is None:  # a root directory has them already (bwrap will not replace one)
        for target, link in SYSTEM_SYMLINKS:
            args += ["--symlink", target, link]
    for mount in spec.mounts:
        args += ["--bind" if mount.writable else "--ro-bind", str(mount.source), mount.target]
    # No --clearenv/--setenv: the environment is bwrap's own (``start``), so that no
    # variable's value is ever on a command line, where ``ps`` shows it to every user.
    args += ["--chdir", spec.cwd]
    return [*args, "--", *argv]


# Joins the cgroups named before "--" (as root, so their files stay root's), then execs
# the rest. A failed join is ignored, as a cgroup that could not be made is. The shell
# exports PWD (the server's working directory) to what it execs: unset, unless the
# sandbox's environment sets it itself.
_JOIN_CGROUPS = 'for f; do [ "$f" = -- ] && break; { echo $$ >"$f"; } 2>/dev/null; shift; done; shift; exec "$@"'
_JOIN_CGROUPS_WITHOUT_PWD = "unset PWD OLDPWD; " + _JOIN_CGROUPS
LAUNCHER_TOOLS = ("/bin/sh", "/usr/bin/prlimit", "/usr/bin/setpriv", "/usr/bin/nsenter")


def _launcher(spec: SandboxSpec, cgroup: SandboxCgroup | None) -> list[str]:
    """The exec-only steps from this process to bwrap: join the cgroup, enter the network
    namespace, lower the limits, drop to the sandbox uid (only root can, and must).

    Nothing runs in a forked copy of the server (no ``preexec_fn``, no ``user=``), so
    ``subprocess`` can use vfork: a fork copies the server's page tables, 10-30 ms for a
    few hundred MB while its other threads wait, and a deployment starts four sandboxes.
    """
    steps: list[str] = []
    if cgroup is not None and cgroup.dirs:
        procs = [str(path) for path in cgroup.procs_files]
        script = _JOIN_CGROUPS if "PWD" in spec.env else _JOIN_CGROUPS_WITHOUT_PWD
        steps += ["/bin/sh", "-c", script, "sh", *procs, "--"]
    if spec.netns is not None:
        if os.geteuid() != 0:
            raise BuildError("Entering an app's network namespace needs root.")
        steps += ["/usr/bin/nsenter", f"--net={spec.netns}", "--"]
    limits = spec.limits
    steps += [
        "/usr/bin/prlimit",
        f"--nproc={limits.max_processes}",
        f"--fsize={limits.max_file_bytes}",
        f"--nofile={limits.open_files}",
        "--core=0",
    ]
    if os.geteuid() == 0:
        uid = str(spec.host_uid)
        steps += ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    return steps


@contextlib.contextmanager
def spawn(
    spec: SandboxSpec,
    argv: Sequence[str],
    *,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.STDOUT,
    stdin: int | None = subprocess.DEVNULL,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` in the sandbox; on leaving the block, nothing of it is left running."""
    proc = start(spec, argv, stdout=stdout, stderr=stderr, stdin=stdin)
    try:
        yield proc
    finally:
        terminate(proc, grace_seconds=0)


def start(
    spec: SandboxSpec,
    argv: Sequence[str],
    *,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.STDOUT,
    stdin: int | None = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in the sandbox and return the bwrap process (the caller stops it)."""
    environment = exec_environment(spec.env)
    if spec.root is not None:
        prepare_root(spec)
    cgroup = _cgroup(spec) if os.geteuid() == 0 else None
    try:
        proc = subprocess.Popen(
            [*_launcher(spec, cgroup), *command(spec, argv)],
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            # The sandbox's whole environment, and nothing of the server's: bwrap passes
            # its own on, and it is what the sandbox's /proc/1/environ shows.
            env=environment,
            close_fds=True,
            start_new_session=True,
        )
    except OSError as exc:
        if cgroup is not None:
            cgroup.close()
        raise BuildError(f"The sandbox could not be started: {exc.strerror or exc}.") from exc
    except BaseException:
        if cgroup is not None:
            cgroup.close()
        raise
    proc._dockyard_cgroup = cgroup  # type: ignore[attr-defined]  # owned by the process object
    return proc


def exec_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` as exec will take it; a variable it cannot carry is refused in words (the
    API refuses them first: domain/variables.py)."""
    for name, value in env.items():
        if not name or "=" in name or "\x00" in name or "\x00" in value:
            raise BuildError(
                f"The environment variable {name!r} cannot be passed to a process: names "
                "hold no '=' and neither names nor values a NUL character."
            )
    return dict(env)


def terminate(proc: subprocess.Popen[bytes], *, grace_seconds: float) -> int:
    """Stop a sandboxed process: SIGTERM, a grace period, then SIGKILL of the whole sandbox."""
    namespace_init = _namespace_init(proc)
    if proc.poll() is None and grace_seconds > 0:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_seconds)
    returncode = _kill(proc, namespace_init)
    cgroup: SandboxCgroup | None = getattr(proc, "_dockyard_cgroup", None)
    if cgroup is not None:
        cgroup.close()
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    return returncode


def _cgroup(spec: SandboxSpec) -> SandboxCgroup:
    limits = spec.limits
    return SandboxCgroup(
        app_uid=spec.host_uid, memory_bytes=limits.memory_bytes, max_processes=limits.max_processes
    )


def oom_kills(proc: subprocess.Popen[bytes]) -> int:
    """How many of the sandbox's processes the kernel killed for exceeding its memory limit
    (0 without a memory cgroup); readable until ``terminate``."""
    cgroup: SandboxCgroup | None = getattr(proc, "_dockyard_cgroup", None)
    return 0 if cgroup is None else cgroup.oom_kills()


def kill(proc: subprocess.Popen[bytes]) -> int:
    """SIGKILL a sandbox and return once nothing of it is left running."""
    return _kill(proc, _namespace_init(proc))


def _kill(proc: subprocess.Popen[bytes], namespace_init: int | None) -> int:
    try:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
        returncode = proc.wait()
        if namespace_init is not None:
            # Killed too (it dies with its parent); wait until it has torn the namespace down.
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(namespace_init, signal.SIGKILL)
            select.select([namespace_init], [], [], NAMESPACE_TEARDOWN_SECONDS)
        return returncode
    finally:
        if namespace_init is not None:
            os.close(namespace_init)


def _namespace_init(proc: subprocess.Popen[bytes]) -> int | None:
    """A pidfd of bwrap's init: pid 1 of the sandbox's pid namespace, a child of the bwrap
    we started.

    It is in its own session, so killpg does not reach it; when it dies of its parent's
    death it still has to tear the namespace down, which takes a moment. It must be found
    while its parent lives (bwrap may not have forked it yet right after start: look
    again for a moment), then waited for. A pidfd, not a pid, so that a recycled pid is
    never signalled.
    """
    deadline = time.monotonic() + NAMESPACE_INIT_LOOKUP_SECONDS
    while proc.poll() is None:
        try:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        except OSError:
            return None
        for child in children:
            try:
                pidfd = os.pidfd_open(int(child))
            except OSError:
                continue  # already gone
            # Still bwrap's child once we hold the pidfd: the number was not recycled.
            if _parent_of(int(child)) == proc.pid:
                return pidfd
            os.close(pidfd)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.001)
    return None


def _parent_of(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1])


def prepare_root(spec: SandboxSpec) -> None:
    """Make the mount points and system symlinks of ``spec`` in its root directory.

    bwrap runs as the sandbox uid, which cannot write to a root-owned root, so it cannot
    make them itself. Idempotent: every step of a build calls it on the same root.
    """
    assert spec.root is not None
    root = spec.root
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    points = ["/proc", "/dev", "/tmp", *SYSTEM_RO_BINDS]  # noqa: S108 - mount points
    points += [path for path in SYSTEM_RO_BINDS_IF_PRESENT if os.path.isdir(path)]
    for path in points:
        (root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for target, link in SYSTEM_SYMLINKS:
        with contextlib.suppress(FileExistsError):
            (root / link.lstrip("/")).symlink_to(target)
    for mount in spec.mounts:
        point = root / mount.target.lstrip("/")
        if mount.source.is_dir():
            point.mkdir(parents=True, exist_ok=True)
        elif not point.exists():
            point.parent.mkdir(parents=True, exist_ok=True)
            point.touch()


def prepare_writable_dir(path: Path, host_uid: int) -> None:
    """Create ``path`` (if needed) owned by the sandbox uid so a sandbox can write to it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for root, dirs, files in os.walk(path):
            os.lchown(root, host_uid, host_uid)
            for name in dirs + files:
                os.lchown(os.path.join(root, name), host_uid, host_uid)
