"""Deploy latency: a small stdlib app from ``POST /v1/sources`` to its first 200 through
the router, phase by phase, against the floor of doing the same by hand.

The floor is what no platform can avoid: unpack the archive, start the process in the
same bubblewrap sandbox (dockyard's own ``LocalRuntime``), wait until it answers. The
difference is what dockyard adds: the API, the queue, the buildpack, packaging, routing.
Phases come from the stream's status events, stamped on arrival (the recorder connects
before anything is submitted, so nothing is a replay).
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from bench import apps
from bench.harness import (
    PHASES,
    Api,
    Mode,
    Result,
    StreamRecorder,
    median,
    running_server,
    timed_deploy,
    traversable_dir,
    wait_for_200,
)
from dockyard import sandbox
from dockyard.pipeline import archive
from dockyard.runtime.base import ProcessSpec
from dockyard.runtime.local import LocalRuntime

NAME = "deploy_latency"
TARGET_OVERHEAD_SECONDS = 1.0
# A uid no app of the benchmark server gets (those start at 200000).
FLOOR_UID = 299_000


def run(mode: Mode) -> Result:
    rounds = mode.pick(3, 7)
    result = Result(NAME)
    payload = apps.stdlib_app()
    floors = [floor_once(payload, index) for index in range(rounds)]
    deploys: list[dict[str, Any]] = []
    with running_server(NAME) as server:
        api = Api(server, server.create_user())
        try:
            for index in range(rounds):
                deploys.append(deploy_once(api, f"latency-{index}", payload))
        finally:
            api.close()
    # The first deployment of a fresh server warms its imports and caches; both sides
    # report the median of all rounds, which that one outlier does not move.
    total = median([d["total"] for d in deploys])
    floor = median(floors)
    result.check(
        "first 200, median", "s", total, floor,
        f"dockyard - floor <= {TARGET_OVERHEAD_SECONDS:.1f} s ({total - floor:.2f} s)",
        total - floor <= TARGET_OVERHEAD_SECONDS,
    )  # fmt: skip
    phases = {phase: median([d[phase] for d in deploys]) for phase in PHASES}
    result.notes.append(
        "median phases (s): " + ", ".join(f"{phase} {value:.3f}" for phase, value in phases.items())
    )
    result.samples = {"rounds": rounds, "floor_seconds": floors, "deployments": deploys}
    return result


def deploy_once(api: Api, app: str, payload: bytes) -> dict[str, Any]:
    """One deployment of a fresh app; seconds per phase and in total."""
    created = api.create_app(app)
    recorder = StreamRecorder(created["links"]["deployments_stream"], api.token)
    try:
        return timed_deploy(api, recorder, app, payload)
    finally:
        recorder.close()


def floor_once(payload: bytes, index: int) -> float:
    """Unpack, start in the sandbox, first 200: seconds."""
    root = traversable_dir("floor-")
    runtime = LocalRuntime()
    handle = None
    try:
        started = time.monotonic()
        archive_path = root / "source.tar.gz"
        archive_path.write_bytes(payload)
        release = root / "release"
        archive.unpack(archive_path, release, owner_uid=FLOOR_UID)
        spec = ProcessSpec(
            app=f"floor-{index}",
            release_id="floor",
            process_type="web",
            index=1,
            command="python3 app.py",
            env={},
            release_dir=release,
            host_uid=FLOOR_UID,
            limits=sandbox.Limits(),
            log_path=root / "web.log",
        )
        handle = runtime.start(spec)
        assert handle.port is not None
        wait_for_200(handle.port)
        return time.monotonic() - started
    finally:
        if handle is not None:
            runtime.stop(handle, grace=0)
        shutil.rmtree(root, ignore_errors=True)
