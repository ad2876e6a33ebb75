"""Stopping a sandbox: nothing of it is left running once terminate() returns."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from tests.helpers import processes_of, wait_for

from dockyard import sandbox

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
]

UID = 239_517


@pytest.mark.parametrize("cgroups", [True, False], ids=["with-cgroups", "pid-namespace-only"])
def test_a_sandbox_stopped_at_any_moment_leaves_nothing_running(
    cgroups: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not cgroups:
        # Where cgroups are not writable, only the pid namespace's teardown is waited for.
        monkeypatch.setattr(sandbox, "CGROUP_V1_ROOT", Path("/nonexistent"))
    spec = sandbox.SandboxSpec(host_uid=UID, mounts=[], env={"PATH": "/usr/bin:/bin"}, cwd="/")
    for attempt in range(30):
        proc = sandbox.start(spec, ["/bin/sh", "-c", "sleep 60 & setsid sleep 60 & sleep 60"])
        if attempt % 2:
            # Half the time once the command runs, half the time before bwrap has forked.
            wait_for(
                lambda: sum("sleep" in p for p in processes_of(UID)) == 3,
                timeout=10,
                what="the sleeps to start",
            )
        sandbox.terminate(proc, grace_seconds=0)
        assert processes_of(UID) == [], f"left running after stop #{attempt}"


def test_a_sandbox_runs_within_its_limits_and_cgroups_without_extra_groups() -> None:
    limits = sandbox.Limits(
        max_processes=77, max_file_bytes=5 * 1024 * 1024, memory_bytes=300 * 1024**2
    )
    spec = sandbox.SandboxSpec(
        host_uid=UID, mounts=[], env={"PATH": "/usr/bin:/bin"}, cwd="/", limits=limits
    )
    script = "cat /proc/self/limits /proc/self/status; echo END; exec sleep 60"
    with sandbox.spawn(spec, ["/bin/sh", "-c", script]) as proc:
        assert proc.stdout is not None
        output = ""
        while not output.endswith("END\n"):
            output += proc.stdout.readline().decode()
        host_view = Path(f"/proc/{proc.pid}/cgroup").read_text()
    limit_lines = {line[:26].strip(): line[26:].split()[:2] for line in output.splitlines()}
    assert limit_lines["Max processes"] == ["77", "77"]
    assert limit_lines["Max file size"] == [str(5 * 1024 * 1024)] * 2
    assert limit_lines["Max open files"] == ["4096", "4096"]
    assert limit_lines["Max core file size"] == ["0", "0"]
    groups = [line.split() for line in output.splitlines() if line.startswith("Groups:")]
    assert groups == [["Groups:"]], "supplementary groups are dropped"
    # The launcher joined the sandbox's cgroups before bwrap started (where they exist).
    if os.geteuid() == 0 and (sandbox.CGROUP_V1_ROOT / "pids" / "cgroup.procs").exists():
        assert ":pids:/dockyard/" in host_view
        assert ":memory:/dockyard/" in host_view
