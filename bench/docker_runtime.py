"""The docker runtime (DOCKYARD_RUNTIME=docker): deploy latency against the floor of the
same image's ``docker run`` until its port accepts, and a warm rebuild against a cold one
(builds in containers of the stack; Flask and gunicorn from the package index). The warm
image must share every layer but the app's own with the cold one (its dependencies layer
is reused, not pushed again); the notes give each phase's median and where the pushing
phase's time went (the image's build and push, read from the deployment log).

Needs a Docker engine, the minimal stack and Debian's docker-registry: the tests' own
environment (tests/dockerenv.py) provides all three. Without an engine the row says so
and checks nothing.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

import docker
import docker.errors

from bench import apps, engines
from bench.harness import (
    PHASES,
    Api,
    Mode,
    Result,
    StreamRecorder,
    median,
    running_server,
    timed_deploy,
)
from dockyard.runtime.base import launch_argv
from dockyard.runtime.docker.registry import Registry

NAME = "docker_runtime"
TARGET_OVERHEAD_SECONDS = 3.0
TARGET_WARM_RATIO = 1 / 2


def run(mode: Mode) -> Result:
    result = Result(NAME)
    with engines.engine(result) as engine:
        if engine is not None:
            _measure(
                result, mode, engine.client, engine.settings("docker"), engine.registry.client()
            )
            result.notes.append(f"stack {engine.stack}")
    return result


def _measure(
    result: Result, mode: Mode, client: docker.DockerClient, env: dict[str, str], registry: Registry
) -> None:
    rounds = mode.pick(3, 5)
    deploys: list[dict[str, Any]] = []
    floors: list[float] = []
    pairs: list[dict[str, Any]] = []
    with running_server(NAME, **env) as server:
        api = Api(server, server.create_user())
        try:
            for index in range(rounds):
                app = f"docker-latency-{index}"
                created = api.create_app(app)
                recorder = StreamRecorder(created["links"]["deployments_stream"], api.token)
                try:
                    deploys.append(timed_deploy(api, recorder, app, apps.stdlib_app()))
                finally:
                    recorder.close()
                floors.append(_floor(client, app))
            for index in range(mode.pick(1, 2)):
                app = f"docker-flask-{index}"
                created = api.create_app(app)
                recorder = StreamRecorder(created["links"]["deployments_stream"], api.token)
                try:
                    cold = timed_deploy(
                        api, recorder, app, apps.flask_app("cold"), expect=b"hello cold"
                    )
                    warm = timed_deploy(
                        api, recorder, app, apps.flask_app("warm"), expect=b"hello warm"
                    )
                finally:
                    recorder.close()
                pairs.append({"app": app, "cold": cold, "warm": warm})
        finally:
            api.close()
    total, floor = median([d["total"] for d in deploys]), median(floors)
    result.check(
        "docker: first 200, median", "s", total, floor,
        f"dockyard - docker run floor <= {TARGET_OVERHEAD_SECONDS:.1f} s ({total - floor:.2f} s)",
        total - floor <= TARGET_OVERHEAD_SECONDS,
    )  # fmt: skip
    cold_total = median([p["cold"]["total"] for p in pairs])
    warm_total = median([p["warm"]["total"] for p in pairs])
    result.check(
        "docker: warm deploy vs cold, median", "s", warm_total, cold_total,
        "warm <= 1/2 of cold", warm_total <= cold_total * TARGET_WARM_RATIO,
    )  # fmt: skip
    shared = [_only_app_layer_new(registry, pair) for pair in pairs]
    registry.close()
    result.check(
        "docker: warm image's new layers", "layers", max(shared), 1,
        "only the app's own layer is new (dependencies reused)", max(shared) == 1,
    )  # fmt: skip
    pushing = median([d["pushing"] for d in deploys])
    result.notes.append(f"median pushing (image build + push + launch) {pushing:.3f} s")
    for kind in ("cold", "warm"):
        phases = {phase: median([p[kind][phase] for p in pairs]) for phase in PHASES}
        publish = median([_publish_seconds(p[kind]["log"]) for p in pairs])
        result.notes.append(
            f"{kind} phases (s): "
            + ", ".join(f"{k} {v:.3f}" for k, v in phases.items())
            + f"; image build + push {publish:.3f}"
        )
    result.samples = {"floor_seconds": floors, "deployments": deploys, "rebuilds": pairs}


def _only_app_layer_new(registry: Registry, pair: dict[str, Any]) -> int:
    """How many of the warm image's layers the cold image does not have."""
    layers = {}
    for kind in ("cold", "warm"):
        app = pair["app"]
        _, manifest = registry.manifest(f"dockyard/{app}", pair[kind]["deployment_id"])
        layers[kind] = [layer["digest"] for layer in manifest["layers"]]
    return len([digest for digest in layers["warm"] if digest not in layers["cold"]])


def _publish_seconds(log: list[tuple[float, str]]) -> float:
    """From the image's build starting to its layers pushed, as the deployment log says."""
    start = next(stamp for stamp, line in log if "Building and pushing the release image" in line)
    end = next(stamp for stamp, line in log if "Image layers:" in line)
    return end - start


def _floor(client: docker.DockerClient, app: str) -> float:
    """The app's own image, ``docker run`` by hand on a plain bridge, until its port
    accepts: what any container platform pays to start it."""
    image = next(c.image for c in client.containers.list(filters={"label": f"dockyard.app={app}"}))
    started = time.monotonic()
    container = client.containers.run(
        image,
        command=launch_argv("python3 app.py"),
        environment={"PORT": "8000", "HOME": "/tmp"},
        detach=True,
        init=True,
    )
    try:
        container.reload()
        address = container.attrs["NetworkSettings"]["IPAddress"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((address, 8000), 0.2):
                return time.monotonic() - started
            time.sleep(0.005)
        raise RuntimeError("the floor's container never accepted connections")
    finally:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
