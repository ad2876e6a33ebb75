"""Real network fixtures for isolation tests: hosts "outside" the machine, listeners, probes.

An outside host is a network namespace of the test's own, joined to the host by a veth pair
and routed like any other network the host reaches: a connection an app makes to it leaves
the app's namespace, crosses the host's forwarding and NAT, and arrives as it would from
the Internet. Extra addresses (``169.254.169.254``, a range the operator blocks) are routed
to it too, so that a refused connection proves a rule refused it: from the host, the same
address answers.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dockyard import sandbox
from tests.helpers import wait_for

LISTENER = """
import socket, sys, threading
server = socket.create_server(("0.0.0.0", int(sys.argv[1])), reuse_port=False)
print("ready", flush=True)
def answer(conn):
    with conn:
        conn.sendall(sys.argv[2].encode() + b"\\n")
while True:
    conn, _ = server.accept()
    threading.Thread(target=answer, args=(conn,), daemon=True).start()
"""

# Run with targets as "host:port" arguments; prints one JSON object: target -> what happened.
PROBE = """
import json, socket, sys
results = {}
for target in sys.argv[1:]:
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=3) as conn:
            conn.settimeout(3)
            results[target] = "reached: " + conn.recv(100).decode().strip()
    except OSError as exc:
        results[target] = "failed: " + exc.__class__.__name__ + " " + str(exc)
print(json.dumps(results), flush=True)
"""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def host_primary_address() -> str:
    """The host's own address on its default route (not loopback, not an app's gateway)."""
    routes = json.loads(ip("-j", "route", "get", "192.0.2.254").stdout)
    return str(routes[0]["prefsrc"])


@dataclass
class OutsideHost:
    netns: str
    address: str  # its own address on the link with the host
    extra: Sequence[str] = field(default_factory=tuple)  # addresses routed to it as well
    listeners: list[subprocess.Popen[str]] = field(default_factory=list)

    def listen(self, port: int, answer: str) -> None:
        """A TCP server on every address of the host, answering ``answer`` and closing."""
        self.listeners.append(start_listener(self.netns, port, answer))

    def close(self) -> None:
        for proc in self.listeners:
            stop_listener(proc)


@contextmanager
def outside_host(
    name: str, *, host_if: str, network: str, extra: Sequence[str] = ()
) -> Iterator[OutsideHost]:
    """A namespace ``name`` on ``network`` (a /30: the host gets .1, it gets .2), with
    ``extra`` addresses (each a /32) on it and routed to it from the host."""
    base = network.split("/")[0].rsplit(".", 1)
    host_address, address = f"{base[0]}.{int(base[1]) + 1}", f"{base[0]}.{int(base[1]) + 2}"
    ip("netns", "delete", name, check=False)
    ip("link", "delete", host_if, check=False)
    ip("netns", "add", name)
    outside = OutsideHost(netns=name, address=address, extra=tuple(extra))
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", name)
        ip("addr", "add", f"{host_address}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "addr", "add", f"{address}/30", "dev", "eth0")
        for extra_address in extra:
            ip("-n", name, "addr", "add", f"{extra_address}/32", "dev", "lo")
            ip("route", "replace", f"{extra_address}/32", "via", address, "dev", host_if)
        ip("-n", name, "link", "set", "eth0", "up")
        ip("-n", name, "route", "add", "default", "via", host_address)
        yield outside
    finally:
        outside.close()
        ip("link", "delete", host_if, check=False)  # its routes go with it
        ip("netns", "delete", name, check=False)


def start_listener(netns: str | None, port: int, answer: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", LISTENER, str(port), answer]
    if netns is not None:
        argv = ["nsenter", f"--net=/run/netns/{netns}", *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", "the listener did not start"
    return proc


@contextmanager
def listening(netns: str | None, port: int, answer: str) -> Iterator[None]:
    """A TCP server answering ``answer`` on every address of ``netns`` (None: the host)."""
    proc = start_listener(netns, port, answer)
    try:
        yield
    finally:
        stop_listener(proc)


def stop_listener(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@contextmanager
def host_listener(address: str, answer: str) -> Iterator[int]:
    """A TCP server of the test process on the host (``127.0.0.1`` stands for PostgreSQL,
    Redis, dockyard's API); yields its port."""
    server = socket.create_server((address, 0))
    port = int(server.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(answer.encode() + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        server.shutdown(socket.SHUT_RDWR)  # wakes the accept (closing alone does not)
        server.close()
        thread.join(5)


def connect_from_host(address: str, port: int) -> str:
    with socket.create_connection((address, port), timeout=3) as conn:
        conn.settimeout(3)
        return conn.recv(100).decode().strip()


def probe_in_sandbox(netns: Path, uid: int, targets: Sequence[str]) -> dict[str, str]:
    """Connect to each ``host:port`` from a sandbox of ``uid`` in ``netns``, as an app's
    code would."""
    spec = sandbox.SandboxSpec(
        host_uid=uid, mounts=[], env={"PATH": "/usr/bin:/bin"}, cwd="/", netns=netns
    )
    with sandbox.spawn(spec, ["/usr/bin/python3", "-c", PROBE, *targets]) as proc:
        output, _ = proc.communicate(timeout=60)
    results: dict[str, str] = json.loads(output.decode().strip().splitlines()[-1])
    return results


def netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def wait_until_listening(address: str, port: int) -> None:
    def answers() -> bool:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_for(answers, timeout=20, what=f"a listener on {address}:{port}")


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
