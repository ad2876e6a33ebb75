"""DockerRuntime: each instance a container of its release's image.

The container runs the Heroku launcher as the app's uid, with the size's memory limit, a
pids limit, no capabilities, a read-only root and a private ``/tmp``, on the app's own
network. ``tini`` (``init``) is its pid 1, so the app receives SIGTERM as it would
anywhere else, and a signal's death is reported as 128 + the signal, like the local
runtime. Docker's restart policy stays off: the supervisor restarts instances. The
router reaches a web instance at its container's address on the app's network.

Containers outlive the server: ``load`` re-attaches to one by the id kept in its state.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from dockyard.errors import BootError
from dockyard.runtime.base import (
    APP_DIR,
    ProcessHandle,
    ProcessSpec,
    Runtime,
    launch_argv,
    process_env,
)
from dockyard.runtime.docker.engine import is_podman
from dockyard.runtime.docker.network import DEFAULT_POOL, AppNetworks
from dockyard.runtime.logfile import MAX_LINE_BYTES, LogFile, LogFiles

LABEL_APP = "dockyard.app"
LABEL_RELEASE = "dockyard.release"
LABEL_INSTANCE = "dockyard.instance"
# Output left in the engine after the container died is drained for at most this long.
_DRAIN_SECONDS = 5.0
_TMP_BYTES = 256 * 1024**2
_POLL_SECONDS = 0.02
_UID_PROCESSES = 4096
_FIRST_PORT = 20000
_PORT_COUNT = 10000


@dataclass(eq=False)
class DockerHandle(ProcessHandle):
    container_id: str = ""
    reader: threading.Thread | None = field(default=None, repr=False)
    log: LogFile | None = field(default=None, repr=False)
    stop_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    exit_status: int | None = None
    stopped: bool = False


class DockerRuntime(Runtime):
    def __init__(
        self,
        client: docker.DockerClient,
        *,
        image_for: Callable[[ProcessSpec], str],
        networks: AppNetworks | None = None,
        network_pool: ipaddress.IPv4Network = DEFAULT_POOL,
        blocked_networks: tuple[ipaddress.IPv4Network, ...] = (),
        log_files: LogFiles | None = None,
    ) -> None:
        self._client = client
        self._image_for = image_for
        self._networks = networks or AppNetworks(
            client, pool=network_pool, blocked=blocked_networks
        )
        self._stream_ends_with_container = not is_podman(client)
        self._logs = log_files or LogFiles()
        self._ports_lock = threading.Lock()
        self._ports: set[int] = set()
        self._next_port = secrets.randbelow(_PORT_COUNT)

    @property
    def client(self) -> docker.DockerClient:
        return self._client

    @property
    def networks(self) -> AppNetworks:
        return self._networks

    def start(self, spec: ProcessSpec) -> ProcessHandle:
        image = self._image_for(spec)
        port = self._reserve_port() if spec.is_web else None
        network = self._networks.acquire(spec.app)
        container: Container | None = None
        try:
            container = self._create(spec, image, port, network)
            container.start()
            container.reload()
        except docker.errors.ImageNotFound:
            self._networks.release(spec.app)
            self._release_port(port)
            raise BootError(
                f"The {spec.name} process could not be started: its image {image} is missing.",
                timed_out=False,
            ) from None
        except docker.errors.APIError as exc:
            if container is not None:  # created, but it would not start: not kept
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)
            self._networks.release(spec.app)
            self._release_port(port)
            raise BootError(
                f"The {spec.name} process could not be started: {exc.explanation or exc}",
                timed_out=False,
            ) from None
        return self._attach(spec, container, port, since=None)

    def poll(self, handle: ProcessHandle) -> int | None:
        docker_handle = _docker(handle)
        if docker_handle.exit_status is not None:
            return docker_handle.exit_status
        # The engine ends a followed log stream when the container ends: while the copy
        # runs, the container does, and the supervisor's ten polls a second per instance
        # cost the engine nothing. Only then is it asked for the exit status.
        # Podman's compatible API (4.3) does not always end the stream: it is asked.
        reader = docker_handle.reader
        if self._stream_ends_with_container and reader is not None and reader.is_alive():
            return None
        try:
            state = self._client.api.inspect_container(docker_handle.container_id)["State"]
        except docker.errors.NotFound:
            docker_handle.exit_status = 128 + 9  # removed from outside: as good as killed
            return docker_handle.exit_status
        if state.get("Running") or state.get("Status") in ("created", "restarting"):
            return None
        docker_handle.exit_status = int(state.get("ExitCode", 0))
        return docker_handle.exit_status

    def stop(self, handle: ProcessHandle, *, grace: float) -> None:
        docker_handle = _docker(handle)
        with docker_handle.stop_lock:
            if docker_handle.stopped:
                return
            cid = docker_handle.container_id
            if self.poll(docker_handle) is None and grace > 0:
                self._signal(cid, "SIGTERM")
                deadline = time.monotonic() + grace
                while self.poll(docker_handle) is None and time.monotonic() < deadline:
                    time.sleep(_POLL_SECONDS)
            if self.poll(docker_handle) is None:
                self._signal(cid, "SIGKILL")
                self._wait_exit(docker_handle)
            if docker_handle.reader is not None:
                docker_handle.reader.join(_DRAIN_SECONDS)
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                self._client.api.remove_container(cid, force=True)
            if docker_handle.log is not None:
                self._logs.release(docker_handle.log)
            self._release_port(handle.port)
            self._networks.release(handle.spec.app)
            docker_handle.stopped = True

    def load(self, spec: ProcessSpec, state: Mapping[str, Any]) -> ProcessHandle | None:
        if state.get("runtime") != "docker" or not state.get("container"):
            return None
        try:
            container = self._client.containers.get(str(state["container"]))
        except docker.errors.NotFound:
            return None
        if container.status != "running":
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
            return None
        self._networks.acquire(spec.app)
        port = state.get("port")
        if isinstance(port, int):
            with self._ports_lock:
                self._ports.add(port)
        # Output written while no server followed it is taken from the log file's last
        # write on, so nothing is copied twice.
        since = spec.log_path.stat().st_mtime if spec.log_path.exists() else None
        return self._attach(spec, container, port if isinstance(port, int) else None, since=since)

    # -- helpers ------------------------------------------------------------------------

    def _create(
        self, spec: ProcessSpec, image: str, port: int | None, network: str
    ) -> Container:
        limits = spec.limits
        memory = limits.memory_bytes
        return self._client.containers.create(
            image,
            command=launch_argv(spec.command),
            name=f"dockyard-{spec.container}-{secrets.token_hex(4)}",
            hostname=spec.container[:63],
            environment=process_env(spec, port),
            working_dir=APP_DIR,
            user=f"{spec.host_uid}:{spec.host_uid}",
            labels={
                LABEL_APP: spec.app,
                LABEL_RELEASE: spec.release_id,
                LABEL_INSTANCE: spec.name,
            },
            network=network,
            init=True,
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={_TMP_BYTES},mode=1777"},  # noqa: S108
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            mem_limit=memory,
            memswap_limit=memory,  # no swap beyond the limit: the size means what it says
            pids_limit=limits.max_processes,
            ulimits=[
                docker.types.Ulimit(name="nofile", soft=limits.open_files, hard=limits.open_files),
                docker.types.Ulimit(
                    name="fsize", soft=limits.max_file_bytes, hard=limits.max_file_bytes
                ),
                # Explicit, because Podman otherwise asks for its own default, above what
                # the engine may grant ("error setting rlimit type 6"). It counts every
                # process of the app's uid on the host (all its instances): pids_limit is
                # the per-container bound, this one only a backstop.
                docker.types.Ulimit(name="nproc", soft=_UID_PROCESSES, hard=_UID_PROCESSES),
            ],
            restart_policy={"Name": "no"},
            log_config={"Type": "json-file", "Config": {"max-size": "10m", "max-file": "1"}},
            detach=True,
        )

    def _attach(
        self, spec: ProcessSpec, container: Container, port: int | None, *, since: float | None
    ) -> DockerHandle:
        host = _address(container) if spec.is_web else ""
        if spec.is_web and not host:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
            self._networks.release(spec.app)
            self._release_port(port)
            raise BootError(
                f"The {spec.name} process has no address on its app's network.", timed_out=False
            )
        log = self._logs.acquire(spec.log_path)
        reader = threading.Thread(
            target=self._copy_logs,
            args=(container.id, log, since),
            name=f"log {spec.container}",
            daemon=True,
        )
        reader.start()
        return DockerHandle(
            spec=spec,
            host=host or "127.0.0.1",
            port=port,
            state={"runtime": "docker", "container": container.id, "port": port},
            container_id=str(container.id),
            reader=reader,
            log=log,
        )

    def _copy_logs(self, container_id: str, log: LogFile, since: float | None) -> None:
        """The container's output, line by line, into the app's log file until it ends.
        A stream cut while the container runs (the API's read timeout on a quiet app, an
        engine restart) is followed again from the last output on."""
        while True:
            since = self._follow(container_id, log, since)
            try:
                state = self._client.api.inspect_container(container_id)["State"]
            except (docker.errors.APIError, OSError):
                break  # removed: nothing more will come
            if not state.get("Running"):
                break
        self._exited()

    def _follow(self, container_id: str, log: LogFile, since: float | None) -> float | None:
        kwargs: dict[str, Any] = {"stream": True, "follow": True}
        if since is not None:
            kwargs["since"] = since
        pending = b""
        with contextlib.suppress(docker.errors.APIError, OSError, ValueError):
            stream = self._client.api.logs(container_id, **kwargs)
            try:
                for chunk in stream:
                    since = time.time()
                    pending += chunk
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        log.write(line)
                    while len(pending) > MAX_LINE_BYTES:
                        log.write(pending[:MAX_LINE_BYTES])
                        pending = pending[MAX_LINE_BYTES:]
            finally:
                # Its connection closed now, not whenever the collector gets to it
                # (Podman's streams were left open otherwise).
                stream.close()
        if pending:
            log.write(pending)
        return since

    def _signal(self, container_id: str, signame: str) -> None:
        # Not running any more (it ended meanwhile): nothing to signal.
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self._client.api.kill(container_id, signal=signame)

    def _wait_exit(self, handle: DockerHandle) -> None:
        deadline = time.monotonic() + 30
        while self.poll(handle) is None and time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)

    def _reserve_port(self) -> int:
        # Each web instance has its own network namespace, so any port is free in it;
        # distinct ones keep endpoints and logs unambiguous, as with the local runtime.
        # Below the ephemeral range: Docker's embedded DNS listens on a random ephemeral
        # port inside every container of a user-defined network.
        with self._ports_lock:
            for _ in range(_PORT_COUNT):
                self._next_port = (self._next_port + 1) % _PORT_COUNT
                port = _FIRST_PORT + self._next_port
                if port not in self._ports:
                    self._ports.add(port)
                    return port
        raise BootError("No free port was found for the web process.", timed_out=False)

    def _release_port(self, port: int | None) -> None:
        with self._ports_lock:
            self._ports.discard(port or 0)


def _address(container: Container) -> str:
    networks = container.attrs.get("NetworkSettings", {}).get("Networks", {}) or {}
    for settings in networks.values():
        address = settings.get("IPAddress")
        if address:
            return str(address)
    return ""


def _docker(handle: ProcessHandle) -> DockerHandle:
    if not isinstance(handle, DockerHandle):
        raise TypeError(f"not a docker process handle: {handle!r}")
    return handle
