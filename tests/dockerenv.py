"""The docker runtime's test environment: a Docker engine (started if none answers), the
minimal stack image (built once, cached outside the clone by its recipe's hash) and a
registry with htpasswd authentication (Debian's docker-registry), all real.

``DOCKYARD_REQUIRE_DOCKER=1`` (set by .ci/run) turns every skip here into a failure, so
CI cannot pass by skipping the docker tests.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from dockyard.runtime.docker import stack
from dockyard.runtime.docker.registry import Registry, RegistryAccess
from dockyard.runtime.swarm import firewall as swarm_firewall

STACK_CACHE = Path(os.environ.get("DOCKYARD_TEST_STACK_CACHE", "/var/cache/dockyard-test-stack"))
DOCKER_SOCKET = "unix:///var/run/docker.sock"
REGISTRY_USER = "dockyard"
REGISTRY_PASSWORD = "test-registry-secret"
STARTUP_SECONDS = 60


def required() -> bool:
    return os.environ.get("DOCKYARD_REQUIRE_DOCKER") == "1"


def unavailable(reason: str) -> None:
    """Skip, or fail when the docker tests are required (CI)."""
    if required():
        pytest.fail(f"docker tests are required (DOCKYARD_REQUIRE_DOCKER=1): {reason}")
    pytest.skip(reason)


def _answers(url: str) -> bool:
    # A plain connection first: the SDK leaks the socket of a connection that fails.
    path = url.removeprefix("unix://")
    try:
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(path)
    except OSError:
        return False
    client = docker.DockerClient(base_url=url, timeout=5)
    try:
        client.ping()
    except docker.errors.DockerException:
        return False
    finally:
        client.close()
    return True


def _wait(condition: object, *, what: str, seconds: float = STARTUP_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextlib.contextmanager
def docker_engine() -> Iterator[docker.DockerClient]:
    """The host's Docker engine; started (and stopped after) when its socket is silent."""
    started: subprocess.Popen[bytes] | None = None
    if not _answers(DOCKER_SOCKET):
        if shutil.which("dockerd") is None:
            unavailable("dockerd is not installed (scripts/setup.sh installs docker.io)")
        log = open(Path(tempfile.gettempdir()) / "dockyard-test-dockerd.log", "ab")  # noqa: SIM115
        started = subprocess.Popen(["dockerd"], stdout=log, stderr=log)
        log.close()
        _wait(lambda: _answers(DOCKER_SOCKET), what="dockerd to answer")
    client = docker.DockerClient(base_url=DOCKER_SOCKET, timeout=120)
    try:
        yield client
    finally:
        client.close()
        if started is not None:
            started.terminate()
            started.wait(30)


def minimal_stack(client: docker.DockerClient) -> str:
    """The tests' stack (minbase + python3) in the engine: from the engine, else from the
    cached tarball, else built (about a minute) into that cache first."""
    if shutil.which("mmdebstrap") is None and not stack.present(client, stack.MINIMAL):
        cached = STACK_CACHE / f"{stack.MINIMAL.name}-{stack.MINIMAL.digest}.tar"
        if not cached.is_file():
            unavailable("mmdebstrap is not installed (scripts/setup.sh installs it)")
    return stack.ensure(client, stack.MINIMAL, STACK_CACHE)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _bcrypt(password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # glibc's bcrypt; the registry's htpasswd wants bcrypt hashes

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))  # noqa: S324 - bcrypt, not weak


@dataclass
class RunningRegistry:
    access: RegistryAccess
    root: Path
    config: Path
    process: subprocess.Popen[bytes]

    def client(self) -> Registry:
        return Registry(self.access)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)

    def garbage_collect(self) -> str:
        """The registry's offline garbage collection (it must be stopped meanwhile)."""
        done = subprocess.run(
            ["docker-registry", "garbage-collect", "--delete-untagged", str(self.config)],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout


@contextlib.contextmanager
def registry(base: Path) -> Iterator[RunningRegistry]:
    """Debian's docker-registry on a free loopback port (dockerd treats 127.0.0.0/8 as an
    insecure registry: plain HTTP), with one htpasswd account and deletes enabled."""
    binary = shutil.which("docker-registry")
    if binary is None:
        unavailable("docker-registry is not installed (scripts/setup.sh installs it)")
        raise AssertionError("unreachable")
    port = _free_port()
    root = base / "registry"
    root.mkdir(parents=True)
    (base / "htpasswd").write_text(f"{REGISTRY_USER}:{_bcrypt(REGISTRY_PASSWORD)}\n")
    config = base / "registry.yml"
    config.write_text(
        f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
auth:
  htpasswd:
    realm: dockyard
    path: {base / "htpasswd"}
"""
    )
    log = open(base / "registry.log", "ab")  # noqa: SIM115
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    log.close()
    access = RegistryAccess(
        address=f"127.0.0.1:{port}",
        username=REGISTRY_USER,
        password=REGISTRY_PASSWORD,
        scheme="http",
    )

    def answers() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        return False

    _wait(answers, what="the registry to answer")
    running = RunningRegistry(access=access, root=root, config=config, process=process)
    try:
        yield running
    finally:
        if process.poll() is None:
            running.stop()


@contextlib.contextmanager
def podman_engine(base: Path, insecure_registry: str) -> Iterator[tuple[docker.DockerClient, str]]:
    """Podman's Docker-compatible API on a socket of its own (``podman system service``),
    with runc (crun is not installed here) and the test registry allowed over HTTP."""
    binary = shutil.which("podman")
    if binary is None:
        unavailable("podman is not installed (scripts/setup.sh installs it)")
        raise AssertionError("unreachable")
    registries = base / "registries.conf"
    registries.write_text(
        f'unqualified-search-registries = []\n[[registry]]\nlocation = "{insecure_registry}"\n'
        "insecure = true\n"
    )
    socket_url = f"unix://{base / 'podman.sock'}"
    log = open(base / "podman.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [binary, "--runtime", "runc", "system", "service", "--time=0", socket_url],
        stdout=log,
        stderr=log,
        env={**os.environ, "CONTAINERS_REGISTRIES_CONF": str(registries)},
    )
    log.close()
    try:
        _wait(lambda: _answers(socket_url), what="podman's socket to answer")
        client = docker.DockerClient(base_url=socket_url, timeout=120)
        try:
            yield client, socket_url
        finally:
            client.close()
    finally:
        process.terminate()
        process.wait(30)



def _advertise_address() -> str:
    """The host's address on its default route: what the swarm's node reports, so the
    router reaches published ports through the engine's NAT rather than its userland
    proxy on the loopback (which accepts a connection even when the task is gone)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: only the route is chosen
            address: str = probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"
    return address


@contextlib.contextmanager
def swarm(client: docker.DockerClient) -> Iterator[str]:
    """A single-node swarm on the engine (``docker swarm init`` if it is not in one; left
    again afterwards), and a name prefix of its own for this test session's services and
    networks, all removed at the end whatever the tests left."""
    state = (client.info().get("Swarm") or {}).get("LocalNodeState")
    started = False
    if state != "active":
        try:
            client.swarm.init(advertise_addr=_advertise_address(), listen_addr="0.0.0.0:2377")
        except docker.errors.APIError as exc:
            unavailable(f"docker swarm init failed: {exc.explanation or exc}")
        started = True
    prefix = f"dyt{os.getpid() % 100000:05d}"
    try:
        yield prefix
    finally:
        label = f"dockyard.swarm={prefix}"
        for service in client.api.services(filters={"label": label}):
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_service(service["ID"])

        def networks_gone() -> bool:
            for network in client.api.networks(filters={"label": label}):
                with contextlib.suppress(docker.errors.APIError):
                    client.api.remove_network(network["Id"])
            return not client.api.networks(filters={"label": label})

        with contextlib.suppress(RuntimeError):
            _wait(networks_gone, what="the test swarm's networks to go", seconds=30)
        remove_swarm_rules()
        if started:
            client.swarm.leave(force=True)


def remove_swarm_rules() -> None:
    """The iptables rules the swarm runtime inserted (``runtime/swarm/firewall.py``), so
    the host is left as the other tests expect it (some read DOCKER-USER's order)."""
    for chain in ("INPUT", swarm_firewall.DOCKER_USER):
        listed = subprocess.run(
            ["iptables", "-w", "-S", chain], capture_output=True, text=True, check=False
        ).stdout
        for line in listed.splitlines():
            if swarm_firewall.COMMENT in line and line.startswith("-A "):
                rule = shlex.split(line)[1:]
                subprocess.run(["iptables", "-w", "-D", *rule], capture_output=True, check=False)
