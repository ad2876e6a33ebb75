"""Isolation of apps on a real server: each app (instances and builds) in a network
namespace of its own, and its memory limit enforced by a cgroup.

The test plays both the host's private services (a listener on 127.0.0.1, like PostgreSQL)
and the outside world (a network namespace of its own, routed like any network the host
reaches, with 169.254.169.254 and an address of a range the operator blocks on it too).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from dockyard.isolation import cgroups
from dockyard.isolation.addresses import allocate
from dockyard.services.apps import FIRST_SANDBOX_UID
from dockyard.settings import Settings
from tests.e2e import scalingo_ops
from tests.e2e.deployer import BuildpackHost, Deployer, server_with_buildpack_host
from tests.helpers import tar_gz_from_files, wait_for
from tests.netns_helpers import (
    PROBE,
    OutsideHost,
    connect_from_host,
    host_listener,
    link_exists,
    netns_exists,
    outside_host,
)

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap"),
    pytest.mark.skipif(os.geteuid() != 0, reason="app namespaces need root"),
]

METADATA = "169.254.169.254"
BLOCKED_RANGE = "203.0.113.192/26"
BLOCKED_ADDRESS = "203.0.113.200"

PROBE_APP = """
import json, os, socket, subprocess, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PROBE = open("probe.py").read()

def own_address():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.connect(("198.51.100.9", 9))  # picks the source address; sends nothing
        return udp.getsockname()[0]

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/whereami":
            body = f"{own_address()} {os.environ['PORT']}"
        elif url.path == "/probe":
            targets = parse_qs(url.query)["t"]
            body = subprocess.run([sys.executable, "probe.py", *targets], capture_output=True, text=True).stdout
        elif url.path == "/eat":
            hog = [bytearray(64 * 1024**2) for _ in range(16)]  # 1 GiB, every page touched
            body = str(len(hog))
        else:
            body = os.environ["CONTAINER"]
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""

PROBE_ARCHIVE = tar_gz_from_files(
    {"Procfile": "web: python3 server.py\n", "server.py": PROBE_APP, "probe.py": PROBE}
)


@dataclass
class World:
    deployer: Deployer
    buildpacks: BuildpackHost
    outside: OutsideHost
    loopback_port: int  # a service of the host on 127.0.0.1 (think PostgreSQL)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with (
        outside_host(
            "dytest-e2e-out", host_if="dytest-e2eout", network="198.51.100.8/30",
            extra=(METADATA, BLOCKED_ADDRESS),
        ) as outside,
        host_listener("127.0.0.1", "host database") as loopback_port,
        server_with_buildpack_host(
            tmp_path_factory.mktemp("isolation"),
            "ivy",
            DOCKYARD_BLOCKED_NETWORKS=BLOCKED_RANGE,
            DOCKYARD_BOOT_TIMEOUT="20",
        ) as (deployer, buildpacks),
    ):  # fmt: skip
        outside.listen(80, "outside")
        # From the host, everything the apps will be refused answers.
        for address in (outside.address, METADATA, BLOCKED_ADDRESS):
            assert connect_from_host(address, 80) == "outside"
        yield World(deployer, buildpacks, outside, loopback_port)


def deploy_ok(deployer: Deployer, app: str, archive: bytes) -> str:
    deployer.create_app(app)
    status, output = deployer.deploy(app, archive=archive)
    assert status == "success", output
    return output


def probe(deployer: Deployer, app: str, targets: list[str]) -> dict[str, str]:
    query = "&".join(f"t={target}" for target in targets)
    response = deployer.get(app, f"/probe?{query}")
    assert response.status_code == 200, response.text
    results: dict[str, str] = json.loads(response.text)
    return results


def test_an_app_reaches_the_outside_but_not_the_host_another_app_or_metadata(
    world: World,
) -> None:
    deployer = world.deployer
    deploy_ok(deployer, "probe-a", PROBE_ARCHIVE)
    deploy_ok(deployer, "probe-b", PROBE_ARCHIVE)
    b_address, b_port = deployer.get("probe-b", "/whereami").text.split()
    api_port = deployer.server.url.rsplit(":", 1)[1]
    results = probe(
        deployer,
        "probe-a",
        [
            f"{world.outside.address}:80",
            f"127.0.0.1:{world.loopback_port}",
            f"127.0.0.1:{api_port}",
            f"{b_address}:{b_port}",
            f"{METADATA}:80",
            f"{BLOCKED_ADDRESS}:80",
        ],
    )
    assert results.pop(f"{world.outside.address}:80") == "reached: outside"
    for target, result in results.items():
        assert result.startswith("failed:"), f"{target}: {result}"
    # Both still answer through the router, which reaches every instance.
    assert deployer.get("probe-a").text == "probe-a-web-1"
    assert deployer.get("probe-b").text == "probe-b-web-1"


def test_a_builds_compile_step_cannot_reach_the_hosts_loopback_either(world: World) -> None:
    targets = f"127.0.0.1:{world.loopback_port} {world.outside.address}:80 {METADATA}:80"
    compile_script = (
        "#!/bin/sh\ncat > /tmp/probe.py <<'EOF'\n"
        + PROBE
        + f"EOF\npython3 /tmp/probe.py {targets}\n"
    )
    deployer = world.deployer
    deployer.create_app("probing-build")
    archive = world.buildpacks.app_using("probing-build", compile_script)
    status, output = deployer.deploy("probing-build", archive=archive)
    assert status == "success", output
    line = next(line for line in output.splitlines() if line.lstrip().startswith("{"))
    results = json.loads(line)
    assert results.pop(f"{world.outside.address}:80") == "reached: outside"
    for target, result in results.items():
        assert result.startswith("failed:"), f"{target}: {result}"


def test_an_app_over_its_memory_limit_is_killed_reported_and_restarted(world: World) -> None:
    deployer = world.deployer
    deploy_ok(deployer, "hungry-app", PROBE_ARCHIVE)
    with pytest.raises(httpx.HTTPError):  # the process dies with the request
        response = deployer.get("hungry-app", "/eat")
        response.raise_for_status()
    with deployer.client() as client:
        logs_url = client.get("/v1/apps/hungry-app/logs").json()["logs_url"]
        wait_for(
            lambda: (
                "web-1 was killed: it used more than its 512 MiB memory limit"
                in scalingo_ops.dump(logs_url, lines=50).text
            ),
            timeout=30,
            what="the kill in the app's logs",
        )
    wait_for(
        lambda: deployer.get("hungry-app").status_code == 200,
        timeout=30,
        what="the app to be restarted",
    )


def uid_at(address: str) -> int:
    """The app whose namespace has ``address`` (test servers number apps from the first uid)."""
    pool = Settings().app_network_pool
    for uid in range(FIRST_SANDBOX_UID, FIRST_SANDBOX_UID + 100):
        if allocate(uid=uid, first_uid=FIRST_SANDBOX_UID, pool=pool).app_address == (
            ipaddress.IPv4Address(address)
        ):
            return uid
    raise AssertionError(f"no app namespace has the address {address}")


def test_a_namespace_comes_back_after_a_reboot_and_goes_with_its_app(world: World) -> None:
    deployer = world.deployer
    deploy_ok(deployer, "rebooted-app", PROBE_ARCHIVE)
    uid = uid_at(deployer.get("rebooted-app", "/whereami").text.split()[0])
    names = allocate(uid=uid, first_uid=FIRST_SANDBOX_UID, pool=Settings().app_network_pool)
    deployer.server.stop()
    # What a reboot does: /run/netns is a tmpfs, the interfaces are gone.
    subprocess.run(["ip", "netns", "delete", names.netns], check=True)
    deployer.server.start()
    wait_for(
        lambda: deployer.get("rebooted-app").status_code == 200,
        timeout=30,
        what="the app to come back",
    )
    assert netns_exists(names.netns) and link_exists(names.host_if)
    assert cgroups.app_groups(uid) != []

    with deployer.client() as client:
        assert client.delete("/v1/apps/rebooted-app").status_code == 204
    assert not netns_exists(names.netns)
    assert not link_exists(names.host_if)
    assert cgroups.app_groups(uid) == []
