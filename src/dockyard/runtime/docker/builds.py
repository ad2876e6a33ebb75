"""Build steps in containers of the stack image (``StepExecutor``), when apps run in
containers: a build then runs on the same root file system as its release will.

Each step is a container of the stack with the step's mounts (``/app``, ``/cache``,
``/env``, the buildpack, uv), the host's trust and package index configuration read-only
(``HOST_CONFIG``: the CA bundle the TLS-intercepting proxy needs, pip's and uv's system
configuration, local wheel directories), as the app's uid, with no capability, a
read-only root and a private ``/tmp``, the build's memory and process limits, on the
app's network (``AppNetworks``: the internet, never the host's services nor other apps).

Its output comes through the engine's attach stream (stdout and stderr told apart by the
stream's frames), read as it comes; a cancelled or timed-out step's container is killed
and removed before ``run`` returns.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import select
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
import docker.types

from dockyard.errors import BootError, BuildError
from dockyard.pipeline.executor import POLL_SECONDS, Output, Step, StepExecutor
from dockyard.runtime.docker.network import AppNetworks

LABEL_BUILD = "dockyard.build-of"
# What a build needs of the host's configuration to reach the package index: mounted
# read-only at the same path when the host has it.
HOST_CONFIG = (
    "/etc/ssl/certs",
    "/etc/pip.conf",
    "/etc/uv",
    "/opt/wheels",
    "/opt/pypi",
    "/opt/pypi-more",
)
# The build uid's processes on the whole host (a backstop; pids_limit is the container's
# own bound). Explicit: Podman otherwise asks for more than it may grant.
_UID_PROCESSES = 4096
# The engine answers in frames: 8 bytes (stream, 0, 0, 0, size big-endian), then the data.
_STDOUT, _STDERR = 1, 2
_HEADER_BYTES = 8
# A quiet step is asked about every this many seconds, in case its stream does not end
# with it (Podman's sometimes does not).
_INSPECT_SECONDS = 1.0
SELF_KILL_GRACE_SECONDS = 10.0


class ContainerExecutor(StepExecutor):
    def __init__(self, client: docker.DockerClient, *, image: str, networks: AppNetworks) -> None:
        self._client = client
        self._image = image
        self._networks = networks

    def run(
        self, step: Step, *, output: Output, release: Output | None, check: Callable[[], None]
    ) -> int:
        check()
        with self._network(step.app) as network, self._container(step, network) as cid:
            sock = self._client.api.attach_socket(
                cid, params={"stdout": 1, "stderr": 1, "stream": 1}
            )
            raw = _raw_socket(sock)
            try:
                self._call(self._client.api.start, cid, what="started")
                handlers = {_STDOUT: release or output, _STDERR: output}
                _pump(raw, handlers, check=check, running=lambda: self._running(cid))
            finally:
                with contextlib.suppress(OSError):
                    sock.close()
            return int(self._client.api.wait(cid, timeout=30).get("StatusCode", 137))

    @contextlib.contextmanager
    def _network(self, app: str) -> Iterator[str]:
        if not app:  # nothing to reach (a step of no app's)
            yield "none"
            return
        try:
            name = self._networks.acquire(app)
        except BootError as exc:
            raise BuildError(f"The build could not be given a network: {exc.message}") from None
        try:
            yield name
        finally:
            self._networks.release(app)

    @contextlib.contextmanager
    def _container(self, step: Step, network: str) -> Iterator[str]:
        container = self._call(self._create, step, network, what="created")
        try:
            yield container
        finally:
            # Killed first if it still runs: a cancelled, timed-out or failed step ends here.
            with contextlib.suppress(docker.errors.APIError):
                self._client.api.remove_container(container, force=True)

    def _create(self, step: Step, network: str) -> str:
        limits = step.limits
        mounts = [
            docker.types.Mount(
                mount.target, str(mount.source), type="bind", read_only=not mount.writable
            )
            for mount in step.mounts
        ]
        mounts += [
            docker.types.Mount(path, path, type="bind", read_only=True)
            for path in HOST_CONFIG
            if os.path.exists(path)
        ]
        host_config: dict[str, Any] = {
            "mounts": mounts,
            "network_mode": network,
            "init": True,
            "read_only": True,
            "tmpfs": {"/tmp": "rw,nosuid,nodev,mode=1777"},  # noqa: S108 - the step's own
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "pids_limit": limits.max_processes,
            "ulimits": [
                docker.types.Ulimit(name="nofile", soft=limits.open_files, hard=limits.open_files),
                docker.types.Ulimit(
                    name="fsize", soft=limits.max_file_bytes, hard=limits.max_file_bytes
                ),
                docker.types.Ulimit(name="nproc", soft=_UID_PROCESSES, hard=_UID_PROCESSES),
                docker.types.Ulimit(name="core", soft=0, hard=0),
            ],
            # The output is read from the attach stream (attached before the start, so
            # none is missed) and kept nowhere by the engine. An attach with ``logs``
            # would replay the log driver's copy, and with none it ends at once.
            "log_config": docker.types.LogConfig(type="none"),
        }
        if limits.memory_bytes:
            host_config["mem_limit"] = limits.memory_bytes
            host_config["memswap_limit"] = limits.memory_bytes  # no swap beyond the limit
        command = list(step.argv)
        if step.time_limit is not None:
            # Killed by itself a little after the server would have (the server's own
            # deadline says it in words): a server that died mid-build leaves no build
            # running for ever.
            seconds = math.ceil(max(step.time_limit, 0.0) + SELF_KILL_GRACE_SECONDS)
            command = ["/usr/bin/timeout", "--signal=KILL", str(seconds), *command]
        answer = self._client.api.create_container(
            self._image,
            command=command,
            name=f"dockyard-build-{step.app or step.hostname}-{secrets.token_hex(4)}",
            hostname=step.hostname,
            environment=dict(step.env),
            working_dir=step.cwd,
            user=f"{step.host_uid}:{step.host_uid}",
            labels={LABEL_BUILD: step.app or step.hostname},
            host_config=self._client.api.create_host_config(**host_config),
            stdin_open=False,
            tty=False,
        )
        return str(answer["Id"])

    def _running(self, cid: str) -> bool:
        try:
            state = self._client.api.inspect_container(cid)["State"]
        except docker.errors.NotFound:
            return False
        return bool(state.get("Running")) or state.get("Status") == "created"

    def _call(self, action: Callable[..., Any], *args: Any, what: str) -> Any:
        try:
            return action(*args)
        except docker.errors.ImageNotFound:
            raise BuildError(
                f"The build container could not be {what}: the stack image {self._image} is"
                " missing from the container engine. The operator must run"
                " `dockyard admin build-stack`."
            ) from None
        except docker.errors.APIError as exc:
            raise BuildError(
                f"The build container could not be {what}: {exc.explanation or exc}"
            ) from None


def _raw_socket(sock: Any) -> socket.socket:
    """The attach stream's socket itself (the SDK hands out a wrapper), blocking."""
    raw = getattr(sock, "_sock", sock)
    raw.settimeout(None)
    return raw


def _pump(
    raw: socket.socket,
    handlers: dict[int, Output],
    *,
    check: Callable[[], None],
    running: Callable[[], bool],
) -> None:
    """Each frame's data to its stream's handler until the stream ends (or the container
    has, when the stream does not say so), calling ``check`` every ``POLL_SECONDS``."""
    pending = b""
    quiet_since = time.monotonic()
    while True:
        check()
        ready, _, _ = select.select([raw], [], [], POLL_SECONDS)
        if not ready:
            if time.monotonic() - quiet_since >= _INSPECT_SECONDS:
                quiet_since = time.monotonic()
                if not running():
                    return
            continue
        chunk = raw.recv(65536)
        if not chunk:
            return
        quiet_since = time.monotonic()
        pending += chunk
        while len(pending) >= _HEADER_BYTES:
            size = int.from_bytes(pending[4:_HEADER_BYTES], "big")
            if len(pending) < _HEADER_BYTES + size:
                break
            stream = pending[0]
            data = pending[_HEADER_BYTES : _HEADER_BYTES + size]
            pending = pending[_HEADER_BYTES + size :]
            handlers.get(stream, handlers[_STDERR])(data)
