"""The connection to the container engine (Docker, or Podman's Docker-compatible API)."""

from __future__ import annotations

from pathlib import Path

import docker
import docker.errors

from dockyard.errors import DockyardError

DEFAULT_ENGINE = "unix:///var/run/docker.sock"


class EngineUnavailable(DockyardError):
    """The engine's API does not answer."""


def connect(url: str = "") -> docker.DockerClient:
    """A client for the engine at ``url`` (``DOCKYARD_DOCKER_HOST``), checked to answer."""
    address = url or DEFAULT_ENGINE
    if address.startswith("unix://") and not Path(address.removeprefix("unix://")).exists():
        # Said before the SDK tries: its failed connection to a missing socket leaks the
        # socket object.
        raise EngineUnavailable(
            f"The container engine at {address} does not answer (no such socket). Start"
            " dockerd (or `podman system service`) or set DOCKYARD_DOCKER_HOST to its socket."
        )
    client: docker.DockerClient | None = None
    try:
        client = docker.DockerClient(base_url=address, timeout=120)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        if client is not None:
            client.close()
        raise EngineUnavailable(
            f"The container engine at {address} does not answer ({exc}). Start dockerd (or"
            " `podman system service`) or set DOCKYARD_DOCKER_HOST to its socket."
        ) from None
    return client


def is_podman(client: docker.DockerClient) -> bool:
    """Whether the Docker-compatible API is Podman's."""
    components = client.version().get("Components") or []
    return any("podman" in str(part.get("Name", "")).lower() for part in components)
