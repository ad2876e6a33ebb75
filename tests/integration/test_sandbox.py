"""Stopping a sandbox: nothing of it is left running once terminate() returns."""

from __future__ import annotations

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
