"""The swarm runtime as ``dockyard serve`` gets it, checked before anything runs: the
engine is a manager of an active swarm, the stack image is there, the registry answers and
lets dockyard in, and the host is closed to the tasks (``firewall``)."""

from __future__ import annotations

from collections.abc import Callable

from dockyard.errors import DockyardError
from dockyard.runtime.appbook import StateStore
from dockyard.runtime.docker import engine, stack
from dockyard.runtime.docker.images import ReleaseImages
from dockyard.runtime.docker.network import closed_networks
from dockyard.runtime.docker.registry import Registry
from dockyard.runtime.docker.runtime import DockerRuntime
from dockyard.runtime.docker.wiring import registry_access
from dockyard.runtime.supervisor import RouteSink
from dockyard.runtime.swarm import firewall
from dockyard.runtime.swarm.apps import SwarmApps
from dockyard.runtime.swarm.specs import Timings
from dockyard.settings import Settings


def swarm_apps(
    settings: Settings,
    routes: RouteSink,
    store: StateStore,
    host_uid_for: Callable[[str], int],
    *,
    take_over: Callable[[str], None] | None = None,
) -> tuple[SwarmApps, ReleaseImages, DockerRuntime]:
    access = registry_access(settings)
    recipe = stack.recipe_named(settings.stack)
    client = engine.connect(settings.docker_host)
    registry = Registry(access)
    try:
        swarm = client.info().get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise DockyardError(
                "DOCKYARD_RUNTIME=swarm needs the engine to be a manager of an active swarm:"
                " run `docker swarm init` (or point DOCKYARD_DOCKER_HOST at a manager)."
            )
        stack_tag = stack.require(client, recipe)
        registry.catalog()  # answers, and accepts dockyard's credentials
        # Swarm's nodes pull the release images with these credentials (the SDK sends
        # them with each service it creates or updates).
        client.login(access.username, access.password, registry=access.address, reauth=True)
        pools = (swarm.get("Cluster") or {}).get("DefaultAddrPool") or ["10.0.0.0/8"]
        # Link-local (cloud metadata) and the operator's blocked ranges too, as for the
        # other runtimes' apps.
        firewall.close_host([*pools, *map(str, closed_networks(settings.blocked_networks))])
    except DockyardError:
        registry.close()
        client.close()
        raise
    images = ReleaseImages(client, registry, stack=stack_tag)
    apps = SwarmApps(
        client,
        routes,
        store,
        image_for=images.reference,
        prefix=settings.swarm_prefix,
        timings=Timings(
            check=settings.swarm_check_seconds,
            boot=float(settings.boot_timeout),
            drain=settings.drain_seconds,
            stop_grace=settings.stop_grace_seconds,
        ),
        logs_dir=settings.logs_dir,
        host_uid_for=host_uid_for,
        take_over=take_over,
    )
    # One-off commands run as plain containers of the release's image on this engine.
    one_offs = DockerRuntime(
        client, image_for=images.image_for, network_pool=settings.container_network_pool
    )
    return apps, images, one_offs
