"""What the swarm end-to-end tests share: the settings of a dockyard on the test swarm, an
app that says which task answered (and what it can reach), and looks at its services."""

from __future__ import annotations

import threading
from typing import Any

import docker
import httpx

from tests.dockerenv import RunningRegistry
from tests.e2e.deployer import Deployer


def swarm_settings(running: RunningRegistry, prefix: str) -> dict[str, str]:
    """A dockyard on the test swarm. Swarm's health checks, update monitor and restart
    delay are 1 s (``DOCKYARD_SWARM_CHECK_SECONDS``)."""
    return {
        "DOCKYARD_RUNTIME": "swarm",
        "DOCKYARD_SWARM_PREFIX": prefix,
        "DOCKYARD_SWARM_CHECK_SECONDS": "1",
        "DOCKYARD_STACK": "minimal",
        "DOCKYARD_REGISTRY": f"http://{running.access.address}",
        "DOCKYARD_REGISTRY_USER": running.access.username,
        "DOCKYARD_REGISTRY_PASSWORD": running.access.password,
        "DOCKYARD_BOOT_TIMEOUT": "5",
    }


def service(client: docker.DockerClient, prefix: str, app: str, kind: str = "web") -> Any:
    (found,) = client.api.services(filters={"name": f"{prefix}-{app}-{kind}"})
    return found


def running_containers(client: docker.DockerClient, prefix: str, app: str) -> list[str]:
    return [
        c.id
        for c in client.containers.list(
            filters={"label": f"com.docker.swarm.service.name={prefix}-{app}-web"}
        )
    ]


def answering_hosts(deployer: Deployer, app: str, tries: int = 30) -> set[str]:
    return {deployer.get(app, "/host").text for _ in range(tries)}


def force_update(client: docker.DockerClient, prefix: str, app: str) -> None:
    """``docker service update --force``: Swarm replaces every task of the app's web."""
    web = service(client, prefix, app)
    spec = web["Spec"]
    spec["TaskTemplate"]["ForceUpdate"] = int(spec["TaskTemplate"].get("ForceUpdate", 0)) + 1
    client.api.update_service(
        web["ID"], web["Version"]["Index"], task_template=spec["TaskTemplate"],
        name=spec["Name"], labels=spec["Labels"], mode=spec["Mode"],
        update_config=spec["UpdateConfig"], endpoint_spec=spec["EndpointSpec"],
    )  # fmt: skip


class Poller:
    """Asks for the app's page through the router without a pause, from a thread; keeps
    what failed and what answered."""

    def __init__(self, router_port: int, app: str) -> None:
        self.router_port = router_port
        self.app = app
        self.failures: list[str] = []
        self.seen: set[str] = set()
        self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name=f"poll-{app}")

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        port = self.router_port
        headers = {"Host": f"{self.app}.localhost:{port}"}
        with httpx.Client(headers=headers, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(f"http://127.0.0.1:{port}/")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text[:80]}")
                else:
                    self.answered += 1
                    self.seen.add(response.text)
