"""The swarm runtime end to end: a real ``dockyard serve`` (DOCKYARD_RUNTIME=swarm), a
real single-node swarm, a real registry with authentication. Deploys through the API and
answers through the router; ``scale web:3`` gives three tasks that all answer; a task
replaced by ``service update --force`` or killed is healed and the router follows; a
redeploy loses no request; a release that does not boot is rolled back by Swarm with the
old one serving; and a task reaches neither another app nor the host's services.

Swarm's health checks, update monitor and restart delay are 1 s here
(``DOCKYARD_SWARM_CHECK_SECONDS``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from tests import dockerenv
from tests.conftest import ServerProcess, server_process
from tests.dockerenv import RunningRegistry
from tests.e2e import scalingo_ops as ops
from tests.e2e.deployer import Deployer
from tests.e2e.probe_app import probe_app
from tests.e2e.swarm_helpers import (
    Poller,
    answering_hosts,
    force_update,
    running_containers,
    service,
    swarm_settings,
)
from tests.helpers import ScalingoClient, tar_gz_from_files, wait_for

pytestmark = pytest.mark.docker


def swarm_server(base: Path, running: RunningRegistry, prefix: str) -> ServerProcess:
    return server_process(base, **swarm_settings(running, prefix))


@pytest.fixture(scope="module")
def deployer(
    tmp_path_factory: pytest.TempPathFactory,
    test_stack: str,
    test_registry: RunningRegistry,
    swarm_prefix: str,
) -> Iterator[Deployer]:
    server = swarm_server(tmp_path_factory.mktemp("swarm-server"), test_registry, swarm_prefix)
    server.start()
    try:
        yield Deployer(server=server, token=server.create_user("sam"))
    finally:
        server.stop()
        server.remove_data()
        # The server closed the host to Swarm's tasks; later tests expect it as it was.
        dockerenv.remove_swarm_rules()


def test_deploy_scale_and_heal_through_the_router(
    deployer: Deployer, docker_client: docker.DockerClient, swarm_prefix: str
) -> None:
    deployer.create_app("swarm-app")
    deployer.deploy_ok("swarm-app", probe_app("from-swarm"))
    assert deployer.get("swarm-app").text == "from-swarm\n"
    web = service(docker_client, swarm_prefix, "swarm-app")
    task = web["Spec"]["TaskTemplate"]
    assert task["Resources"]["Limits"]["MemoryBytes"] == 512 * 1024**2  # size M
    assert task["ContainerSpec"]["User"] != "" and not task["ContainerSpec"]["User"].startswith("0")
    assert web["Spec"]["UpdateConfig"]["Order"] == "start-first"

    deployer.scale("swarm-app", 3)
    wait_for(
        lambda: len(answering_hosts(deployer, "swarm-app")) == 3,
        timeout=30,
        what="three tasks answering through the router",
    )
    with deployer.client() as client:
        ps = client.get("/v1/apps/swarm-app/ps").json()["containers"]
    assert sorted((c["label"], c["state"]) for c in ps if c["type"] == "web") == [
        ("web-1", "running"), ("web-2", "running"), ("web-3", "running")
    ]

    # A task's container killed: Swarm starts another, the router follows.
    victim = running_containers(docker_client, swarm_prefix, "swarm-app")[0]
    docker_client.containers.get(victim).kill()
    wait_for(
        lambda: len(running_containers(docker_client, swarm_prefix, "swarm-app")) == 3
        and victim not in running_containers(docker_client, swarm_prefix, "swarm-app")
        and len(answering_hosts(deployer, "swarm-app")) == 3,
        timeout=30,
        what="the killed task replaced and answering",
    )
    before = set(running_containers(docker_client, swarm_prefix, "swarm-app"))
    # Every task replaced (docker service update --force): still three answering.
    force_update(docker_client, swarm_prefix, "swarm-app")
    wait_for(
        lambda: not before & set(running_containers(docker_client, swarm_prefix, "swarm-app"))
        and len(answering_hosts(deployer, "swarm-app")) == 3,
        timeout=40,
        what="all tasks replaced and answering",
    )
    deployer.scale("swarm-app", 1)  # whichever slots Swarm keeps, the operation ends
    wait_for(
        lambda: len(answering_hosts(deployer, "swarm-app", tries=10)) == 1,
        timeout=20,
        what="one task left answering",
    )


def test_a_redeploy_loses_no_request(deployer: Deployer) -> None:
    deployer.create_app("rolling-app")
    deployer.deploy_ok("rolling-app", probe_app("version-one"))
    with Poller(deployer.server.router_port, "rolling-app") as poller:
        deployer.deploy_ok("rolling-app", probe_app("version-two"))
        wait_for(
            lambda: poller.seen == {"version-one\n", "version-two\n"}, timeout=10, what="v2"
        )
        # The old task drains, then stops: requests keep succeeding meanwhile.
        wait_for(
            lambda: deployer.get("rolling-app").text == "version-two\n"
            and all(deployer.get("rolling-app").text == "version-two\n" for _ in range(10)),
            timeout=15,
            what="only the new release serving",
        )
    assert poller.failures == []


def test_a_release_that_does_not_boot_is_rolled_back(deployer: Deployer) -> None:
    deployer.create_app("failing-swarm")
    deployer.deploy_ok("failing-swarm", probe_app("still-here"))
    exits = tar_gz_from_files(
        {"Procfile": "web: python3 -c 'import sys; print(\"cannot find DATABASE_URL\", flush=True); sys.exit(3)'\n"}
    )
    status, output = deployer.deploy("failing-swarm", archive=exits)
    assert status == "crashed-error", output
    assert "exited with status 3" in output, output
    assert "cannot find DATABASE_URL" in output, output
    assert deployer.get("failing-swarm").text == "still-here\n"
    never_binds = tar_gz_from_files(
        {"Procfile": "web: python3 -c 'import time; print(\"not listening\", flush=True); time.sleep(600)'\n"}
    )
    status, output = deployer.deploy("failing-swarm", archive=never_binds)
    assert status == "timeout-error", output
    assert "5 seconds" in output, output
    assert "[web] not listening" in output, output  # what the task was doing
    assert deployer.get("failing-swarm").text == "still-here\n"


def test_a_task_reaches_neither_another_app_nor_the_host(
    deployer: Deployer, docker_client: docker.DockerClient, swarm_prefix: str
) -> None:
    deployer.create_app("swarm-victim")
    deployer.deploy_ok("swarm-victim", probe_app("victim"))
    (victim,) = [
        t for t in docker_client.api.tasks(
            filters={"service": f"{swarm_prefix}-swarm-victim-web", "desired-state": "running"}
        )
    ]
    victim_port = victim["Status"]["PortStatus"]["Ports"][0]["PublishedPort"]
    victim_container = docker_client.containers.get(victim["Status"]["ContainerStatus"]["ContainerID"])
    victim_ip = next(
        n["IPAddress"]
        for n in victim_container.attrs["NetworkSettings"]["Networks"].values()
        if n["IPAddress"]
    )
    node_ip = docker_client.info()["Swarm"]["NodeAddr"]
    with socket.create_server(("0.0.0.0", 0)) as host_service:
        host_port = host_service.getsockname()[1]
        deployer.create_app("swarm-prober")
        deployer.deploy_ok("swarm-prober", probe_app("prober"))
        targets = [
            f"{victim_ip}:5000",  # the other app's task on its own overlay network
            f"GATEWAY:{victim_port}",  # its published port through the host
            f"{node_ip}:{victim_port}",
            f"GATEWAY:{host_port}",  # a service of the host
            f"{node_ip}:{host_port}",
            f"GATEWAY:{deployer.server.url.rsplit(':', 1)[1]}",  # dockyard's API
            "127.0.0.1:5000",  # the control: its own port answers
        ]
        report = deployer.get("swarm-prober", "/probe/" + ",".join(targets)).text
    lines = report.splitlines()
    assert len(lines) == len(targets), report
    assert all(" closed " in line for line in lines[:-1]), report
    assert lines[-1].endswith(" open"), report
    # The probe's targets are real: the host reaches the victim's published port.
    assert httpx.get(f"http://{node_ip}:{victim_port}/", timeout=5).text == "victim\n"


def test_logs_restart_one_offs_and_a_server_restart(
    deployer: Deployer, docker_client: docker.DockerClient, swarm_prefix: str
) -> None:
    deployer.create_app("daily-swarm")
    deployer.deploy_ok("daily-swarm", probe_app("before"))
    deployer.get("daily-swarm", "/seen-in-the-logs")
    client = ScalingoClient(deployer.server.url, deployer.token)
    client.exchange()
    url = ops.logs_url(client, "daily-swarm")
    wait_for(
        lambda: "/seen-in-the-logs" in ops.dump(url, lines=50).text,
        timeout=15,
        what="the task's output in the app's logs",
    )
    assert "[web-1] booting web on 5000" in ops.dump(url, lines=50).text

    # The variables as they are now, by a rolling restart.
    with deployer.client() as api:
        body = {"variable": {"name": "MESSAGE", "value": "after"}}
        assert api.post("/v1/apps/daily-swarm/variables", json=body).status_code == 201
        assert api.post("/v1/apps/daily-swarm/restart", json={"scope": ["web"]}).status_code == 202
    # The Procfile's MESSAGE='before' wins over the variable in the app's answer: the
    # restart shows in the new task's environment.
    wait_for(
        lambda: len(running_containers(docker_client, swarm_prefix, "daily-swarm")) == 1
        and "MESSAGE=after" in _env_of(docker_client, swarm_prefix, "daily-swarm")
        and deployer.get("daily-swarm").text == "before\n",
        timeout=30,
        what="the restarted task with the new variable, the old one gone",
    )

    # A one-off: a container of the release's image; its output in the logs.
    started = ops.start_run(client, "daily-swarm", 'echo "one-off says $EXTRA"', detached=True,
                            env={"EXTRA": "hello"})
    label = started.container["label"]
    wait_for(
        lambda: f"[{label}] one-off says hello" in ops.dump(url, lines=50, filter=label).text,
        timeout=30,
        what="the one-off's output",
    )

    # dockyard restarts; Swarm's tasks do not: the same containers serve afterwards.
    before = running_containers(docker_client, swarm_prefix, "daily-swarm")
    deployer.server.stop()
    deployer.server.start()
    wait_for(
        lambda: deployer.get("daily-swarm").status_code == 200,
        timeout=20,
        what="the app routed again",
    )
    assert running_containers(docker_client, swarm_prefix, "daily-swarm") == before


def _env_of(client: docker.DockerClient, prefix: str, app: str) -> str:
    return "\n".join(
        "\n".join(client.containers.get(cid).attrs["Config"]["Env"])
        for cid in running_containers(client, prefix, app)
    )


def test_rename_and_delete_move_and_remove_the_services(
    deployer: Deployer, docker_client: docker.DockerClient, swarm_prefix: str
) -> None:
    deployer.create_app("named-swarm")
    deployer.deploy_ok("named-swarm", probe_app("named"))
    with deployer.client() as client:
        renamed = client.post(
            "/v1/apps/named-swarm/rename",
            json={"current_name": "named-swarm", "new_name": "renamed-swarm"},
        )
        assert renamed.status_code == 200, renamed.text
    wait_for(
        lambda: deployer.get("renamed-swarm").text == "named\n",
        timeout=30,
        what="the renamed app served",
    )
    assert docker_client.api.services(filters={"name": f"{swarm_prefix}-named-swarm-web"}) == []
    with deployer.client() as client:
        assert client.delete("/v1/apps/renamed-swarm").status_code == 204
    assert docker_client.api.services(filters={"name": f"{swarm_prefix}-renamed-swarm-web"}) == []
    assert deployer.get("renamed-swarm").status_code == 404
