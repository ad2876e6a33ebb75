"""``AppIsolation``: what builds, instances, one-offs and postdeploy scripts of an app run in.

Everything that runs an app's code in a sandbox asks it for the app's network namespace
and puts it in its ``SandboxSpec``::

    netns = isolation.sandbox_netns(app_uid)        # created (or repaired) if needed
    spec = sandbox.SandboxSpec(..., host_uid=app_uid, netns=netns)

and deleting the app calls ``remove_app``. ``for_settings`` decides whether there is any
isolation at all: it needs the sandbox and root (creating namespaces and firewall rules
does); without them apps share the host's network, and the server says so at start.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dockyard.errors import BuildError
from dockyard.isolation import cgroups, firewall
from dockyard.isolation.addresses import AppAddresses
from dockyard.isolation.network import AppNetworks, NetworkSetupError
from dockyard.settings import Settings

log = logging.getLogger(__name__)

NO_ISOLATION_WARNING = (
    "Apps are NOT network-isolated: {why}. Every app can connect to the host's loopback "
    "services (the database, the API) and to every other app's port."
)


class AppIsolation:
    def __init__(self, networks: AppNetworks) -> None:
        self.networks = networks

    def ensure_network(self, app_uid: int) -> AppAddresses:
        """The app's namespace and addresses, created if needed (raises
        ``NetworkSetupError`` saying what failed)."""
        return self.networks.ensure(app_uid)

    def sandbox_netns(self, app_uid: int) -> Path:
        """For a ``SandboxSpec.netns``; a failure is a ``BuildError`` in words."""
        try:
            return self.networks.ensure(app_uid).netns_path
        except NetworkSetupError as exc:
            raise BuildError(exc.message) from None

    def remove_app(self, app_uid: int) -> None:
        """Delete everything of the app below its sandboxes: network namespace, veth pair
        and cgroups. Its processes must be stopped first."""
        self.networks.remove(app_uid)
        cgroups.remove_app_groups(app_uid)

    def setup_host(self) -> None:
        self.networks.setup_host()
        swept = cgroups.sweep_abandoned()
        if swept:
            log.info("removed %d cgroups left by sandboxes of an earlier server", swept)


def for_settings(settings: Settings, *, first_uid: int) -> AppIsolation | None:
    """The isolation the settings ask for and this host allows; None (with a warning
    logged) when apps will share the host's network."""
    why = _unavailable(settings)
    if why is not None:
        log.warning(NO_ISOLATION_WARNING.format(why=why))
        return None
    reachable, on_loopback = firewall.host_resolvers(_read(firewall.RESOLV_CONF))
    for resolver in on_loopback:
        log.warning(
            "The host's DNS resolver %s is on loopback: apps cannot reach it from their "
            "network namespaces, so they cannot resolve names (see README, Isolation).",
            resolver,
        )
    config = firewall.FirewallConfig(
        pool=settings.app_network_pool,
        blocked=settings.blocked_networks,
        resolvers=tuple(reachable),
        router_ports=(settings.router_port,),
    )
    return AppIsolation(
        AppNetworks(pool=settings.app_network_pool, first_uid=first_uid, firewall_config=config)
    )


def _unavailable(settings: Settings) -> str | None:
    if not settings.sandbox:
        return "DOCKYARD_SANDBOX is off"
    if not settings.network_isolation:
        return "DOCKYARD_NETWORK_ISOLATION is off"
    if os.geteuid() != 0:
        return "dockyard runs as a non-root user, which cannot create network namespaces"
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
