"""The docker runtime's per-app networks on a real engine take their subnets from
dockyard's pool (``DOCKYARD_CONTAINER_NETWORK_POOL``), not the engine's default pools,
which hold about thirty networks: forty apps' networks exist side by side, each in the
pool; a full pool says how to fix it."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from dockyard.errors import BootError
from dockyard.runtime.docker.network import AppNetworks, host_routes, network_name, subnets_for

pytestmark = pytest.mark.docker

# Away from the default pool's start, where test servers' apps get theirs.
POOL = ipaddress.IPv4Network("10.214.192.0/18")


def subnet_of(client: docker.DockerClient, app: str) -> ipaddress.IPv4Network:
    config = client.networks.get(network_name(app)).attrs["IPAM"]["Config"][0]
    return ipaddress.IPv4Network(config["Subnet"])


@pytest.fixture
def made(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    apps: list[str] = []
    try:
        yield apps
    finally:
        for app in apps:
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.networks.get(network_name(app)).remove()


def test_forty_apps_have_networks_of_their_own_in_the_pool(
    docker_client: docker.DockerClient, made: list[str]
) -> None:
    networks = AppNetworks(docker_client, firewall=False, pool=POOL)
    for index in range(40):
        app = f"net-many-{index}"
        made.append(app)
        networks.acquire(app)
    subnets = [subnet_of(docker_client, app) for app in made]
    assert all(subnet.subnet_of(POOL) and subnet.prefixlen == 26 for subnet in subnets)
    assert len(set(subnets)) == 40


def test_a_full_pool_says_what_to_widen(
    docker_client: docker.DockerClient, made: list[str]
) -> None:
    tiny = ipaddress.IPv4Network("10.214.250.0/25")  # two apps' worth
    networks = AppNetworks(docker_client, firewall=False, pool=tiny)
    made.extend(["net-tiny-a", "net-tiny-b", "net-tiny-c"])
    networks.acquire("net-tiny-a")
    networks.acquire("net-tiny-b")  # the one subnet left, whatever its hash said
    assert {subnet_of(docker_client, app) for app in made[:2]} == set(tiny.subnets(new_prefix=26))
    with pytest.raises(BootError, match="DOCKYARD_CONTAINER_NETWORK_POOL"):
        networks.acquire("net-tiny-c")


def test_an_app_tries_its_own_subnet_first_then_every_other_once() -> None:
    order = subnets_for("shop", POOL)
    assert len(order) == len(set(order)) == 256
    assert order == subnets_for("shop", POOL)  # the same app, the same order
    assert subnets_for("blog", POOL)[0] != order[0]


def test_the_hosts_routes_are_read_from_the_kernels_table(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"  # the default route
        "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"  # 192.0.2.0/24
        "br-1\t8035D60A\t00000000\t0001\t0\t0\t0\tC0FFFFFF\t0\t0\t0\n"  # 10.214.53.128/26
    )
    assert host_routes(table) == [
        ipaddress.IPv4Network("192.0.2.0/24"),
        ipaddress.IPv4Network("10.214.53.128/26"),
    ]
    assert host_routes(tmp_path / "missing") == []
