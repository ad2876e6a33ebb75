"""Caddy's ACME world for tests: Pebble (a real ACME CA) resolving names through
pebble-challtestsrv's DNS, both Debian packages, started here on free loopback ports.

Pebble validates real HTTP-01 and TLS-ALPN-01 challenges against the ports the router
listens on (never ``PEBBLE_VA_ALWAYS_VALID``, which would let a broken setup pass), and
issues from a CA it makes up at start (``issuing_roots``). Its own HTTPS certificate is
signed by a CA made here, which Caddy trusts through ``DOCKYARD_ACME_CA_ROOT``.

With ``DOCKYARD_REQUIRE_CADDY=1`` (CI) a missing binary fails the tests instead of
skipping them.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.tlshelpers import ca_and_leaf

BINARIES = ("caddy", "pebble", "pebble-challtestsrv")


def require_binaries() -> None:
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed (bash scripts/setup.sh installs them)"
    if os.environ.get("DOCKYARD_REQUIRE_CADDY") == "1":
        pytest.fail(message + "; DOCKYARD_REQUIRE_CADDY=1 forbids skipping")
    pytest.skip(message)


@dataclass
class AcmeStack:
    directory_url: str
    ca_root_file: Path  # what the ACME client trusts for Pebble's own HTTPS
    http_port: int  # the router's ports, which Pebble validates challenges against
    https_port: int
    management_url: str
    dns_management_url: str

    def add_host(self, name: str, address: str = "127.0.0.1") -> None:
        """Make ``name`` resolve to ``address`` for Pebble."""
        response = httpx.post(
            f"{self.dns_management_url}/add-a", json={"host": name, "addresses": [address]}
        )
        assert response.status_code == 200, response.text

    def issuing_roots(self) -> str:
        """The PEM of the root Pebble signs certificates with (made anew at each start)."""
        response = httpx.get(f"{self.management_url}/roots/0", verify=self.trust_pebble())
        assert response.status_code == 200, response.text
        return response.text

    def trust_pebble(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_root_file))

    def router_env(self) -> dict[str, str]:
        return {
            "DOCKYARD_ROUTER": "caddy",
            "DOCKYARD_ROUTER_PORT": str(self.http_port),
            "DOCKYARD_ROUTER_HTTPS_PORT": str(self.https_port),
            "DOCKYARD_ACME_CA": self.directory_url,
            "DOCKYARD_ACME_CA_ROOT": str(self.ca_root_file),
            "DOCKYARD_CADDY_ADMIN": f"127.0.0.1:{free_port()}",
        }


@contextmanager
def acme_stack(directory: Path) -> Iterator[AcmeStack]:
    require_binaries()
    directory.mkdir(parents=True, exist_ok=True)
    ca, cert, key = ca_and_leaf(directory / "pebble-tls", "localhost", "127.0.0.1")
    dns_port, dns_mgmt, acme_port, acme_mgmt = (free_port() for _ in range(4))
    http_port, https_port = free_port(), free_port()
    config = directory / "pebble.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{acme_port}",
                    "managementListenAddress": f"127.0.0.1:{acme_mgmt}",
                    "certificate": str(cert),
                    "privateKey": str(key),
                    "httpPort": http_port,
                    "tlsPort": https_port,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        )
    )
    logs = open(directory / "acme.log", "ab")  # noqa: SIM115 - closed below
    dns = subprocess.Popen(
        [
            "pebble-challtestsrv",
            "-dns01",
            f"127.0.0.1:{dns_port}",
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            f"127.0.0.1:{dns_mgmt}",
            "-defaultIPv4",
            "",
            "-defaultIPv6",
            "",
        ],
        stdout=logs,
        stderr=subprocess.STDOUT,
    )
    # No sleeping before validations and no rejected nonces: deterministic and fast;
    # the challenges themselves are validated for real.
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    pebble = subprocess.Popen(
        ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns_port}"],
        stdout=logs,
        stderr=subprocess.STDOUT,
        env=env,
    )
    stack = AcmeStack(
        directory_url=f"https://127.0.0.1:{acme_port}/dir",
        ca_root_file=ca,
        http_port=http_port,
        https_port=https_port,
        management_url=f"https://127.0.0.1:{acme_mgmt}",
        dns_management_url=f"http://127.0.0.1:{dns_mgmt}",
    )
    try:
        _wait_until_up(stack, [dns, pebble], directory / "acme.log")
        yield stack
    finally:
        for process in (pebble, dns):
            process.terminate()
        for process in (pebble, dns):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        logs.close()


def _wait_until_up(stack: AcmeStack, processes: list[subprocess.Popen[bytes]], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise RuntimeError(f"pebble or its DNS server exited: {log.read_text()[-2000:]}")
        try:
            directory = httpx.get(stack.directory_url, verify=stack.trust_pebble(), timeout=1)
            dns = httpx.get(f"{stack.dns_management_url}/", timeout=1)
            if directory.status_code == 200 and dns.status_code in (200, 404, 405):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"pebble did not answer within 20 s: {log.read_text()[-2000:]}")
