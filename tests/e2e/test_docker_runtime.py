"""The docker runtime end to end, on a real ``dockyard serve`` (DOCKYARD_RUNTIME=docker),
a real Docker engine and a real registry with authentication: deploy, the zero-downtime
switch, failed boots keeping the old release, a killed instance restarted, a server
restart, images in the registry (and old ones deleted), the container's limits, and
what an app cannot reach from its network.

Apps bind 0.0.0.0 here, as in any container: the container's loopback is its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from dockyard.runtime.docker.registry import Registry
from tests.conftest import ServerProcess, server_process
from tests.dockerenv import RunningRegistry
from tests.e2e import scalingo_ops
from tests.e2e.deployer import Deployer
from tests.e2e.probe_app import probe_app
from tests.helpers import tar_gz_from_files, wait_for
from tests.netns_helpers import outside_host

pytestmark = pytest.mark.docker

def docker_server(base: Path, running: RunningRegistry, **env: str) -> ServerProcess:
    return server_process(
        base,
        DOCKYARD_RUNTIME="docker",
        DOCKYARD_STACK="minimal",
        DOCKYARD_REGISTRY=f"http://{running.access.address}",
        DOCKYARD_REGISTRY_USER=running.access.username,
        DOCKYARD_REGISTRY_PASSWORD=running.access.password,
        DOCKYARD_BOOT_TIMEOUT="6",
        # DOCKYARD_RELEASES_KEPT left to its default here (the current release and the one
        # it replaced), which the retention test counts.
        DOCKYARD_BLOCKED_NETWORKS=BLOCKED_RANGE,
        **env,
    )



@pytest.fixture(scope="module")
def deployer(
    tmp_path_factory: pytest.TempPathFactory, test_stack: str, test_registry: RunningRegistry
) -> Iterator[Deployer]:
    server = docker_server(tmp_path_factory.mktemp("docker-server"), test_registry)
    server.start()
    try:
        yield Deployer(server=server, token=server.create_user("dora"))
    finally:
        server.stop()
        server.remove_data()


@pytest.fixture
def registry(test_registry: RunningRegistry) -> Iterator[Registry]:
    client = test_registry.client()
    try:
        yield client
    finally:
        client.close()


def containers(client: docker.DockerClient, app: str) -> list[docker.models.containers.Container]:
    return client.containers.list(filters={"label": f"dockyard.app={app}"})


def test_a_deployment_runs_in_a_limited_container_from_its_pushed_image(
    deployer: Deployer, registry: Registry, docker_client: docker.DockerClient
) -> None:
    deployer.create_app("boxed-app")
    deployment_id = deployer.deploy_ok("boxed-app", probe_app("boxed"))
    assert deployer.get("boxed-app").text == "boxed\n"

    assert "dockyard/boxed-app" in registry.catalog()
    assert registry.tags("dockyard/boxed-app") == [deployment_id]
    with deployer.client() as client:
        image_size = client.get(f"/v1/apps/boxed-app/deployments/{deployment_id}").json()[
            "deployment"
        ]["image_size"]
    assert image_size == registry.layer_sizes("dockyard/boxed-app", deployment_id)[-1] > 0

    (container,) = containers(docker_client, "boxed-app")
    host = container.attrs["HostConfig"]
    assert host["Memory"] == 512 * 1024**2  # size M
    assert host["PidsLimit"] == 256
    assert host["CapDrop"] == ["ALL"]
    assert host["ReadonlyRootfs"] is True
    assert host["RestartPolicy"]["Name"] in ("", "no")
    assert container.attrs["Config"]["User"] != "" and not container.attrs["Config"][
        "User"
    ].startswith("0")
    assert container.image.tags == [f"{registry.access.address}/dockyard/boxed-app:{deployment_id}"]


def test_second_deployment_switches_with_no_failed_request(deployer: Deployer) -> None:
    deployer.create_app("switch-app")
    deployer.deploy_ok("switch-app", probe_app("version-one"))
    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def poll() -> None:
        port = deployer.server.router_port
        with httpx.Client(headers={"Host": f"switch-app.localhost:{port}"}, timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.get(f"http://127.0.0.1:{port}/")
                    if response.status_code != 200:
                        failures.append(f"{response.status_code}: {response.text[:80]}")
                    else:
                        seen.add(response.text)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        deployer.deploy_ok("switch-app", probe_app("version-two"))
        wait_for(lambda: "version-two\n" in seen, timeout=10, what="the new release to serve")
    finally:
        stop.set()
        poller.join()
    assert failures == []
    assert seen == {"version-one\n", "version-two\n"}


def test_failed_boots_say_why_and_the_old_release_keeps_serving(deployer: Deployer) -> None:
    deployer.create_app("failing-app")
    deployer.deploy_ok("failing-app", probe_app("still-here"))
    never_binds = tar_gz_from_files(
        {"Procfile": "web: python3 -c 'import time; print(\"not listening\", flush=True); time.sleep(600)'\n"}
    )
    status, output = deployer.deploy("failing-app", archive=never_binds)
    assert status == "timeout-error"
    assert "6 seconds" in output, output
    exits = tar_gz_from_files(
        {"Procfile": "web: python3 -c 'import sys; print(\"cannot find DATABASE_URL\", flush=True); sys.exit(3)'\n"}
    )
    status, output = deployer.deploy("failing-app", archive=exits)
    assert status == "crashed-error"
    assert "cannot find DATABASE_URL" in output
    assert deployer.get("failing-app").text == "still-here\n"


def test_a_killed_instance_is_restarted_and_its_output_reaches_the_app_logs(
    deployer: Deployer, docker_client: docker.DockerClient
) -> None:
    deployer.create_app("killed-app")
    deployer.deploy_ok("killed-app", probe_app("back-again"))
    deployer.get("killed-app", "/before-the-kill")
    (container,) = containers(docker_client, "killed-app")
    init_pid = container.attrs["State"]["Pid"]
    app_pids = [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _parent(entry) == init_pid
    ]
    for pid in app_pids:
        os.kill(pid, signal.SIGKILL)  # as the OOM killer would
    wait_for(
        lambda: [c.id for c in containers(docker_client, "killed-app")] not in ([], [container.id])
        and deployer.get("killed-app").status_code == 200,
        timeout=20,
        what="a new container to serve",
    )
    with deployer.client() as client:
        url = client.get("/v1/apps/killed-app/logs").json()["logs_url"]
    logs = scalingo_ops.dump(url, lines=100).text
    assert "/before-the-kill" in logs
    assert logs.count("booting web on") >= 2


METADATA = "169.254.169.254"
BLOCKED_RANGE = "203.0.113.192/26"
BLOCKED_ADDRESS = "203.0.113.200"


def test_an_app_reaches_neither_other_apps_nor_the_hosts_services_nor_the_registry(
    deployer: Deployer, docker_client: docker.DockerClient, test_registry: RunningRegistry
) -> None:
    deployer.create_app("victim-app")
    deployer.deploy_ok("victim-app", probe_app("victim"))
    (victim,) = containers(docker_client, "victim-app")
    victim_ip = next(iter(victim.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    victim_port = next(
        e.split("=", 1)[1] for e in victim.attrs["Config"]["Env"] if e.startswith("PORT=")
    )
    with (
        socket.create_server(("0.0.0.0", 0)) as host_service,
        # Beyond the host, where a metadata service and a range the operator blocked
        # answer (as on a cloud machine); and an address apps may reach, as a control.
        outside_host(
            "dytest-dk-out", host_if="dytest-dkout", network="198.51.100.12/30",
            extra=(METADATA, BLOCKED_ADDRESS),
        ) as outside,
    ):  # fmt: skip
        outside.listen(80, "outside")
        host_port = host_service.getsockname()[1]
        registry_port = test_registry.access.address.rsplit(":", 1)[1]
        deployer.create_app("prober-app")
        deployer.deploy_ok("prober-app", probe_app("prober"))
        targets = [
            f"{victim_ip}:{victim_port}",
            f"GATEWAY:{host_port}",
            f"GATEWAY:{registry_port}",
            f"127.0.0.1:{registry_port}",
            f"GATEWAY:{deployer.server.url.rsplit(':', 1)[1]}",
            f"{METADATA}:80",
            f"{BLOCKED_ADDRESS}:80",
        ]
        (prober,) = containers(docker_client, "prober-app")
        own_port = next(
            e.split("=", 1)[1] for e in prober.attrs["Config"]["Env"] if e.startswith("PORT=")
        )
        # The probe's controls: its own port, and the outside beyond the host, are open.
        controls = [f"127.0.0.1:{own_port}", f"{outside.address}:80"]
        report = deployer.get("prober-app", "/probe/" + ",".join(targets + controls)).text
    lines = report.splitlines()
    assert len(lines) == len(targets) + len(controls), report
    assert all(" closed " in line for line in lines[: len(targets)]), report
    assert all(line.endswith(" open") for line in lines[len(targets) :]), report
    # The probe works: the host's own address of the victim's endpoint answers.
    assert httpx.get(f"http://{victim_ip}:{victim_port}/", timeout=5).text == "victim\n"


def test_only_the_current_and_previous_images_stay_in_the_registry(
    deployer: Deployer, registry: Registry, docker_client: docker.DockerClient
) -> None:
    deployer.create_app("pruned-app")
    ids = [deployer.deploy_ok("pruned-app", probe_app(f"v{n}")) for n in range(3)]
    oldest = f"{registry.access.address}/dockyard/pruned-app:{ids[0]}"

    def pruned() -> bool:
        # The engine's raw list: the SDK's asks for each image, which may be going.
        local = {tag for image in docker_client.api.images() for tag in image["RepoTags"] or []}
        in_registry = sorted(registry.tags("dockyard/pruned-app"))
        return in_registry == sorted(ids[1:]) and oldest not in local

    # The oldest goes once it has drained and stopped: from the registry and the engine.
    wait_for(pruned, timeout=20, what="only the current and previous images kept")
    assert deployer.get("pruned-app").text == "v2\n"

    with deployer.client() as client:
        assert client.delete("/v1/apps/pruned-app").status_code == 204
    assert registry.tags("dockyard/pruned-app") == []  # a deleted app leaves no image
    # The release replaced last may still be draining: it stops on its own schedule.
    wait_for(
        lambda: containers(docker_client, "pruned-app") == [],
        timeout=20,
        what="the deleted app's containers to go",
    )


def test_a_restarted_server_finds_its_containers_running(
    tmp_path: Path, test_stack: str, test_registry: RunningRegistry
) -> None:
    server = docker_server(tmp_path, test_registry)
    server.start()
    try:
        deployer = Deployer(server=server, token=server.create_user("hugo"))
        deployer.create_app("survivor-app")
        deployer.deploy_ok("survivor-app", probe_app("survivor"))
        server.stop(kill=True)  # a crash: the containers keep running meanwhile
        server.start()
        wait_for(
            lambda: deployer.get("survivor-app").status_code == 200,
            timeout=30,
            what="the app to come back",
        )
        assert deployer.get("survivor-app").text == "survivor\n"
    finally:
        server.stop()
        server.remove_data()


def _parent(proc_entry: Path) -> int | None:
    with contextlib.suppress(OSError):
        data = (proc_entry / "stat").read_bytes()
        return int(data[data.rindex(b")") + 2 :].split()[1])
    return None


def test_the_same_runtime_deploys_through_podmans_socket(
    tmp_path: Path,
    podman: tuple[docker.DockerClient, str],
    podman_stack: str,
    test_registry: RunningRegistry,
) -> None:
    podman_client, socket_url = podman
    server = docker_server(tmp_path, test_registry, DOCKYARD_DOCKER_HOST=socket_url)
    server.start()
    try:
        deployer = Deployer(server=server, token=server.create_user("pia"))
        deployer.create_app("podman-app")
        deployment_id = deployer.deploy_ok("podman-app", probe_app("podman"))
        assert deployer.get("podman-app").text == "podman\n"
        (container,) = containers(podman_client, "podman-app")
        assert container.attrs["HostConfig"]["Memory"] == 512 * 1024**2
        registry = test_registry.client()
        try:
            assert registry.tags("dockyard/podman-app") == [deployment_id]
        finally:
            registry.close()
    finally:
        server.stop()
        server.remove_data()

