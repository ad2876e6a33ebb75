"""Builds on the docker runtime run in containers of the stack image, end to end on a real
``dockyard serve`` (DOCKYARD_RUNTIME=docker), a real engine and a real registry: what a
build sees (the stack, not the host), a dependency installed from the package index in
the build container, the build's memory and time limits ending in words with the previous
release still serving, and a cancelled build's container gone.
"""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from tests.dockerenv import RunningRegistry
from tests.e2e.deployer import BuildpackHost, Deployer, buildpack_archive, file_server
from tests.e2e.probe_app import probe_app
from tests.e2e.test_docker_runtime import docker_server
from tests.helpers import tar_gz_from_files, wait_for

pytestmark = pytest.mark.docker

BUILD_TIMEOUT = 15
BUILD_MEMORY_MB = 256

# Run after the Python buildpack: what the build container is, and what it can reach.
INSPECT = """#!/bin/sh
echo "stack: $(. /etc/os-release; echo "$ID $VERSION_CODENAME")"
test -e /usr/bin/bwrap && echo "host-only file: visible" || echo "host-only file: absent"
test -e /.dockerenv && echo "container: docker"
echo "uid: $(id -u)"
grep CapEff /proc/self/status
/app/.venv/bin/python -c 'import six; print("six imported:", six.__version__)'
python3 - <<'EOF'
import socket
with open("/proc/net/route") as routes:
    gateway = next(
        socket.inet_ntoa(bytes.fromhex(fields[2])[::-1])
        for fields in (line.split() for line in routes.read().splitlines()[1:])
        if fields[1] == "00000000"
    )
try:
    socket.create_connection((gateway, API_PORT), timeout=2).close()
    print("host API: open")
except OSError as exc:
    print("host API: closed", exc.__class__.__name__)
EOF
"""


@pytest.fixture(scope="module")
def buildpack_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildpackHost]:
    directory = tmp_path_factory.mktemp("buildpacks")
    with file_server(directory) as port:
        yield BuildpackHost(directory=directory, port=port)


@pytest.fixture(scope="module")
def deployer(
    tmp_path_factory: pytest.TempPathFactory,
    test_stack: str,
    test_registry: RunningRegistry,
    buildpack_host: BuildpackHost,
) -> Iterator[Deployer]:
    server = docker_server(
        tmp_path_factory.mktemp("docker-builds"),
        test_registry,
        DOCKYARD_FETCH_ALLOW=f"127.0.0.1:{buildpack_host.port}",
        DOCKYARD_BUILD_TIMEOUT=str(BUILD_TIMEOUT),
        DOCKYARD_BUILD_MEMORY_MB=str(BUILD_MEMORY_MB),
    )
    server.start()
    try:
        yield Deployer(server=server, token=server.create_user("bea"))
    finally:
        server.stop()
        server.remove_data()


def build_containers(client: docker.DockerClient, app: str) -> list[str]:
    return [
        container.name
        for container in client.containers.list(
            all=True, filters={"label": f"dockyard.build-of={app}"}
        )
    ]


def test_a_build_runs_in_a_stack_container_and_installs_from_the_package_index(
    deployer: Deployer, buildpack_host: BuildpackHost
) -> None:
    api_port = deployer.server.url.rsplit(":", 1)[1]
    (buildpack_host.directory / "inspect.tar.gz").write_bytes(
        buildpack_archive(INSPECT.replace("API_PORT", api_port))
    )
    url = f"http://127.0.0.1:{buildpack_host.port}/inspect.tar.gz"
    archive = tar_gz_from_files(
        {
            ".buildpacks": f"python\n{url}\n",
            "requirements.txt": "six==1.16.0\n",
            "Procfile": "web: python -c 'import six, http.server as h;"
            ' h.test(h.SimpleHTTPRequestHandler, port=int(__import__("os").environ["PORT"]))\'\n',
            "index.html": "built in a container\n",
        }
    )
    deployer.create_app("contained-app")
    status, output = deployer.deploy("contained-app", archive=archive)
    assert status == "success", output
    assert "stack: debian bookworm" in output
    assert "host-only file: absent" in output  # the host has bwrap; the stack does not
    assert "container: docker" in output
    assert "uid: 0" not in output
    assert "CapEff:\t0000000000000000" in output
    assert "six imported: 1.16.0" in output  # uv reached the index from the container
    assert "host API: closed" in output, output
    assert deployer.get("contained-app").text == "built in a container\n"


def test_a_rebuild_with_unchanged_dependencies_pushes_the_apps_layer_alone(
    deployer: Deployer, test_registry: RunningRegistry
) -> None:
    deployer.create_app("rebuilt-app")
    layers = []
    for version in ("one", "two"):
        archive = tar_gz_from_files(
            {
                "requirements.txt": "six==1.16.0\n",
                "Procfile": "web: python -m http.server $PORT\n",
                "index.html": f"version {version}\n",
            }
        )
        deployment_id = deployer.deploy_ok("rebuilt-app", archive)
        registry = test_registry.client()
        try:
            _, manifest = registry.manifest("dockyard/rebuilt-app", deployment_id)
        finally:
            registry.close()
        layers.append([layer["digest"] for layer in manifest["layers"]])
    assert deployer.get("rebuilt-app").text == "version two\n"
    # The stack and the virtualenv's layer are the first release's; the app's is new.
    assert len(layers[1]) == 3
    assert layers[1][:2] == layers[0][:2] and layers[1][2] != layers[0][2]


def test_a_build_over_its_memory_or_time_fails_in_words_and_the_old_release_serves(
    deployer: Deployer, buildpack_host: BuildpackHost, docker_client: docker.DockerClient
) -> None:
    deployer.create_app("limited-app")
    deployer.deploy_ok("limited-app", probe_app("first release"))

    hungry = buildpack_host.app_using(
        "hungry", "#!/bin/sh\necho allocating\npython3 -c \"b = b'x' * (600 * 1024 * 1024)\"\n"
    )
    status, output = deployer.deploy("limited-app", archive=hungry)
    assert status == "build-error", output
    assert f"did it run out of memory? builds may use {BUILD_MEMORY_MB} MiB" in output

    slow = buildpack_host.app_using("slow", "#!/bin/sh\necho started\nexec sleep 600\n")
    status, output = deployer.deploy("limited-app", archive=slow)
    assert status == "build-error", output
    assert f"The build exceeded {BUILD_TIMEOUT} seconds and was stopped" in output

    assert deployer.get("limited-app").text == "first release\n"
    assert build_containers(docker_client, "limited-app") == []


def test_cancelling_a_build_kills_its_container(
    deployer: Deployer, buildpack_host: BuildpackHost, docker_client: docker.DockerClient
) -> None:
    deployer.create_app("cancelled-app")
    slow = buildpack_host.app_using("sleeper", "#!/bin/sh\necho started\nexec sleep 600\n")
    deployment_id = deployer.start("cancelled-app", archive=slow)
    deployer.wait_for_output("cancelled-app", deployment_id, "started")
    assert len(build_containers(docker_client, "cancelled-app")) == 1
    with deployer.client() as client:
        answer = client.post(f"/v1/apps/cancelled-app/deployments/{deployment_id}/cancel", json={})
        assert answer.status_code == 200, answer.text
    status, output = deployer.wait("cancelled-app", deployment_id, timeout=15)
    assert status == "aborted", output
    wait_for(
        lambda: build_containers(docker_client, "cancelled-app") == [],
        timeout=5,
        what="the build's container to be gone",
    )
