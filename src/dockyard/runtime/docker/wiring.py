"""The docker runtime as ``dockyard serve`` gets it, checked before anything runs: the
engine answers, the stack image is there, the registry is named and lets dockyard in;
and its builds, in containers of that stack."""

from __future__ import annotations

from dockyard.errors import DockyardError
from dockyard.runtime.docker import engine, stack
from dockyard.runtime.docker.builds import ContainerExecutor
from dockyard.runtime.docker.images import ReleaseImages
from dockyard.runtime.docker.registry import Registry, RegistryAccess
from dockyard.runtime.docker.runtime import DockerRuntime
from dockyard.settings import Settings


def registry_access(settings: Settings) -> RegistryAccess:
    if not settings.registry:
        raise DockyardError(
            "The docker runtime needs a registry: set DOCKYARD_REGISTRY (host:port) and"
            " DOCKYARD_REGISTRY_USER / DOCKYARD_REGISTRY_PASSWORD."
        )
    return RegistryAccess.parse(
        settings.registry, username=settings.registry_user, password=settings.registry_password
    )


def docker_runtime(settings: Settings) -> tuple[DockerRuntime, ReleaseImages]:
    access = registry_access(settings)
    recipe = stack.recipe_named(settings.stack)
    client = engine.connect(settings.docker_host)
    registry = Registry(access)
    try:
        stack_tag = stack.require(client, recipe)
        registry.catalog()  # answers, and accepts dockyard's credentials
    except DockyardError:
        registry.close()
        client.close()
        raise
    images = ReleaseImages(client, registry, stack=stack_tag)
    runtime = DockerRuntime(
        client,
        image_for=images.image_for,
        network_pool=settings.container_network_pool,
        blocked_networks=settings.blocked_networks,
    )
    return runtime, images


def build_executor(runtime: DockerRuntime, images: ReleaseImages) -> ContainerExecutor:
    """Build steps in containers of the stack the releases run on, on the apps' networks
    (the same ones, counted together with the instances')."""
    return ContainerExecutor(runtime.client, image=images.stack, networks=runtime.networks)
