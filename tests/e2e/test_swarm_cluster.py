"""dockyard scaled out on Docker Swarm: one ``dockyard api``, two ``dockyard worker`` and one
``dockyard router``, separate processes on PostgreSQL with no shared disk, the apps as
services of a real single-node swarm, their images in a real registry.

Eight deployments of four apps succeed and answer through the router process; ``scale
web:3`` (asked of the api, done by the app's worker) gives three tasks that all answer; a
one-off asked of the api runs on the app's worker, its output in the app's logs; a
killed task and a forced update are healed and the router follows; a client polling
through the router during a redeploy sees no failed request; a worker killed mid-build
ends that deployment as aborted while every app keeps serving (Swarm runs them, not the
worker), and the app's next deployment proceeds on the other worker. Then every process is
restarted in turn, as in an upgrade, while an app polled through the router never fails;
and the apps of a worker gone for good are adopted by the other one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import psycopg
import pytest

from dockyard.runtime.docker.builds import LABEL_BUILD
from tests import dockerenv
from tests.dockerenv import RunningRegistry
from tests.e2e import scalingo_ops as ops
from tests.e2e.cluster import Cluster, api_answers, lease_owner_pid, running_cluster
from tests.e2e.deployer import SLOW_COMPILE, BuildpackHost, Deployer
from tests.e2e.probe_app import probe_app
from tests.e2e.swarm_helpers import (
    Poller,
    answering_hosts,
    force_update,
    running_containers,
    swarm_settings,
)
from tests.helpers import ScalingoClient, wait_for

pytestmark = pytest.mark.docker

WORKER_NAMES = {"worker-1": "sw1", "worker-2": "sw2"}
APPS = ["fleet-alpha", "fleet-bravo", "fleet-charlie", "fleet-delta"]


@pytest.fixture
def swarm_cluster(
    tmp_path: Path,
    postgres_url: str,
    test_stack: str,
    test_registry: RunningRegistry,
    swarm_prefix: str,
    docker_client: docker.DockerClient,
) -> Iterator[tuple[Cluster, Deployer, BuildpackHost]]:
    settings = swarm_settings(test_registry, swarm_prefix)
    try:
        with running_cluster(
            tmp_path, postgres_url, workers=WORKER_NAMES, worker_env=settings, username="sue"
        ) as running:
            yield running
    finally:
        # The services outlive dockyard's processes (that is the point): this test's go.
        for app in APPS:
            for found in docker_client.api.services(
                filters={"label": f"dockyard.app={app}", "name": swarm_prefix}
            ):
                docker_client.api.remove_service(found["ID"])
            # The killed worker's build container (it would kill itself at the
            # build's time limit).
            for container in docker_client.containers.list(
                all=True, filters={"label": f"{LABEL_BUILD}={app}"}
            ):
                container.remove(force=True)
        dockerenv.remove_swarm_rules()


def test_a_swarm_driven_by_separate_processes(
    swarm_cluster: tuple[Cluster, Deployer, BuildpackHost],
    docker_client: docker.DockerClient,
    swarm_prefix: str,
) -> None:
    processes, deployer, buildpacks = swarm_cluster
    for app in APPS:
        deployer.create_app(app)
    # Two rounds of four apps: eight builds shared by two workers, each app's second
    # release switched to by whichever worker built it (a hand-over when it is the other).
    for round_ in (1, 2):
        started = {app: deployer.start(app, archive=probe_app(f"{app}-v{round_}")) for app in APPS}
        for app, deployment_id in started.items():
            status, output = deployer.wait(app, deployment_id, timeout=180)
            assert status == "success", output
        for app in APPS:
            wanted = f"{app}-v{round_}\n"

            def served(app: str = app, wanted: str = wanted) -> bool:
                return deployer.get(app).text == wanted

            wait_for(served, timeout=20, what=f"{wanted.strip()} through the router process")
    with psycopg.connect(processes.database_url) as conn:
        owners = {row[0] for row in conn.execute("SELECT owner FROM routes")}
    assert owners and owners <= set(WORKER_NAMES.values())

    # A redeploy through Swarm's rolling update, watched through the router process.
    with Poller(processes.router_port, "fleet-alpha") as poller:
        status, output = deployer.deploy("fleet-alpha", archive=probe_app("fleet-alpha-v3"))
        assert status == "success", output
        wait_for(
            lambda: "fleet-alpha-v3\n" in poller.seen, timeout=20, what="v3 through the router"
        )
    assert poller.failures == [] and poller.answered > 0

    # scale web:3, asked of the api process and done by the app's worker.
    deployer.scale("fleet-bravo", 3)
    wait_for(
        lambda: len(answering_hosts(deployer, "fleet-bravo")) == 3,
        timeout=40,
        what="three tasks of fleet-bravo answering through the router",
    )
    with deployer.client() as client:
        ps = client.get("/v1/apps/fleet-bravo/ps").json()["containers"]
    assert sorted((c["label"], c["state"]) for c in ps) == [
        ("web-1", "running"), ("web-2", "running"), ("web-3", "running")
    ]  # fmt: skip

    # ``run --detached``, asked of the api: a container of the release on the app's
    # worker's engine, its output in the app's logs read through the api.
    official = ScalingoClient(processes.api_url, deployer.token)
    official.exchange()
    label = ops.start_run(
        official, "fleet-bravo", 'echo "one-off says $EXTRA"', detached=True, env={"EXTRA": "hi"}
    ).container["label"]
    url = ops.logs_url(official, "fleet-bravo")
    wait_for(
        lambda: f"[{label}] one-off says hi" in ops.dump(url, lines=50, filter=label).text,
        timeout=30,
        what="the one-off's output through the api",
    )

    # A task's container killed, then every task replaced: Swarm heals, the router follows.
    victim = running_containers(docker_client, swarm_prefix, "fleet-bravo")[0]
    docker_client.containers.get(victim).kill()
    wait_for(
        lambda: (
            victim not in running_containers(docker_client, swarm_prefix, "fleet-bravo")
            and len(answering_hosts(deployer, "fleet-bravo")) == 3
        ),
        timeout=40,
        what="the killed task replaced and answering",
    )
    before = set(running_containers(docker_client, swarm_prefix, "fleet-bravo"))
    force_update(docker_client, swarm_prefix, "fleet-bravo")
    wait_for(
        lambda: (
            not before & set(running_containers(docker_client, swarm_prefix, "fleet-bravo"))
            and len(answering_hosts(deployer, "fleet-bravo")) == 3
        ),
        timeout=60,
        what="every task replaced and answering",
    )

    # A worker killed mid-build: the deployment ends as aborted, saying why; the apps,
    # which Swarm runs, keep answering through the router, whoever deployed them.
    slow = deployer.start("fleet-charlie", archive=buildpacks.app_using("slow", SLOW_COMPILE))
    deployer.wait_for_output("fleet-charlie", slow, "started")
    pid = lease_owner_pid(processes.database_url, slow)
    victim_worker = next(name for name, p in processes.processes.items() if p.pid == pid)
    processes.kill(victim_worker)
    status, output = deployer.wait("fleet-charlie", slow, timeout=60)
    assert status == "aborted", output
    assert "its worker stopped while it ran" in output
    for app in APPS:
        wanted = {"fleet-alpha": "fleet-alpha-v3\n"}.get(app, f"{app}-v2\n")
        assert deployer.get(app).text == wanted
    # The app's next deployment proceeds on the worker left.
    status, output = deployer.deploy("fleet-charlie", archive=probe_app("fleet-charlie-v3"))
    assert status == "success", output
    wait_for(
        lambda: deployer.get("fleet-charlie").text == "fleet-charlie-v3\n",
        timeout=20,
        what="fleet-charlie-v3 through the router",
    )
    survivor = next(name for name in WORKER_NAMES if name != victim_worker)
    with psycopg.connect(processes.database_url) as conn:
        row = conn.execute("SELECT owner FROM routes WHERE app = 'fleet-charlie'").fetchone()
    assert row is not None and row[0] == WORKER_NAMES[survivor]

    # An upgrade: each process stopped and started again in turn. Swarm runs the apps and
    # the routes are in the database, so an app polled through the router all along
    # never fails; the worker started again answers for its apps.
    processes.start(
        victim_worker, "worker", DOCKYARD_WORKER_NAME=WORKER_NAMES[victim_worker],
        **processes.worker_env,
    )  # fmt: skip
    with Poller(processes.router_port, "fleet-bravo") as poller:
        processes.restart("api")
        wait_for(lambda: api_answers(processes), timeout=30, what="the new api to answer")
        for worker, name in WORKER_NAMES.items():
            # Ready once it listens to the api's calls and has taken its apps back.
            processes.restart(worker, ready=f"dockyard worker {name}:")
        deployer.scale("fleet-bravo", 2)  # its owner, started again, does it
        wait_for(
            lambda: len(answering_hosts(deployer, "fleet-bravo")) == 2,
            timeout=40,
            what="fleet-bravo scaled to two after the workers' restarts",
        )
    assert poller.failures == [] and poller.answered > 0
    processes.restart("router")
    latest = {"fleet-alpha": "v3", "fleet-charlie": "v3"}
    for app in APPS:

        def back(app: str = app, wanted: str = f"{app}-{latest.get(app, 'v2')}\n") -> bool:
            processes.check_alive()
            try:
                return deployer.get(app).text == wanted
            except httpx.TransportError:
                return False  # the new router is not listening yet

        wait_for(back, timeout=20, what=f"{app} through the restarted router")

    # The worker that answers for fleet-bravo killed for good: Swarm keeps serving the
    # app, and once the worker has been silent for two leases the other one adopts it
    # (services/presence.py): the api's calls for it are answered again.
    owner = route_owner(processes, "fleet-bravo")
    gone = next(process for process, name in WORKER_NAMES.items() if name == owner)
    processes.kill(gone)
    assert deployer.get("fleet-bravo").status_code == 200
    adopter = next(name for process, name in WORKER_NAMES.items() if process != gone)
    wait_for(
        lambda: route_owner(processes, "fleet-bravo") == adopter,
        timeout=30,
        what="fleet-bravo adopted by the worker left",
    )

    # Asked at once: from the moment the route names the adopter, the api's questions
    # about the app wait for it to have read the app's state, rather than hear "nothing".
    with deployer.client() as client:
        ps = client.get("/v1/apps/fleet-bravo/ps").json()["containers"]
    assert sorted((c["label"], c["state"]) for c in ps) == [("web-1", "running"), ("web-2", "running")]
    deployer.scale("fleet-bravo", 1)
    wait_for(
        lambda: len(answering_hosts(deployer, "fleet-bravo", tries=10)) == 1,
        timeout=40,
        what="fleet-bravo scaled to one by the worker that adopted it",
    )


def route_owner(processes: Cluster, app: str) -> str | None:
    with psycopg.connect(processes.database_url) as conn:
        row = conn.execute("SELECT owner FROM routes WHERE app = %s", (app,)).fetchone()
    return None if row is None else str(row[0])
