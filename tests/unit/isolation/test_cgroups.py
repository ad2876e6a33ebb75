"""Cgroups of sandboxes over a fake /sys/fs/cgroup: v1 and v2 layouts, OOM counters, cleanup.

The real kernel (v1 here) is exercised by tests/integration/test_isolation.py and the e2e
tests; v2's files are the kernel's documented ones (Documentation/admin-guide/cgroup-v2).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard.isolation import cgroups

UID = 200_007


def fake_v1(root: Path) -> Path:
    for controller in ("memory", "pids"):
        (root / controller).mkdir(parents=True)
        (root / controller / "cgroup.procs").write_text("")
    return root


def fake_v2(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("cpu\n")
    return root


def kernel_files(path: Path) -> None:
    """What the kernel does on mkdir: a new group gets its interface files (v1's memory
    and pids ones, and v2's, all in one here)."""
    for name in ("cgroup.procs", "cgroup.subtree_control", "pids.max", "memory.max"):
        (path / name).write_text("")
    (path / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (path / "memory.swap.max").write_text("max\n")
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n")


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]
        if self.is_relative_to(tmp_path):
            kernel_files(self)

    monkeypatch.setattr(Path, "mkdir", mkdir)


def test_the_version_is_read_from_the_hierarchy(tmp_path: Path) -> None:
    assert cgroups.version(fake_v1(tmp_path / "v1")) == 1
    assert cgroups.version(fake_v2(tmp_path / "v2")) == 2
    assert cgroups.version(tmp_path / "none") is None


def test_v1_groups_sit_under_the_apps_uid_with_the_limits(tmp_path: Path, kernel: None) -> None:
    root = fake_v1(tmp_path / "cgroup")
    group = cgroups.SandboxCgroup(
        app_uid=UID, memory_bytes=512 * 1024**2, max_processes=64, root=root
    )
    assert [path.relative_to(root).parts[:3] for path in group.dirs] == [
        ("pids", "dockyard", str(UID)),
        ("memory", "dockyard", str(UID)),
    ]
    assert group.dirs[0].joinpath("pids.max").read_text() == "64"
    assert group.dirs[1].joinpath("memory.limit_in_bytes").read_text() == str(512 * 1024**2)
    assert not group.dirs[1].joinpath("memory.memsw.limit_in_bytes").exists()  # no swap: none
    assert group.procs_files == [path / "cgroup.procs" for path in group.dirs]


def test_v2_group_enables_controllers_down_the_tree_and_sets_limits(
    tmp_path: Path, kernel: None
) -> None:
    root = fake_v2(tmp_path / "cgroup")
    group = cgroups.SandboxCgroup(
        app_uid=UID, memory_bytes=512 * 1024**2, max_processes=64, root=root
    )
    [leaf] = group.dirs
    assert leaf.parent == root / "dockyard" / str(UID)
    assert (leaf / "memory.max").read_text() == str(512 * 1024**2)
    assert (leaf / "memory.swap.max").read_text() == "0"
    assert (leaf / "pids.max").read_text() == "64"
    for parent in (root, root / "dockyard", root / "dockyard" / str(UID)):
        assert (parent / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert group.oom_kills() == 0
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n")
    assert group.oom_kills() == 1


def test_oom_kills_are_read_from_v1_counters(tmp_path: Path) -> None:
    (tmp_path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert cgroups.oom_kills(tmp_path, 1) == 2
    # Before Linux 4.13 there is no oom_kill line: having hit the limit is the sign.
    (tmp_path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")
    (tmp_path / "memory.failcnt").write_text("5\n")
    assert cgroups.oom_kills(tmp_path, 1) == 1
    (tmp_path / "memory.failcnt").write_text("0\n")
    assert cgroups.oom_kills(tmp_path, 1) == 0


def test_without_a_writable_hierarchy_there_is_no_group(tmp_path: Path) -> None:
    group = cgroups.SandboxCgroup(
        app_uid=UID, memory_bytes=1024, max_processes=1, root=tmp_path / "missing"
    )
    assert group.dirs == [] and group.oom_kills() == 0
    group.close()


def test_removing_an_apps_groups_leaves_other_apps_alone(tmp_path: Path) -> None:
    root = fake_v1(tmp_path)
    mine = cgroups.SandboxCgroup(app_uid=UID, memory_bytes=None, max_processes=8, root=root)
    other = cgroups.SandboxCgroup(app_uid=UID + 1, memory_bytes=None, max_processes=8, root=root)
    for path in mine.dirs:  # plain directories stand for the kernel's: empty them first
        for file in path.iterdir():
            file.unlink()
    assert len(cgroups.app_groups(UID, root=root)) == 2
    cgroups.remove_app_groups(UID, root=root)
    assert cgroups.app_groups(UID, root=root) == []
    assert all(path.exists() for path in other.dirs)


def test_a_killed_servers_empty_groups_are_swept_but_not_young_or_busy_ones(
    tmp_path: Path,
) -> None:
    root = fake_v1(tmp_path)
    abandoned = cgroups.SandboxCgroup(app_uid=UID, memory_bytes=None, max_processes=8, root=root)
    busy = cgroups.SandboxCgroup(app_uid=UID, memory_bytes=None, max_processes=8, root=root)
    young = cgroups.SandboxCgroup(app_uid=UID + 1, memory_bytes=None, max_processes=8, root=root)
    for path in abandoned.dirs + young.dirs:  # plain directories stand for the kernel's
        for file in path.iterdir():
            file.unlink()
    for path in busy.dirs:
        (path / "cgroup.procs").write_text("4242\n")
    old = 1_000_000.0
    for path in abandoned.dirs + busy.dirs:
        os.utime(path, (old, old))

    assert cgroups.sweep_abandoned(root=root) == len(abandoned.dirs) == 2
    assert not any(path.exists() for path in abandoned.dirs)
    assert all(path.exists() for path in busy.dirs + young.dirs)
