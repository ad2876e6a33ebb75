"""The container engine the docker and swarm benchmarks run on: the tests' own environment
(tests/dockerenv.py) — the host's Docker engine (started if silent), the minimal stack, a
registry with authentication and, when asked, a single-node swarm. Without an engine the
benchmark's row says so and checks nothing."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
from tests import dockerenv

from bench.harness import Result


@dataclass(frozen=True)
class Engine:
    client: docker.DockerClient
    registry: dockerenv.RunningRegistry
    stack: str  # the stack image's tag
    swarm_prefix: str  # this run's service names start with it; "" without a swarm

    def settings(self, runtime: str) -> dict[str, str]:
        """A dockyard server's settings for ``runtime`` (docker or swarm) on this engine."""
        access = self.registry.access
        settings = {
            "DOCKYARD_RUNTIME": runtime,
            "DOCKYARD_STACK": "minimal",
            "DOCKYARD_REGISTRY": f"http://{access.address}",
            "DOCKYARD_REGISTRY_USER": access.username,
            "DOCKYARD_REGISTRY_PASSWORD": access.password,
        }
        if runtime == "swarm":
            settings["DOCKYARD_SWARM_PREFIX"] = self.swarm_prefix
        return settings


@contextlib.contextmanager
def engine(result: Result, *, swarm: bool = False) -> Iterator[Engine | None]:
    """The engine, or None (``result`` then notes why) when there is none."""
    try:
        running = dockerenv.docker_engine()
        client = running.__enter__()
    except BaseException as exc:  # pytest's skip outside pytest: no engine here
        result.notes.append(f"not run: no Docker engine ({exc})")
        yield None
        return
    try:
        stack = dockerenv.minimal_stack(client)
        with (
            tempfile.TemporaryDirectory() as base,
            dockerenv.registry(Path(base)) as registry,
            dockerenv.swarm(client) if swarm else contextlib.nullcontext("") as prefix,
        ):
            yield Engine(client, registry, stack, prefix)
    finally:
        running.__exit__(None, None, None)
