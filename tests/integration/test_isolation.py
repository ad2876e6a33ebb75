"""App network namespaces and cgroups on the real host: real namespaces, veth pairs,
nftables rules, bubblewrap sandboxes and memory cgroups.

The apps here take the last addresses of the default pool (uids near the top of it), so
that they never share a /30 with the apps of a test server (numbered from the bottom).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import wait_for
from tests.netns_helpers import (
    connect_from_host,
    host_listener,
    host_primary_address,
    link_exists,
    listening,
    netns_exists,
    outside_host,
    probe_in_sandbox,
)

from dockyard import sandbox
from dockyard.errors import BootError
from dockyard.isolation import cgroups, firewall
from dockyard.isolation.addresses import capacity
from dockyard.isolation.apps import AppIsolation
from dockyard.isolation.network import AppNetworks
from dockyard.runtime.base import ProcessSpec
from dockyard.runtime.boot import tail_log, wait_for_boot
from dockyard.runtime.local import LocalRuntime
from dockyard.services.apps import FIRST_SANDBOX_UID
from dockyard.settings import DEFAULT_APP_NETWORK_POOL, Settings

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap"),
    pytest.mark.skipif(os.geteuid() != 0, reason="creates network namespaces: needs root"),
]

POOL = Settings().app_network_pool
assert str(POOL) == DEFAULT_APP_NETWORK_POOL
APP_A = FIRST_SANDBOX_UID + capacity(POOL) - 1
APP_B = FIRST_SANDBOX_UID + capacity(POOL) - 2
# An outside network of the test's own, and a range the operator blocks, routed to it.
OUTSIDE_NET = "198.51.100.0/30"
BLOCKED_RANGE = "203.0.113.192/26"
BLOCKED_ADDRESS = "203.0.113.200"
METADATA = "169.254.169.254"


def isolation_with(blocked: tuple[str, ...] = ()) -> AppIsolation:
    settings = Settings.from_mapping({"DOCKYARD_BLOCKED_NETWORKS": ",".join(blocked)})
    reachable, _ = firewall.host_resolvers(firewall.RESOLV_CONF.read_text())
    config = firewall.FirewallConfig(
        pool=settings.app_network_pool,
        blocked=settings.blocked_networks,
        resolvers=tuple(reachable),
    )
    return AppIsolation(
        AppNetworks(
            pool=settings.app_network_pool, first_uid=FIRST_SANDBOX_UID, firewall_config=config
        )
    )


@pytest.fixture
def isolation() -> Iterator[AppIsolation]:
    isolation = isolation_with((BLOCKED_RANGE,))
    yield isolation
    for uid in (APP_A, APP_B):
        isolation.remove_app(uid)


def test_an_app_reaches_the_outside_world_but_not_the_host_other_apps_metadata_or_blocked_ranges(
    isolation: AppIsolation,
) -> None:
    app_a = isolation.ensure_network(APP_A)
    app_b = isolation.ensure_network(APP_B)
    with (
        outside_host(
            "dytest-outside", host_if="dytest-out", network=OUTSIDE_NET,
            extra=(METADATA, BLOCKED_ADDRESS),
        ) as outside,
        host_listener("127.0.0.1", "host loopback service") as loopback_port,
        host_listener("0.0.0.0", "host service on every address") as any_port,
        listening(app_b.netns, 5000, "app b"),
    ):  # fmt: skip
        outside.listen(80, "outside")
        host = host_primary_address()
        # What the host reaches: each refusal below is the firewall's, not a missing listener.
        assert connect_from_host(outside.address, 80) == "outside"
        assert connect_from_host(METADATA, 80) == "outside"
        assert connect_from_host(BLOCKED_ADDRESS, 80) == "outside"
        assert connect_from_host(str(app_b.app_address), 5000) == "app b"
        assert connect_from_host(host, any_port) == "host service on every address"

        results = probe_in_sandbox(
            app_a.netns_path,
            APP_A,
            [
                f"{outside.address}:80",
                f"127.0.0.1:{loopback_port}",
                f"{app_a.host_address}:{any_port}",
                f"{host}:{any_port}",
                f"{app_b.app_address}:5000",
                f"{METADATA}:80",
                f"{BLOCKED_ADDRESS}:80",
            ],
        )
    assert results.pop(f"{outside.address}:80") == "reached: outside"
    for target, result in results.items():
        assert result.startswith("failed:"), f"{target}: {result}"


def test_an_app_resolves_names_with_the_hosts_resolver(isolation: AppIsolation) -> None:
    reachable, on_loopback = firewall.host_resolvers(firewall.RESOLV_CONF.read_text())
    assert reachable, f"this host's resolvers are {on_loopback}, on loopback (see README)"
    app = isolation.ensure_network(APP_A)
    # The name the builds need; the host must resolve it for the test to mean anything.
    assert socket.getaddrinfo("pypi.org", 443)
    script = "import socket; print(socket.getaddrinfo('pypi.org', 443)[0][4][0])"
    spec = sandbox.SandboxSpec(
        host_uid=APP_A, mounts=[], env={"PATH": "/usr/bin"}, cwd="/", netns=app.netns_path
    )
    with sandbox.spawn(spec, ["/usr/bin/python3", "-c", script]) as proc:
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output.decode()


def test_namespaces_come_back_after_a_reboot_and_go_with_the_app(isolation: AppIsolation) -> None:
    app = isolation.ensure_network(APP_A)
    assert netns_exists(app.netns) and link_exists(app.host_if)
    assert isolation.ensure_network(APP_A) == app  # idempotent, same addresses
    # A reboot empties /run/netns and takes the interfaces; a new server process finds none.
    os.system(f"ip netns delete {app.netns}")  # noqa: S605 - a fixed name, as an operator would
    wait_for(lambda: not link_exists(app.host_if), timeout=5, what="the veth pair to go")
    after_reboot = isolation_with((BLOCKED_RANGE,))
    assert after_reboot.ensure_network(APP_A) == app
    assert netns_exists(app.netns) and link_exists(app.host_if)
    with listening(app.netns, 5000, "back"):
        assert connect_from_host(str(app.app_address), 5000) == "back"

    after_reboot.remove_app(APP_A)
    assert not netns_exists(app.netns)
    assert not link_exists(app.host_if)
    assert cgroups.app_groups(APP_A) == []


@pytest.fixture
def release() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="dockyard-isolation-"))
    base.chmod(0o711)
    release = base / "release"
    release.mkdir()
    (release / "app.py").write_text(
        "import os, socket, sys, time\n"
        "if sys.argv[1] == 'eat':\n"
        "    chunks = [bytearray(64 * 1024**2) for _ in range(16)]  # 1 GiB, touched\n"
        "    time.sleep(60)\n"
        "server = socket.create_server(('0.0.0.0', int(os.environ['PORT'])))\n"
        "while True:\n"
        "    conn, _ = server.accept()\n"
        "    conn.sendall(os.environ['CONTAINER'].encode())\n"
        "    conn.close()\n"
    )
    os.chmod(release / "app.py", 0o644)
    yield release
    shutil.rmtree(base, ignore_errors=True)


def spec_for(release: Path, index: int, command: str, log_dir: Path) -> ProcessSpec:
    return ProcessSpec(
        app="isolated",
        release_id="r1",
        process_type="web",
        index=index,
        command=command,
        env={},
        release_dir=release,
        host_uid=APP_A,
        limits=sandbox.Limits(max_processes=64, memory_bytes=512 * 1024**2),
        log_path=log_dir / f"web-{index}.log",
    )


def test_instances_listen_on_the_apps_address_each_on_a_port_of_its_own(
    isolation: AppIsolation, release: Path, tmp_path: Path
) -> None:
    runtime = LocalRuntime(isolation=isolation)
    handles = [
        runtime.start(spec_for(release, index, "python3 app.py serve", tmp_path))
        for index in (1, 2)
    ]
    try:
        address = str(isolation.ensure_network(APP_A).app_address)
        first = handles[0].port
        assert first is not None
        assert [(h.host, h.port) for h in handles] == [(address, first), (address, first + 1)]
        for handle in handles:
            host, port = handle.host, handle.port
            assert port is not None
            wait_for(lambda: _answers(host, port), timeout=20, what=f"{handle.spec.name} to listen")  # noqa: B023
            assert connect_from_host(host, port) == handle.spec.container
    finally:
        for handle in handles:
            runtime.stop(handle, grace=0)


def _answers(host: str, port: int) -> bool:
    try:
        connect_from_host(host, port)
        return True
    except OSError:
        return False


def test_an_instance_over_its_memory_limit_is_killed_and_reported_as_such(
    isolation: AppIsolation, release: Path, tmp_path: Path
) -> None:
    runtime = LocalRuntime(isolation=isolation)
    handle = runtime.start(spec_for(release, 1, "python3 app.py eat", tmp_path))
    try:
        status = wait_for(
            lambda: runtime.poll(handle), timeout=30, what="the kernel to kill the app"
        )
    finally:
        runtime.stop(handle, grace=0)
    assert runtime.exit_reason(handle, status) == (
        "was killed: it used more than its 512 MiB memory limit"
    )
    # An app that exits by itself is not said to be out of memory.
    handle = runtime.start(spec_for(release, 2, "exit 3", tmp_path))
    status = wait_for(lambda: runtime.poll(handle), timeout=30, what="the app to exit")
    runtime.stop(handle, grace=0)
    assert runtime.exit_reason(handle, status) == "exited with status 3"


def test_an_app_listening_on_loopback_only_is_told_to_listen_on_every_address(
    isolation: AppIsolation, release: Path, tmp_path: Path
) -> None:
    (release / "loopback.py").write_text(
        "import os, socket, time\n"
        "server = socket.create_server(('127.0.0.1', int(os.environ['PORT'])))\n"
        "print('listening', flush=True)\n"
        "time.sleep(600)\n"
    )
    os.chmod(release / "loopback.py", 0o644)
    runtime = LocalRuntime(isolation=isolation)
    handle = runtime.start(spec_for(release, 1, "python3 loopback.py", tmp_path))
    with pytest.raises(BootError, match="did not accept connections"):
        wait_for_boot(runtime, handle, timeout=3)
    lines = tail_log(handle.spec.log_path)
    assert lines[0] == "listening"
    assert lines[-1] == (
        f"dockyard: the app listens on 127.0.0.1:{handle.port} ($PORT), which only the app "
        "itself can reach: listen on 0.0.0.0:$PORT so that the router can connect"
    )
