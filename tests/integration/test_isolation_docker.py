"""App namespaces on a host where Docker runs: its FORWARD policy is DROP, and the apps'
traffic still flows (through DOCKER-USER) while every block still holds.

Uses the running dockerd, or starts one (and stops it after) when ``dockerd`` is
installed (``DOCKYARD_WITH_DOCKER=1 bash scripts/setup.sh`` installs it). Without it the test
is skipped, unless ``DOCKYARD_REQUIRE_DOCKER=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import wait_for
from tests.netns_helpers import (
    connect_from_host,
    host_listener,
    outside_host,
    probe_in_sandbox,
)

from dockyard.isolation import firewall
from dockyard.isolation.apps import AppIsolation
from dockyard.isolation.network import AppNetworks
from dockyard.services.apps import FIRST_SANDBOX_UID
from dockyard.settings import Settings

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap"),
    pytest.mark.skipif(os.geteuid() != 0, reason="creates network namespaces: needs root"),
]

POOL = Settings().app_network_pool
APP = FIRST_SANDBOX_UID + 16_000  # near the top of the pool, away from test servers' apps
DOCKER_SOCKET = "/var/run/docker.sock"


def docker_answers() -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2)
            conn.connect(DOCKER_SOCKET)
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return conn.recv(4096).split(b"\r\n")[0].endswith(b"200 OK")
    except OSError:
        return False


def iptables(*args: str) -> str:
    return subprocess.run(
        ["iptables", "-w", *args], capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def docker_host(tmp_path: Path) -> Iterator[bool]:
    """Yields whether the test must start dockerd itself (after the rules are in)."""
    if shutil.which("dockerd") is None or shutil.which("iptables") is None:
        message = (
            "Docker is not installed: DOCKYARD_WITH_DOCKER=1 bash scripts/setup.sh installs it"
        )
        if os.environ.get("DOCKYARD_REQUIRE_DOCKER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    policy = iptables("-S", "FORWARD").splitlines()[0].split()[-1]
    yield not docker_answers()
    iptables("-P", "FORWARD", policy)


@pytest.fixture
def dockerd(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.terminate()
        proc.wait(timeout=30)


def start_dockerd(log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(["dockerd"], stdout=out, stderr=subprocess.STDOUT)
    wait_for(
        lambda: docker_answers() or proc.poll() is not None, timeout=60, what="dockerd to start"
    )
    assert proc.poll() is None, log.read_text()[-2000:]
    return proc


def test_apps_reach_out_and_stay_fenced_in_with_docker_running(
    docker_host: bool, dockerd: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    reachable, _ = firewall.host_resolvers(firewall.RESOLV_CONF.read_text())
    isolation = AppIsolation(
        AppNetworks(
            pool=POOL,
            first_uid=FIRST_SANDBOX_UID,
            firewall_config=firewall.FirewallConfig(pool=POOL, resolvers=tuple(reachable)),
        )
    )
    try:
        app = isolation.ensure_network(APP)
        if docker_host:
            # Docker starting after dockyard keeps the rules dockyard put in DOCKER-USER.
            dockerd.append(start_dockerd(tmp_path / "dockerd.log"))
        # What dockerd does on a host where it had to turn forwarding on.
        iptables("-P", "FORWARD", "DROP")
        rules = iptables("-S", "DOCKER-USER").splitlines()
        # Both of them (the docker runtime's drop rules for its app bridges may be there
        # too, left by an earlier server: they match only those bridges).
        assert len([rule for rule in rules if firewall.DOCKER_USER_COMMENT in rule]) == 2, rules
        with (
            outside_host("dytest-outside", host_if="dytest-out", network="198.51.100.0/30") as out,
            # An interface named like a Docker network's bridge, with a "container" behind it.
            outside_host("dytest-bridge", host_if="br-dytest", network="198.51.100.4/30") as bridged,
            host_listener("0.0.0.0", "host service") as host_port,
        ):  # fmt: skip
            out.listen(80, "outside")
            bridged.listen(80, "container")
            assert connect_from_host(bridged.address, 80) == "container"
            results = probe_in_sandbox(
                app.netns_path,
                APP,
                [f"{out.address}:80", f"{bridged.address}:80", f"{app.host_address}:{host_port}"],
            )
    finally:
        isolation.remove_app(APP)
    assert results.pop(f"{out.address}:80") == "reached: outside"
    for target, result in results.items():
        assert result.startswith("failed:"), f"{target}: {result}"
