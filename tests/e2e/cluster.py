"""A dockyard of separate processes for end-to-end tests: ``dockyard api``, workers and
routers on PostgreSQL, each in its own session and with a data directory of its own (no
shared disk)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from tests.conftest import ServerProcess, free_port, server_data_dir
from tests.e2e.deployer import BuildpackHost, Deployer, file_server
from tests.helpers import tar_gz_from_files, wait_for


def web_app(marker: str) -> bytes:
    """An app whose page (a directory listing) names ``marker``."""
    return tar_gz_from_files(
        {"Procfile": "web: python3 -m http.server $PORT\n", f"{marker}.txt": marker}
    )


@dataclass
class Cluster:
    """The processes, started in their own sessions so that a kill reaches their builds."""

    database_url: str
    logs: Path
    api_port: int = field(default_factory=free_port)
    # Where every process reaches the API (DOCKYARD_PUBLIC_URL): the api process on
    # api_port, unless a load balancer in front of several says otherwise.
    public_url: str = ""
    router_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    data_dirs: dict[str, Path] = field(default_factory=dict)  # one per process name
    # How each process was started, to start it again (``restart``).
    launches: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    worker_env: dict[str, str] = field(
        default_factory=lambda: {
            "DOCKYARD_WORKERS": "2",
            "DOCKYARD_LEASE_SECONDS": "3",
        }
    )

    @property
    def api_url(self) -> str:
        return self.public_url or f"http://127.0.0.1:{self.api_port}"

    def env(self, name: str, **extra: str) -> dict[str, str]:
        data_dir = self.data_dirs.setdefault(name, server_data_dir())
        return {
            **os.environ,
            "DOCKYARD_DATABASE_URL": self.database_url,
            "DOCKYARD_DATA_DIR": str(data_dir),
            "DOCKYARD_PORT": str(self.api_port),
            "DOCKYARD_PUBLIC_URL": self.api_url,
            "DOCKYARD_ROUTER_PORT": str(self.router_port),
            "DOCKYARD_BOOT_TIMEOUT": "20",
            **extra,
        }

    def start(self, name: str, command: str, *, ready: str | None = None, **extra: str) -> None:
        """Start ``dockyard command`` as ``name``; with ``ready``, until its log says that
        (once more than it had said before)."""
        said = self._said(name, ready)
        self.launches[name] = (command, extra)
        with open(self.logs / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "dockyard.cli", command],
                env=self.env(name, **extra),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if ready is not None:

            def started() -> bool:
                self.check_alive()
                return self._said(name, ready) > said

            wait_for(started, timeout=60, what=f"dockyard {name} to start")

    def _said(self, name: str, line: str | None) -> int:
        log = self.logs / f"{name}.log"
        if line is None or not log.exists():
            return 0
        return log.read_text(errors="replace").count(line)

    def start_api(self, name: str, port: int) -> str:
        """One more ``dockyard api`` on ``port``, with a data dir of its own; its own
        address (DOCKYARD_INTERNAL_URL), which the other processes fetch what it holds from."""
        own = f"http://127.0.0.1:{port}"
        self.start(name, "api", DOCKYARD_PORT=str(port), DOCKYARD_INTERNAL_URL=own)
        return own

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def attach_url(self, name: str) -> str:
        """Where the worker ``name`` serves its one-offs' terminals, as it said at start.
        The workers share a machine and keep the default port: the first takes it, the
        others a free one each."""
        said = re.findall(
            r"one-offs attached on (http://\S+)", (self.logs / f"{name}.log").read_text()
        )
        assert said, f"dockyard {name} did not say where its one-offs attach"
        return said[-1]

    def restart(self, name: str, *, ready: str | None = None) -> None:
        """Stopped as an operator stops it (SIGTERM, waited for), then started again with
        the same command, settings and data directory; with ``ready``, until its log says
        that once more."""
        process = self.processes.pop(name)
        process.terminate()
        process.wait(timeout=60)
        command, extra = self.launches[name]
        self.start(name, command, ready=ready, **extra)

    def check_alive(self) -> bool:
        for name, process in self.processes.items():
            if process.poll() is not None:
                log = (self.logs / f"{name}.log").read_text()[-3000:]
                raise AssertionError(f"dockyard {name} exited: {log}")
        return True

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for name, process in list(self.processes.items()):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
            self.processes.pop(name)
        for data_dir in self.data_dirs.values():
            subprocess.run(["rm", "-rf", str(data_dir)], check=False)

    def create_user(self, username: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "dockyard.cli", "admin", "create-user",
             "--username", username, "--email", f"{username}@example.com"],
            env=self.env("admin"), capture_output=True, check=True, text=True,
        ).stdout
        return out.strip().splitlines()[-1]


def api_answers(cluster: Cluster) -> bool:
    cluster.check_alive()
    try:
        return httpx.get(f"{cluster.api_url}/v1/regions", timeout=1).status_code == 401
    except httpx.HTTPError:
        return False


def lease_owner_pid(database_url: str, deployment_id: str) -> int | None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT lease_owner FROM deployments WHERE id = %s", (deployment_id,)
        ).fetchone()
    owner = row[0] if row else None
    return int(owner.split(":")[1]) if owner else None


class Balancer:
    """A TCP load balancer in front of several api processes, with no stickiness: each
    new connection goes to the backend port ``target`` names, which the test steers."""

    def __init__(self, backends: dict[str, int]) -> None:
        self.backends = backends
        self.target = next(iter(backends))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client:
            try:
                backend = socket.create_connection(("127.0.0.1", self.backends[self.target]))
            except OSError:
                return  # as a balancer whose backend is down: the connection closes
            with backend:
                answers = threading.Thread(target=_pump, args=(backend, client), daemon=True)
                answers.start()
                _pump(client, backend)
                answers.join()

    def close(self) -> None:
        self.listener.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
        sink.shutdown(socket.SHUT_WR)
    except OSError:  # the other side reset: end both directions
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def running_cluster(
    tmp_path: Path,
    postgres_url: str,
    *,
    workers: Mapping[str, str],
    worker_env: Mapping[str, str] | None = None,
    username: str = "pat",
) -> Iterator[tuple[Cluster, Deployer, BuildpackHost]]:
    """One api, the ``workers`` (process name: ``DOCKYARD_WORKER_NAME``, each with
    ``worker_env``) and one router on a fresh database; a ``Deployer`` that drives the api
    and visits the apps through the router process; buildpacks the workers may fetch."""
    buildpacks_dir = tmp_path / "buildpacks"
    buildpacks_dir.mkdir()
    with file_server(buildpacks_dir) as buildpack_port:
        cluster = Cluster(postgres_url, tmp_path)
        cluster.worker_env.update(worker_env or {})
        cluster.worker_env["DOCKYARD_FETCH_ALLOW"] = f"127.0.0.1:{buildpack_port}"
        try:
            cluster.start("api", "api")
            wait_for(lambda: api_answers(cluster), timeout=30, what="dockyard api to answer")
            for process, name in workers.items():
                cluster.start(process, "worker", DOCKYARD_WORKER_NAME=name, **cluster.worker_env)
            cluster.start("router", "router")
            token = cluster.create_user(username)
            front = ServerProcess(
                url=cluster.api_url, router_port=cluster.router_port, data_dir=tmp_path, env={}
            )
            yield (
                cluster,
                Deployer(server=front, token=token),
                BuildpackHost(buildpacks_dir, buildpack_port),
            )
        finally:
            cluster.stop()
