"""A network per app: its containers reach each other and the outside, never another
app's containers (Docker isolates bridges from each other) nor the host's own services
(a firewall rule on the app's bridge drops new connections to the host itself).

Each network's subnet is a /26 (62 containers of the app on this engine) of dockyard's own
pool (``DOCKYARD_CONTAINER_NETWORK_POOL``, 10.214.0.0/16: 1,024 apps): the engine's
default address pools hold about thirty networks, so the thirty-first app would not
start. The first subnet tried is the app's own (a hash of its name), then the next ones,
past those any network of the engine already uses.
"""

from __future__ import annotations

import hashlib
import ipaddress
import shutil
import subprocess
import threading
from collections.abc import Iterable
from pathlib import Path

import docker
import docker.errors
import docker.types

from dockyard.errors import BootError
from dockyard.isolation.firewall import LINK_LOCAL
from dockyard.runtime.docker.engine import is_podman

LABEL = "dockyard.app"
BRIDGE_OPTION = "com.docker.network.bridge.name"
SUBNET_PREFIX = 26
DEFAULT_POOL = ipaddress.IPv4Network("10.214.0.0/16")


def network_name(app: str) -> str:
    return f"dockyard-app-{app}"


def bridge_name(app: str, *, engine: str = "d") -> str:
    # Interface names have at most 15 characters: a hash of the app name. The engine's
    # letter keeps Docker's and Podman's bridges apart on a host that runs both.
    return f"dy{engine}-" + hashlib.sha256(app.encode()).hexdigest()[:11]


class AppNetworks:
    """The apps' networks, counted: created with an app's first container, removed with
    its last (docker's address pools are small: ~30 networks by default)."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        firewall: bool = True,
        linger_seconds: float = 60.0,
        pool: ipaddress.IPv4Network = DEFAULT_POOL,
        blocked: Iterable[ipaddress.IPv4Network] = (),
    ) -> None:
        self._client = client
        self._pool = pool
        self._closed = closed_networks(blocked)
        self._firewall = firewall
        self._lock = threading.Lock()
        self._users: dict[str, int] = {}
        self.linger_seconds = linger_seconds
        self._engine = "p" if is_podman(client) else "d"

    def acquire(self, app: str) -> str:
        """The app's network, created (with its firewall rule) if missing; its name."""
        name = network_name(app)
        with self._lock:
            if self._users.get(app, 0) == 0:
                self._create(app, name)
            self._users[app] = self._users.get(app, 0) + 1
            return name

    def release(self, app: str) -> None:
        """One container of the app is gone; the network goes a while after the last one
        (not at once: a restart or a rollout would recreate it, and the stopped
        containers' addresses must stay unreachable rather than routed elsewhere)."""
        with self._lock:
            users = self._users.get(app, 0) - 1
            if users > 0:
                self._users[app] = users
                return
            self._users[app] = 0
        timer = threading.Timer(self.linger_seconds, self._remove_if_unused, args=(app,))
        timer.daemon = True
        timer.start()

    def _remove_if_unused(self, app: str) -> None:
        with self._lock:
            if self._users.get(app, 0) > 0:
                return  # acquired again meanwhile
            self._users.pop(app, None)
            try:
                self._client.networks.get(network_name(app)).remove()
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError:
                return  # a container of an earlier server still uses it: kept for it
            if self._firewall:
                _unguard_host(bridge_name(app, engine=self._engine), self._closed)

    def _create(self, app: str, name: str) -> None:
        bridge = bridge_name(app, engine=self._engine)
        try:
            existing = self._client.networks.get(name)
            if (existing.attrs.get("Options") or {}).get(BRIDGE_OPTION) != bridge:
                existing.remove()  # an earlier version's, named otherwise: made anew
                raise docker.errors.NotFound("replaced")
        except docker.errors.NotFound:
            self._create_in_pool(app, name, bridge)
        if self._firewall:
            _guard_host(bridge, self._closed)

    def _create_in_pool(self, app: str, name: str, bridge: str) -> None:
        taken = self._subnets_in_use()
        for subnet in subnets_for(app, self._pool):
            if any(subnet.overlaps(used) for used in taken):
                continue
            try:
                self._client.networks.create(
                    name,
                    driver="bridge",
                    labels={LABEL: app},
                    options={BRIDGE_OPTION: bridge},
                    ipam=docker.types.IPAMConfig(
                        pool_configs=[docker.types.IPAMPool(subnet=str(subnet))]
                    ),
                )
                return
            except docker.errors.APIError as exc:
                # Taken meanwhile by another server; or, says Podman, routed on the host.
                if any(word in str(exc).lower() for word in ("overlap", "already used")):
                    taken.append(subnet)
                    continue
                raise BootError(
                    f"The app's network could not be created: {exc.explanation or exc}",
                    timed_out=False,
                ) from None
        raise BootError(
            f"The app's network could not be created: every /{SUBNET_PREFIX} of "
            f"DOCKYARD_CONTAINER_NETWORK_POOL ({self._pool}) is in use; the operator must "
            "give it a larger range.",
            timed_out=False,
        )

    def _subnets_in_use(self) -> list[ipaddress.IPv4Network]:
        """Every IPv4 subnet of the engine's networks (dockyard's or not), and those the
        host routes (another engine's bridges, the host's own networks): Docker checks
        only its own networks."""
        found = host_routes()
        for network in self._client.api.networks():
            for config in (network.get("IPAM") or {}).get("Config") or []:
                try:
                    subnet = ipaddress.ip_network(str(config.get("Subnet", "")), strict=False)
                except ValueError:
                    continue
                if isinstance(subnet, ipaddress.IPv4Network):
                    found.append(subnet)
        return found


def host_routes(table: Path = Path("/proc/net/route")) -> list[ipaddress.IPv4Network]:
    """The networks this host routes to (the default route aside)."""
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        try:
            # Little-endian hex, as the kernel writes them.
            address = ipaddress.IPv4Address(bytes.fromhex(fields[1])[::-1])
            mask = ipaddress.IPv4Address(bytes.fromhex(fields[7])[::-1])
            network = ipaddress.IPv4Network(f"{address}/{mask}", strict=False)
        except (IndexError, ValueError):
            continue
        if network.prefixlen:
            found.append(network)
    return found


def subnets_for(app: str, pool: ipaddress.IPv4Network) -> list[ipaddress.IPv4Network]:
    """The pool's subnets in the order ``app`` tries them: its own first (a hash of its
    name, so an app usually gets the same subnet back), then each next one, wrapping."""
    subnets = list(pool.subnets(new_prefix=max(SUBNET_PREFIX, pool.prefixlen)))
    start = int.from_bytes(hashlib.sha256(app.encode()).digest()[:4], "big") % len(subnets)
    return subnets[start:] + subnets[:start]


def closed_networks(
    blocked: Iterable[ipaddress.IPv4Network] = (),
) -> list[ipaddress.IPv4Network]:
    """Where no app may connect, beyond the host: link-local addresses (cloud metadata
    services answer there) and the operator's ``DOCKYARD_BLOCKED_NETWORKS``, as for the
    local runtime's apps (isolation/firewall.py)."""
    return list(ipaddress.collapse_addresses([LINK_LOCAL, *blocked]))


def _rules(bridge: str, closed: Iterable[ipaddress.IPv4Network]) -> list[list[str]]:
    # New connections from the app's bridge to the host itself are dropped; replies to
    # the host's own connections (the router's) are not new, so they pass.
    rules = [["INPUT", "-i", bridge, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]]
    # Forwarded traffic to the closed networks: in DOCKER-USER, which Docker keeps ahead
    # of its own forwarding rules; where there is none (Podman), at the head of FORWARD.
    chain = "DOCKER-USER" if iptables("-n", "-L", "DOCKER-USER").returncode == 0 else "FORWARD"
    rules += [[chain, "-i", bridge, "-d", str(net), "-j", "DROP"] for net in closed]
    return rules


def iptables(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("iptables")
    if binary is None:
        raise BootError(
            "iptables is missing: the app's network cannot be closed to the host.", timed_out=False
        )
    return subprocess.run([binary, "-w", *args], capture_output=True, text=True, check=False)


def _guard_host(bridge: str, closed: Iterable[ipaddress.IPv4Network]) -> None:
    for rule in _rules(bridge, closed):
        if iptables("-C", *rule).returncode == 0:
            continue
        done = iptables("-I", *rule)
        if done.returncode != 0:
            raise BootError(
                f"The app's network could not be closed to the host: {done.stderr.strip()}",
                timed_out=False,
            )


def _unguard_host(bridge: str, closed: Iterable[ipaddress.IPv4Network]) -> None:
    for rule in _rules(bridge, closed):
        while iptables("-C", *rule).returncode == 0:
            if iptables("-D", *rule).returncode != 0:
                break
