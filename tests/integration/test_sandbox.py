"""Stopping a sandbox: nothing of it is left running once terminate() returns."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest
from tests.helpers import processes_of, wait_for

from dockyard import sandbox
from dockyard.errors import BuildError
from dockyard.isolation import cgroups as sandbox_cgroups

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
        monkeypatch.setattr(sandbox_cgroups, "CGROUP_ROOT", Path("/nonexistent"))
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
    # The launcher joined the sandbox's cgroups before bwrap started (where they exist),
    # under the app's uid so that deleting the app finds them.
    if os.geteuid() == 0 and sandbox_cgroups.version() == 1:
        assert f":pids:/dockyard/{UID}/" in host_view
        assert f":memory:/dockyard/{UID}/" in host_view


@pytest.mark.parametrize("cgroups", [True, False], ids=["with-cgroups", "pid-namespace-only"])
def test_variables_are_never_on_a_command_line_and_pid_1_holds_only_them(
    cgroups: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ps`` shows every process's arguments to every user: a value passed as
    ``--setenv NAME VALUE`` was readable there. And the launcher's shell exported the
    server's working directory (PWD) into the sandbox's /proc/1/environ."""
    if not cgroups:
        monkeypatch.setattr(sandbox_cgroups, "CGROUP_ROOT", Path("/nonexistent"))
    secret = "s3cr3t-value-" + os.urandom(8).hex()
    env = {"PATH": "/usr/bin:/bin", "APP_SECRET": secret, "MULTI": "line one\nline two"}
    spec = sandbox.SandboxSpec(host_uid=UID, mounts=[], env=env, cwd="/")
    script = "base64 -w0 < /proc/1/environ; echo; exec sleep 60"
    with sandbox.spawn(spec, ["/bin/sh", "-c", script]) as proc:
        assert proc.stdout is not None
        pid1 = base64.b64decode(proc.stdout.readline())
        command_lines = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    command_lines.append((entry / "cmdline").read_bytes())
                except OSError:
                    continue
    assert not [line for line in command_lines if secret.encode() in line]
    assert sorted(pid1.decode().split("\x00")[:-1]) == sorted(f"{k}={v}" for k, v in env.items())


def test_a_variable_exec_cannot_carry_is_refused_in_words() -> None:
    for env in ({"A": "x\x00y"}, {"A=B": "x"}, {"": "x"}):
        spec = sandbox.SandboxSpec(host_uid=UID, mounts=[], env=env, cwd="/")
        with pytest.raises(BuildError, match="cannot be passed"):
            sandbox.start(spec, ["/bin/true"])
