"""Shared fixtures: real databases (SQLite file and PostgreSQL), real servers over HTTP."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import psycopg
import pytest
import uvicorn
from starlette.applications import Starlette

from dockyard.api.app import create_app
from dockyard.bootstrap import build_platform
from dockyard.platform import Platform
from dockyard.server import protocol_options
from dockyard.services.auth import create_user
from dockyard.settings import Settings
from tests import dockerenv
from tests.openapi_check import check_response

POSTGRES_ADMIN_URL = os.environ.get(
    "DOCKYARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "tests" / "samples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.fixture
def postgres_url(postgres_available: bool) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    if not postgres_available:
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (scripts/services.sh starts it)")
    name = f"dockyard_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dockyard.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def make_settings(tmp_path: Path, database_url: str = "", **env: str) -> Settings:
    port = free_port()
    mapping = {
        "DOCKYARD_DATA_DIR": str(tmp_path / "data"),
        "DOCKYARD_PORT": str(port),
        "DOCKYARD_ROUTER_PORT": str(free_port()),
        "DOCKYARD_DATABASE_URL": database_url,
        **env,
    }
    return Settings.from_mapping(mapping)


class ThreadServer:
    """uvicorn serving an ASGI app from a thread, on the settings' port."""

    def __init__(self, app: Starlette, settings: Settings) -> None:
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            **protocol_options(settings),  # as serve runs it
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@dataclass
class Api:
    """A running server and a user on it."""

    platform: Platform
    url: str
    token: str
    username: str

    def client(self, token: str | None = None, *, validate: bool = False) -> httpx.Client:
        """A client of the API; with ``validate``, every response must match the
        server's /v1/openapi.json."""

        def check(response: httpx.Response) -> None:
            response.read()
            check_response(self.url, response.request.method, str(response.url), response)

        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token or self.token}"},
            timeout=30,
            event_hooks={"response": [check]} if validate else {},
        )

    def new_user(self, username: str) -> str:
        return create_user(
            db=self.platform.db, username=username, email=f"{username}@example.com"
        ).secret


@contextmanager
def serving_api(settings: Settings) -> Iterator[Api]:
    """The control plane alone (no workers) on ``settings``, with a user "alice"."""
    platform = build_platform(settings)
    token = create_user(db=platform.db, username="alice", email="alice@example.com").secret
    with ThreadServer(create_app(platform), settings):
        yield Api(platform=platform, url=settings.public_url, token=token, username="alice")
    platform.engine.dispose()


@pytest.fixture
def api(tmp_path: Path, database_url: str) -> Iterator[Api]:
    """The control plane alone (no workers): for API behaviour on both databases."""
    with serving_api(make_settings(tmp_path, database_url, DOCKYARD_SOURCE_TTL="600")) as api:
        yield api


@dataclass
class ServerProcess:
    """``dockyard serve`` as a real process."""

    url: str
    router_port: int
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self) -> None:
        assert self.log_path is not None
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dockyard.cli", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dockyard serve exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/v1/regions", timeout=1).status_code == 401:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("dockyard serve did not answer within 30 s")

    def remove_data(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(timeout=60)
        self.process = None

    def create_user(self, username: str) -> str:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "dockyard.cli",
                "admin",
                "create-user",
                "--username",
                username,
                "--email",
                f"{username}@example.com",
            ],
            env=self.env,
            capture_output=True,
            check=True,
            text=True,
        ).stdout
        return out.strip().splitlines()[-1]


# Sandboxes start as an unprivileged uid that must traverse to the data dir. pytest's
# temporary root is 0700 and pytest resets that mode at every session start, so servers
# keep their data here instead.
SERVER_DATA_ROOT = Path(tempfile.gettempdir()) / "dockyard-test-servers"


def server_data_dir() -> Path:
    SERVER_DATA_ROOT.mkdir(mode=0o711, exist_ok=True)
    SERVER_DATA_ROOT.chmod(0o711)
    return Path(tempfile.mkdtemp(dir=SERVER_DATA_ROOT))


def server_process(tmp_path: Path, **extra_env: str) -> ServerProcess:
    port, router_port = free_port(), free_port()
    data_dir = server_data_dir()
    env = {
        **os.environ,
        "DOCKYARD_DATA_DIR": str(data_dir),
        "DOCKYARD_PORT": str(port),
        "DOCKYARD_ROUTER_PORT": str(router_port),
        "DOCKYARD_ATTACH_PORT": str(free_port()),
        "DOCKYARD_BOOT_TIMEOUT": "20",
        **extra_env,
    }
    return ServerProcess(
        url=f"http://127.0.0.1:{port}",
        router_port=router_port,
        data_dir=data_dir,
        env=env,
        log_path=tmp_path / "server.log",
    )


@pytest.fixture
def dockyard_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = server_process(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.remove_data()


# -- the docker runtime's environment (tests/dockerenv.py) ---------------------------------


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    with dockerenv.docker_engine() as client:
        yield client


@pytest.fixture(scope="session")
def test_stack(docker_client: docker.DockerClient) -> str:
    return dockerenv.minimal_stack(docker_client)


@pytest.fixture(scope="session")
def test_registry(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dockerenv.RunningRegistry]:
    with dockerenv.registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="session")
def podman(
    test_registry: dockerenv.RunningRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[docker.DockerClient, str]]:
    """Podman's Docker-compatible API: a client, and the socket's URL."""
    base = tmp_path_factory.mktemp("podman")
    with dockerenv.podman_engine(base, test_registry.access.address) as running:
        yield running


@pytest.fixture(scope="session")
def podman_client(podman: tuple[docker.DockerClient, str]) -> docker.DockerClient:
    return podman[0]


@pytest.fixture(scope="session")
def podman_stack(podman_client: docker.DockerClient) -> str:
    return dockerenv.minimal_stack(podman_client)


@pytest.fixture(scope="session")
def swarm_prefix(docker_client: docker.DockerClient) -> Iterator[str]:
    """A single-node swarm, and the name prefix of this session's services in it."""
    with dockerenv.swarm(docker_client) as prefix:
        yield prefix
