"""``dockyard api``, two ``dockyard worker`` and one ``dockyard router`` as separate
processes on PostgreSQL, each with a data directory of its own (no shared disk)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e import scalingo_ops as ops
from tests.e2e.cluster import Cluster, lease_owner_pid, running_cluster, web_app
from tests.e2e.deployer import SLOW_COMPILE, BuildpackHost, Deployer
from tests.helpers import ScalingoClient, wait_for

WORKER_NAMES = {"worker-1": "w1", "worker-2": "w2"}


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Cluster, Deployer, BuildpackHost]]:
    with running_cluster(tmp_path, postgres_url, workers=WORKER_NAMES) as running:
        yield running


def instances_of(app: str) -> int:
    """How many processes run the app's web-1 (the environment names its instance)."""
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # The app's python, not the bubblewrap processes around it (same environment).
        if f"CONTAINER={app}-web-1".encode() in environ and cmdline.startswith(b"python3"):
            count += 1
    return count


def check_runtime_through_the_api(deployer: Deployer, app: str) -> None:
    """``scale``, ``ps`` and ``logs`` asked of the api process reach the worker that runs
    the app (services/remote.py)."""
    deployer.scale(app, 2, timeout=30)
    with deployer.client() as client:
        running = client.get(f"/v1/apps/{app}/ps").json()["containers"]
        assert sorted(c["label"] for c in running if c["state"] == "running") == ["web-1", "web-2"]
        assert client.get(f"/v1/apps/{app}").json()["app"]["status"] == "running"
        deployer.get(app, "/visited-through-the-router")
        logs_url = client.get(f"/v1/apps/{app}/logs").json()["logs_url"]

    def logged() -> bool:
        lines = httpx.get(f"{logs_url}&n=100", timeout=10).text.splitlines()
        visits = [line for line in lines if "visited-through-the-router" in line]
        # The app's own line, and the router process's, forwarded to the app's worker.
        return any("[router]" in line for line in visits) and any(
            "[web-" in line for line in visits
        )

    wait_for(logged, timeout=15, what="the app's and the router's lines through the api")


def check_one_offs_through_the_api(processes: Cluster, deployer: Deployer, app: str) -> None:
    """``run`` (attached and detached), ``ps`` and ``one-off-stop`` asked of the api
    process run on the app's worker; the client attaches to that worker's attach server
    (services/remote_oneoffs.py)."""
    client = ScalingoClient(processes.api_url, deployer.token)
    client.exchange()
    with psycopg.connect(processes.database_url) as conn:
        row = conn.execute("SELECT owner FROM routes WHERE app = %s", (app,)).fetchone()
    assert row is not None
    owner = next(process for process, name in WORKER_NAMES.items() if name == row[0])

    started = ops.start_run(
        client,
        app,
        'test -t 1 && echo "attached to a terminal with $EXTRA"; exit 3',
        detached=False,
        env={"EXTRA": "split-env"},
    )
    operation = ops.wait_operation(client, app, started.operation_url)
    assert operation["status"] == "done", operation
    attach_url = operation["start_one_off_data"]["attach_url"]
    assert attach_url.startswith(f"{processes.attach_url(owner)}/attach/")
    assert len({processes.attach_url(worker) for worker in WORKER_NAMES}) == 2
    sock, head = ops.connect_attach(attach_url, client.jwt)
    assert head.startswith(b"HTTP/1.1 200"), head
    output = ops.read_until_closed(sock)
    assert b"attached to a terminal with split-env" in output, output
    assert ops.resize_and_wait(attach_url, client.jwt) == 3

    label = ops.start_run(
        client, app, 'echo "detached says $EXTRA"', detached=True, env={"EXTRA": "from-env"}
    ).container["label"]
    url = ops.logs_url(client, app)

    def logged() -> str | None:
        response = ops.dump(url, lines=20, filter=label)
        return response.text if "detached says from-env" in response.text else None

    text = wait_for(logged, timeout=15, what="the detached one-off's output through the api")
    assert f"[{label}] detached says from-env" in text

    label = ops.start_run(client, app, "sleep 300", detached=True).container["label"]
    containers = client.request("GET", f"/apps/{app}/ps")["containers"]
    container = next(c for c in containers if c["label"] == label)
    assert container["type"] == "one-off" and container["state"] == "running"
    stop = f"/apps/{app}/containers/{container['id']}/stop"
    client.request("POST", stop, {}, expect=202)

    def stopped() -> bool:
        return label not in {
            c["label"] for c in client.request("GET", f"/apps/{app}/ps")["containers"]
        }

    wait_for(stopped, timeout=20, what=f"{label} to stop")
    client.request("POST", stop, {}, expect=404)

    deployer.create_app("never-deployed")
    refused = client.request(
        "POST", "/apps/never-deployed/run", {"command": "id", "env": {}, "size": "M"}, expect=409
    )
    assert "deploy it before running a command" in refused["error"], refused


def test_separate_processes_deploy_route_and_survive_a_killed_worker(
    cluster: tuple[Cluster, Deployer, BuildpackHost],
) -> None:
    processes, deployer, buildpacks = cluster
    apps = ["alpha-app", "bravo-app", "charlie-app"]
    for app in apps:
        deployer.create_app(app)
    wait_for(processes.check_alive, timeout=1)
    # Two rounds of three apps: six builds shared by two workers, and each app's second
    # release may be switched to by the other worker than its first (a hand-over).
    for round_ in (1, 2):
        started = {app: deployer.start(app, archive=web_app(f"{app}-v{round_}")) for app in apps}
        for app, deployment_id in started.items():
            status, output = deployer.wait(app, deployment_id, timeout=120)
            assert status == "success", output
        for app in apps:
            marker = f"{app}-v{round_}.txt"

            def served(app: str = app, marker: str = marker) -> bool:
                return marker in deployer.get(app).text

            wait_for(served, timeout=20, what=f"{marker} through the router process")
    with psycopg.connect(processes.database_url) as conn:
        owners = {row[0] for row in conn.execute("SELECT owner FROM routes")}
    assert owners <= {"w1", "w2"}
    for app in apps:
        # Whichever worker switched the app to v2 runs it; the other, if it ran v1,
        # handed it over: its instance drained and stopped.

        def one_left(app: str = app) -> bool:
            return instances_of(app) == 1

        wait_for(one_left, timeout=20, what=f"one instance of {app} left")
    check_runtime_through_the_api(deployer, "alpha-app")
    check_one_offs_through_the_api(processes, deployer, "alpha-app")

    # A rollback through the api process, which keeps no release: the worker that built
    # v1 (and keeps it) claims it, whichever ran v2, and v1 serves again without a build.
    with deployer.client() as api:
        asked = api.post("/v1/apps/bravo-app/rollback", json={})
    assert asked.status_code == 201, asked.text
    status, output = deployer.wait("bravo-app", asked.json()["deployment"]["id"], timeout=60)
    assert status == "success", output
    assert "(no build)" in output
    wait_for(
        lambda: "bravo-app-v1.txt" in deployer.get("bravo-app").text,
        timeout=20,
        what="bravo-app's v1 through the router after the rollback",
    )

    # A worker killed mid-build: its lease expires and the deployment ends as aborted,
    # saying why; the app's next deployment proceeds on the other worker, and a stream
    # of it through the api process sees it to the end.
    slowpoke = deployer.create_app("slowpoke")
    slow = deployer.start("slowpoke", archive=buildpacks.app_using("slow", SLOW_COMPILE))
    deployer.wait_for_output("slowpoke", slow, "started")
    pid = lease_owner_pid(processes.database_url, slow)
    victim = next(name for name, p in processes.processes.items() if p.pid == pid)
    processes.kill(victim)
    status, output = deployer.wait("slowpoke", slow, timeout=30)
    assert status == "aborted"
    assert "its worker stopped while it ran" in output

    client = ScalingoClient(processes.api_url, deployer.token)
    client.exchange()
    followed: dict[str, Any] = {}
    next_id = deployer.start("slowpoke", archive=web_app("slowpoke-v2"))

    def follow() -> None:
        followed["result"] = client.follow(
            slowpoke["links"]["deployments_stream"], next_id, timeout=90
        )

    follower = threading.Thread(target=follow)
    follower.start()
    status, output = deployer.wait("slowpoke", next_id, timeout=120)
    assert status == "success", output
    follower.join(timeout=30)
    _lines, statuses, _frames = followed["result"]
    assert statuses[-1] == "success"
    assert "slowpoke-v2.txt" in deployer.get("slowpoke").text

    # The killed worker's apps died with it; started again under its name, on its data
    # dir, it takes them back from the database, and the router process routes them
    # again; the build it left behind is cleared before it says it is running.
    assert (processes.data_dirs[victim] / "builds" / slow).is_dir()  # left by the kill
    processes.start(
        victim,
        "worker",
        ready=f"dockyard worker {WORKER_NAMES[victim]}:",
        DOCKYARD_WORKER_NAME=WORKER_NAMES[victim],
        **processes.worker_env,
    )
    assert not (processes.data_dirs[victim] / "builds" / slow).exists()
    for app in apps:
        marker = f"{app}-v1.txt" if app == "bravo-app" else f"{app}-v2.txt"  # rolled back

        def back(app: str = app, marker: str = marker) -> bool:
            processes.check_alive()
            return marker in deployer.get(app).text

        wait_for(back, timeout=30, what=f"{app} to answer again through the router")


# A buildpack that says whether its CACHE_DIR holds what an earlier build left there.
CACHE_REPORTING_COMPILE = """#!/bin/sh
if [ -f "$2/built-before" ]; then echo "warm cache: $(cat "$2/built-before")"; else echo "cold cache"; fi
echo "an earlier build" > "$2/built-before"
"""


def test_a_worker_refuses_a_name_or_a_data_dir_already_in_use(
    cluster: tuple[Cluster, Deployer, BuildpackHost],
) -> None:
    """Two workers under one name would both answer for its apps; two on one data dir
    would clear each other's builds. A second one is refused, saying what to change."""
    processes, _deployer, _buildpacks = cluster
    processes.start("same-name", "worker", DOCKYARD_WORKER_NAME="w1", **processes.worker_env)
    processes.start(
        "same-dir",
        "worker",
        DOCKYARD_WORKER_NAME="w3",
        DOCKYARD_DATA_DIR=str(processes.data_dirs["worker-1"]),
        **processes.worker_env,
    )
    for name, says in (
        ("same-name", "Another dockyard worker runs as 'w1'"),
        ("same-dir", "Another dockyard process already uses the data directory"),
    ):
        refused = processes.processes.pop(name)
        assert refused.wait(timeout=30) != 0
        assert says in (processes.logs / f"{name}.log").read_text()
    processes.check_alive()  # the first ones run on


def test_the_build_cache_follows_the_app_to_another_worker(
    cluster: tuple[Cluster, Deployer, BuildpackHost],
) -> None:
    """A worker sends its build cache to the API; the app's next build, on another worker
    (the first one is gone), starts from it; a cache reset drops it everywhere."""
    processes, deployer, buildpacks = cluster
    deployer.create_app("cached")
    app = buildpacks.app_using("reporter", CACHE_REPORTING_COMPILE)
    status, output = deployer.deploy("cached", archive=app)
    assert status == "success", output
    assert "cold cache" in output
    with psycopg.connect(processes.database_url) as conn:
        row = conn.execute("SELECT owner FROM routes WHERE app = 'cached'").fetchone()
    assert row is not None
    first = next(process for process, name in WORKER_NAMES.items() if name == row[0])
    processes.kill(first)  # its disk goes with it: only the API's copy is left

    status, output = deployer.deploy("cached", archive=app)
    assert status == "success", output
    assert "Restored the deployment cache from the API" in output
    assert "warm cache: an earlier build" in output
    # The same worker again: its own copy is the API's (same ETag), nothing is fetched.
    status, output = deployer.deploy("cached", archive=app)
    assert status == "success", output
    assert "warm cache: an earlier build" in output
    assert "Restored the deployment cache" not in output

    with deployer.client() as client:
        assert client.delete("/v1/apps/cached/caches/deployment").status_code == 204
    status, output = deployer.deploy("cached", archive=app)
    assert status == "success", output
    assert "cold cache" in output
