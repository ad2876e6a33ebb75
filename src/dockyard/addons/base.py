"""What the services know of addon servers: a spec, and the ``AddonServers`` interface."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dockyard.errors import DockyardError


class AddonError(DockyardError):
    """An addon server could not be provisioned, started, dumped or restored."""


@dataclass(frozen=True)
class AddonSpec:
    """One addon's server: whose it is, what it allows, how it is reached."""

    id: str
    app_name: str
    app_uid: int  # the app's sandbox uid: its network namespace is the addon's too
    host_uid: int  # the addon's own unprivileged uid (its files are its alone)
    provider: str
    resource_id: str  # database and user name
    password: str
    port: int
    memory_mb: int
    max_connections: int


class AddonServers(Protocol):
    """Runs addon servers. Every method raises ``AddonError`` in words on failure."""

    def start(self) -> None:
        """Begin supervising (servers are started and restarted from then on)."""
        ...

    def shutdown(self) -> None:
        """Stop every server cleanly; ``ensure_running`` brings them back."""
        ...

    def host(self, app_uid: int) -> str:
        """Where the app's instances reach their addons (in their network namespace)."""
        ...

    def free_port(self, provider: str) -> int:
        """A port for a new addon of ``provider``."""
        ...

    def provision(self, spec: AddonSpec) -> None:
        """Create the addon's data (its database, user and password) and start it."""
        ...

    def ensure_running(self, spec: AddonSpec) -> None:
        """Start it (supervised from then on) unless it runs already."""
        ...

    def wait_until_ready(self, timeout: float) -> list[str]:
        """Wait until every server ``ensure_running`` asked for accepts connections; the
        ids of those that still do not after ``timeout`` seconds."""
        ...

    def restart(self, spec: AddonSpec) -> None:
        """Stop it and start it again with ``spec``'s limits (a plan change), on its data."""
        ...

    def remove(self, spec: AddonSpec) -> None:
        """Stop it and delete its data."""
        ...

    def backup(self, spec: AddonSpec, target: Path) -> None:
        """Write a dump of its data to ``target``."""
        ...

    def restore(self, spec: AddonSpec, source: Path) -> None:
        """Replace its data with the dump in ``source``."""
        ...

    def version(self, provider: str) -> str:
        """The server's version, as people read it (``15.4``)."""
        ...
