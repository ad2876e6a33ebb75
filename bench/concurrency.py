"""Concurrency: 8 apps x 3 deployments submitted at once, against the serial sum of the
same deployments run one at a time.

The serial run uses its own 8 apps (so both runs deploy onto the same history: a first
release, then two switches), with the same archives. Each deployment's time is from its
``POST`` to its final status on the stream. In the concurrent run every app's three
deployments are posted in order by that app's own thread, all apps at once; the stream
then shows whether each app's deployments ran strictly in order, one at a time.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bench import apps
from bench.harness import FINAL, Api, Mode, Result, StreamRecorder, running_server

NAME = "concurrency"
TARGET_RATIO = 0.6
ACTIVE = {"building", "pushing", "starting"}


def run(mode: Mode) -> Result:
    app_count = mode.pick(4, 8)
    per_app = 3
    result = Result(NAME)
    with running_server(NAME) as server:
        api = Api(server, server.create_user())
        recorders: list[StreamRecorder] = []
        try:
            serial_apps = [f"serial-{i}" for i in range(app_count)]
            parallel_apps = [f"parallel-{i}" for i in range(app_count)]
            for name in serial_apps + parallel_apps:
                created = api.create_app(name)
                recorders.append(StreamRecorder(created["links"]["deployments_stream"], api.token))
            by_app = dict(zip(serial_apps + parallel_apps, recorders, strict=True))
            archives = [
                [apps.stdlib_app(f"{i}-{k}") for k in range(per_app)] for i in range(app_count)
            ]
            serial = run_serial(api, by_app, serial_apps, archives)
            parallel = run_parallel(api, by_app, parallel_apps, archives)
        finally:
            for recorder in recorders:
                recorder.close()
            api.close()
    serial_sum = sum(d["seconds"] for d in serial)
    deployments = app_count * per_app
    succeeded = sum(d["status"] == "success" for d in parallel["deployments"])
    result.check(
        f"{app_count} apps x {per_app} at once: wall time", "s", parallel["wall"], serial_sum,
        f"< {TARGET_RATIO} x serial sum", parallel["wall"] < TARGET_RATIO * serial_sum,
    )  # fmt: skip
    result.check(
        "deployments that succeeded", "", succeeded, deployments, "all", succeeded == deployments
    )
    violations = parallel["violations"]
    result.check("order or overlap violations", "", len(violations), None, "0", not violations)
    result.notes.extend(violations[:10])
    result.samples = {"serial": serial, "parallel": parallel}
    return result


def run_serial(
    api: Api, recorders: dict[str, StreamRecorder], names: list[str], archives: list[list[bytes]]
) -> list[dict[str, Any]]:
    done = []
    for name, payloads in zip(names, archives, strict=True):
        for payload in payloads:
            source_url = api.upload(payload)
            started = time.monotonic()
            deployment_id = api.submit(name, source_url)
            ended, status = recorders[name].wait_final(deployment_id, timeout=300)
            done.append(
                {"app": name, "id": deployment_id, "status": status, "seconds": ended - started}
            )
    return done


def run_parallel(
    api: Api, recorders: dict[str, StreamRecorder], names: list[str], archives: list[list[bytes]]
) -> dict[str, Any]:
    # Uploads happen first: what is measured is deploying, as in the serial run.
    sources = [[api.upload(payload) for payload in payloads] for payloads in archives]
    submitted: dict[str, list[str]] = {name: [] for name in names}
    go = threading.Event()

    def submit_all(name: str, urls: list[str]) -> None:
        go.wait()
        for url in urls:
            submitted[name].append(api.submit(name, url))

    threads = [
        threading.Thread(target=submit_all, args=(name, urls))
        for name, urls in zip(names, sources, strict=True)
    ]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    go.set()
    for thread in threads:
        thread.join()
    deployments = []
    last = started
    for name in names:
        for deployment_id in submitted[name]:
            ended, status = recorders[name].wait_final(deployment_id, timeout=600)
            last = max(last, ended)
            deployments.append({"app": name, "id": deployment_id, "status": status})
    violations = [v for name in names for v in check_order(name, submitted[name], recorders[name])]
    return {"wall": last - started, "deployments": deployments, "violations": violations}


def check_order(app: str, submitted: list[str], recorder: StreamRecorder) -> list[str]:
    """Problems with one app's run, read from its stream in arrival order: a deployment
    starting while another is active, or starting out of submission order."""
    problems = []
    active: str | None = None
    started_order = []
    for frame in recorder.status_frames():
        deployment_id, status = frame["id"], frame["data"]["status"]
        if deployment_id not in submitted:
            continue
        if status == "building":
            if active is not None and active != deployment_id:
                problems.append(f"{app}: {deployment_id} started while {active} was active")
            active = deployment_id
            started_order.append(deployment_id)
        elif status in FINAL and active == deployment_id:
            active = None
        elif status in ACTIVE and active != deployment_id:
            problems.append(f"{app}: {deployment_id} was {status} while {active} was active")
    if started_order != submitted:
        problems.append(f"{app}: started in the order {started_order}, submitted {submitted}")
    return problems
