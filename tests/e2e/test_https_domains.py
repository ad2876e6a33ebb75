"""Custom domains with automatic HTTPS through Caddy, end to end: a real ``dockyard serve``
with ``DOCKYARD_ROUTER=caddy``, a real Caddy it starts, and certificates issued by Pebble
(a real ACME CA) after it validated the challenges against Caddy's own ports."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import pytest

from tests.acme_stack import AcmeStack, acme_stack
from tests.conftest import server_process
from tests.e2e import scalingo_ops
from tests.e2e.deployer import Deployer
from tests.e2e.test_running_apps import web_app
from tests.helpers import wait_for

DOMAIN = "www.example.test"
# Not "localhost": Caddy serves names under localhost from its own local CA, not ACME.
APPS_DOMAIN = "apps.example.test"


@dataclass
class Https:
    stack: AcmeStack
    deployer: Deployer
    trusted: ssl.SSLContext = field(init=False)

    def __post_init__(self) -> None:
        # Only Pebble's issuing root: a certificate from anywhere else fails the handshake.
        self.trusted = ssl.create_default_context(cadata=self.stack.issuing_roots())

    def client(self) -> httpx.Client:
        return httpx.Client(verify=self.trusted, timeout=30)

    def get(self, client: httpx.Client, host: str = DOMAIN) -> httpx.Response:
        """An HTTPS request to the router's HTTPS port, with ``host`` as SNI and Host."""
        return client.get(
            f"https://127.0.0.1:{self.stack.https_port}/",
            headers={"Host": host},
            extensions={"sni_hostname": host},
        )

    def get_http(self, host: str = DOMAIN) -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{self.stack.http_port}/", headers={"Host": host}, timeout=10
        )


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Https]:
    directory = tmp_path_factory.mktemp("https")
    with acme_stack(directory / "acme") as stack:
        stack.add_host(DOMAIN)
        server = server_process(
            directory,
            DOCKYARD_BOOT_TIMEOUT="10",
            DOCKYARD_APPS_DOMAIN=APPS_DOMAIN,
            **stack.router_env(),
        )
        server.start()
        try:
            yield Https(
                stack=stack, deployer=Deployer(server=server, token=server.create_user("hana"))
            )
        finally:
            server.stop()
            server.remove_data()


def _domain(deployer: Deployer, app: str) -> dict[str, object]:
    with deployer.client() as client:
        domains = client.get(f"/v1/apps/{app}/domains?").json()["domains"]
    assert len(domains) == 1
    found: dict[str, object] = domains[0]
    return found


def test_a_custom_domain_is_served_over_https_with_a_certificate_from_the_acme_ca(
    https: Https,
) -> None:
    deployer = https.deployer
    deployer.create_app("shop-app")
    deployer.deploy_ok("shop-app", web_app("shop one"))
    with deployer.client() as client:
        added = client.post("/v1/apps/shop-app/domains", json={"domain": {"name": DOMAIN}})
        assert added.status_code == 201, added.text
        domain_id = added.json()["domain"]["id"]

    with https.client() as visitor:
        # The certificate is ordered at the first handshake, validated by Pebble against
        # Caddy's ports, and verified here against Pebble's root only.
        response = https.get(visitor)
        assert response.status_code == 200
        assert response.text == "shop one\n"
        # The default APP.DOMAIN host is served too, over plain HTTP.
        assert https.get_http(f"shop-app.{APPS_DOMAIN}").text == "shop one\n"
    # A name no app has gets no certificate at all: the ask check said no (a new
    # connection: the client's pool would reuse the first one whatever the name).
    https.stack.add_host("nobody.example.test")
    with https.client() as stranger, pytest.raises(httpx.ConnectError):
        https.get(stranger, "nobody.example.test")

    shown = _domain(deployer, "shop-app")
    assert shown["letsencrypt_enabled"] is True
    assert shown["letsencrypt"] is True
    assert shown["letsencrypt_status"] == "created"
    assert shown["validity"]

    # The request went to the app's logs as a router line.
    with deployer.client() as client:
        logs_url = client.get("/v1/apps/shop-app/logs").json()["logs_url"]
    wait_for(
        lambda: "[router]" in scalingo_ops.dump(logs_url, lines=50).text,
        timeout=10,
        what="the router's access log line in the app's logs",
    )

    # force-https: the HTTP answer becomes a redirect, within a second.
    with deployer.client() as client:
        assert client.put("/v1/apps/shop-app", json={"force_https": True}).status_code == 200
    wait_for(
        lambda: https.get_http().status_code == 301,
        timeout=1,
        interval=0.02,
        what="the HTTP answer to become a redirect",
    )
    redirect = https.get_http()
    assert redirect.headers["location"] == f"https://{DOMAIN}:{https.stack.https_port}/"
    with https.client() as visitor:
        assert https.get(visitor).status_code == 200  # HTTPS still serves

    # Removing the domain stops it being served, within a second.
    with deployer.client() as client:
        assert client.delete(f"/v1/apps/shop-app/domains/{domain_id}?").status_code == 204
    with https.client() as visitor:
        wait_for(
            lambda: https.get(visitor).status_code == 404,
            timeout=1,
            interval=0.02,
            what="the removed domain to stop being served",
        )


@contextmanager
def https_visitor(https: Https, host: str) -> Iterator[list[str]]:
    """Requests over HTTPS (one keep-alive connection) while the block runs; answers are
    kept as text, failures as 'FAILED: ...'."""
    seen: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        with https.client() as visitor:
            while not stop.is_set():
                try:
                    response = https.get(visitor, host)
                    seen.append(
                        response.text
                        if response.status_code == 200
                        else f"FAILED: {response.status_code} {response.text[:80]}"
                    )
                except httpx.HTTPError as exc:
                    seen.append(f"FAILED: {exc!r}")

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()


def test_a_redeploy_through_caddy_has_no_failed_request(https: Https) -> None:
    deployer = https.deployer
    deployer.create_app("swap-app")
    deployer.deploy_ok("swap-app", web_app("swap one"))
    host = f"swap-app.{APPS_DOMAIN}"  # the app's default name, with its own certificate
    https.stack.add_host(host)
    with https.client() as visitor:
        assert https.get(visitor, host).text == "swap one\n"
    with https_visitor(https, host) as seen:
        deployer.deploy_ok("swap-app", web_app("swap two"))
        wait_for(lambda: "swap two\n" in seen, timeout=10, what="the new release over HTTPS")
    failures = [answer for answer in seen if answer.startswith("FAILED")]
    assert failures == []
    assert set(seen) == {"swap one\n", "swap two\n"}
    assert len(seen) > 20
