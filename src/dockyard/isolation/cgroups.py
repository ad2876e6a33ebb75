"""A cgroup per sandbox: its memory and process limits, and whether it was killed for memory.

cgroup v1 (a ``memory`` and a ``pids`` hierarchy, as on this project's CI machine) and v2
(one unified hierarchy) are both handled; which one is read from ``/sys/fs/cgroup``. The
groups of one app are kept together, so that deleting the app can remove them all::

    v1  /sys/fs/cgroup/memory/dockyard/<app uid>/<sandbox>   and  .../pids/dockyard/...
    v2  /sys/fs/cgroup/dockyard/<app uid>/<sandbox>

The launcher joins the group (writes its pid to each ``cgroup.procs``) before bwrap
starts, so even a fork bomb's first child is counted. Where no group can be made (not
root, no memory controller), the sandbox runs without one: its pid namespace still ends
every process of it, and the kernel's own limits (``prlimit``) still apply.

An OOM kill is read from the group's counters, not guessed from a SIGKILL: v1's
``memory.oom_control`` ``oom_kill`` (``memory.failcnt`` on kernels before 4.13), v2's
``memory.events`` ``oom_kill``.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP = "dockyard"
DRAIN_SECONDS = 5.0


def version(root: Path | None = None) -> int | None:
    """1 or 2 for the hierarchy that has the memory controller, None if none is usable."""
    root = root or CGROUP_ROOT
    if (root / "memory" / "cgroup.procs").exists():
        return 1
    controllers = root / "cgroup.controllers"
    with contextlib.suppress(OSError):
        if "memory" in controllers.read_text().split():
            return 2
    return None


class SandboxCgroup:
    """The cgroup(s) of one sandbox. ``dirs`` is empty when none could be made."""

    def __init__(
        self,
        *,
        app_uid: int,
        memory_bytes: int | None,
        max_processes: int,
        root: Path | None = None,
    ) -> None:
        self.root = root or CGROUP_ROOT
        self.version = version(self.root) if os.access(self.root, os.W_OK) else None
        self.memory_dir: Path | None = None
        self.dirs: list[Path] = []
        name = f"{GROUP}/{app_uid}/{uuid.uuid4().hex}"
        if self.version == 1:
            self._make_v1(name, memory_bytes, max_processes)
        elif self.version == 2:
            self._make_v2(name, memory_bytes, max_processes)

    @property
    def procs_files(self) -> list[Path]:
        return [path / "cgroup.procs" for path in self.dirs]

    def _make_v1(self, name: str, memory_bytes: int | None, max_processes: int) -> None:
        settings: dict[str, dict[str, str]] = {
            "pids": {"pids.max": str(max_processes)},
            "memory": {},
        }
        if memory_bytes:
            settings["memory"] = {"memory.limit_in_bytes": str(memory_bytes)}
        for controller, values in settings.items():
            base = self.root / controller
            if not (base / "cgroup.procs").exists():
                continue
            path = base / name
            try:
                path.mkdir(parents=True)
                for key, value in values.items():
                    (path / key).write_text(value)
                # With swap accounting, the limit must hold for memory+swap too.
                memsw = path / "memory.memsw.limit_in_bytes"
                if controller == "memory" and memory_bytes and memsw.exists():
                    memsw.write_text(str(memory_bytes))
            except OSError:
                _remove(path)
                continue
            self.dirs.append(path)
            if controller == "memory":
                self.memory_dir = path

    def _make_v2(self, name: str, memory_bytes: int | None, max_processes: int) -> None:
        path = self.root / name
        try:
            # Controllers must be enabled in every parent's subtree_control on the way down;
            # the parents hold no processes themselves (v2's "no internal processes" rule).
            parent = self.root
            for part in name.split("/")[:-1]:
                _enable_controllers(parent)
                parent = parent / part
                parent.mkdir(exist_ok=True)
            _enable_controllers(parent)
            path.mkdir()
            (path / "pids.max").write_text(str(max_processes))
            if memory_bytes:
                (path / "memory.max").write_text(str(memory_bytes))
                if (path / "memory.swap.max").exists():
                    (path / "memory.swap.max").write_text("0")
        except OSError:
            _remove(path)
            return
        self.dirs.append(path)
        self.memory_dir = path

    def oom_kills(self) -> int:
        """How many processes the kernel killed in this group for exceeding its memory."""
        if self.memory_dir is None:
            return 0
        return oom_kills(self.memory_dir, self.version)

    def kill_all(self) -> None:
        """SIGKILL whatever is left in the group (the pid namespace normally did it)."""
        for path in self.dirs:
            _kill_members(path)

    def close(self) -> None:
        # SIGKILLed processes take a moment to leave the group, and the group cannot be
        # removed until they have: wait (briefly) so that when the sandbox is reported
        # stopped, nothing of it is still running and no empty group is left behind.
        deadline = time.monotonic() + DRAIN_SECONDS
        while any(_has_members(path) for path in self.dirs) and time.monotonic() < deadline:
            self.kill_all()
            time.sleep(0.005)
        for path in self.dirs:
            _remove(path)


def oom_kills(memory_dir: Path, cgroup_version: int | None) -> int:
    if cgroup_version == 2:
        return _counter(memory_dir / "memory.events", "oom_kill")
    kills = _counter(memory_dir / "memory.oom_control", "oom_kill", default=-1)
    if kills >= 0:
        return kills
    # Kernels before 4.13 do not count kills: hitting the limit is the best sign there is.
    with contextlib.suppress(OSError, ValueError):
        return 1 if int((memory_dir / "memory.failcnt").read_text()) > 0 else 0
    return 0


def remove_app_groups(app_uid: int, *, root: Path | None = None) -> None:
    """Remove every group of an app (its processes are stopped first; any left is killed)."""
    root = root or CGROUP_ROOT
    bases = [root / "memory", root / "pids"] if version(root) == 1 else [root]
    for base in bases:
        app_dir = base / GROUP / str(app_uid)
        if not app_dir.is_dir():
            continue
        for child in [path for path in app_dir.iterdir() if path.is_dir()]:
            deadline = time.monotonic() + DRAIN_SECONDS
            while _has_members(child) and time.monotonic() < deadline:
                _kill_members(child)
                time.sleep(0.005)
            _remove(child)
        _remove(app_dir)


def sweep_abandoned(*, root: Path | None = None, older_than: float = 60.0) -> int:
    """Remove sandbox groups nothing runs in any more, left by a server that was killed
    outright (its ``close`` never ran); returns how many. A group must also be older than
    ``older_than`` seconds: one another server just made is empty until its launcher has
    joined it, and removing it then would leave that sandbox without its limits."""
    root = root or CGROUP_ROOT
    bases = [root / "memory", root / "pids"] if version(root) == 1 else [root]
    cutoff = time.time() - older_than
    removed = 0
    for base in bases:
        for app_dir in _subdirs(base / GROUP):
            for sandbox in _subdirs(app_dir):
                with contextlib.suppress(OSError):
                    if sandbox.stat().st_mtime < cutoff and not _has_members(sandbox):
                        sandbox.rmdir()
                        removed += 1
            # An app's directory with no group left goes too (its mtime is that of its
            # last change, so one a sandbox is being made in is young).
            with contextlib.suppress(OSError):
                if app_dir.stat().st_mtime < cutoff:
                    app_dir.rmdir()
    return removed


def _subdirs(path: Path) -> list[Path]:
    """``path``'s directories; none if it is gone (another server sweeping at the same
    time may remove it while this one looks)."""
    try:
        return [child for child in path.iterdir() if child.is_dir()]
    except OSError:
        return []


def app_groups(app_uid: int, *, root: Path | None = None) -> list[Path]:
    """The app's cgroup directories that exist (tests, diagnostics)."""
    root = root or CGROUP_ROOT
    bases = [root / "memory", root / "pids"] if version(root) == 1 else [root]
    return [base / GROUP / str(app_uid) for base in bases if (base / GROUP / str(app_uid)).is_dir()]


def _counter(path: Path, key: str, *, default: int = 0) -> int:
    try:
        text = path.read_text()
    except OSError:
        return default
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return default


def _enable_controllers(path: Path) -> None:
    wanted = {"memory", "pids"}
    enabled = set((path / "cgroup.subtree_control").read_text().split())
    missing = wanted - enabled
    if missing:
        (path / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(missing)))


def _has_members(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return bool((path / "cgroup.procs").read_text().strip())
    return False


def _kill_members(path: Path) -> None:
    with contextlib.suppress(OSError):
        for pid in (path / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(pid), 9)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()
