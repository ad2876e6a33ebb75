"""The built-in router serves custom domains (HTTP only) and redirects force-HTTPS apps."""

from __future__ import annotations

import httpx
import pytest

from conftest import StartApp
from dockyard.router import Router, RouteTable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def client(router: Router) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{router.port}", timeout=10)


async def test_a_custom_domain_reaches_its_app_and_stops_when_removed(
    router: Router, table: RouteTable, start_app: StartApp
) -> None:
    a = await start_app("a")
    table.set_backend("my-app", a.backend)
    async with client(router) as c:
        assert (await c.get("/", headers={"Host": "www.example.test"})).status_code == 404
        table.set_hosts(aliases={"www.example.test": "my-app"})
        for shown in ("www.example.test", "WWW.Example.Test:8080", "www.example.test."):
            response = await c.get("/", headers={"Host": shown})
            assert response.status_code == 200, shown
            assert response.json()["name"] == "a"
        # The default APP.DOMAIN name still answers next to the custom one.
        assert (await c.get("/", headers={"Host": "my-app.localhost"})).json()["name"] == "a"
        table.set_hosts(aliases={})
        gone = await c.get("/", headers={"Host": "www.example.test"})
        assert gone.status_code == 404
        assert "www.example.test" in gone.text


async def test_force_https_redirects_every_host_of_the_app_keeping_the_path(
    router: Router, table: RouteTable, start_app: StartApp
) -> None:
    a = await start_app("a")
    table.set_backend("my-app", a.backend)
    table.set_backend("other-app", a.backend)
    table.set_hosts(aliases={"www.example.test": "my-app"}, force_https=["my-app"])
    async with client(router) as c:
        custom = await c.get("/some/path?q=1", headers={"Host": "www.example.test:8080"})
        assert custom.status_code == 301
        assert custom.headers["location"] == "https://www.example.test/some/path?q=1"
        default = await c.get("/", headers={"Host": "my-app.localhost"})
        assert default.headers["location"] == "https://my-app.localhost/"
        # Other apps are not affected.
        assert (await c.get("/", headers={"Host": "other-app.localhost"})).status_code == 200
        table.set_hosts(aliases={"www.example.test": "my-app"}, force_https=[])
        assert (await c.get("/", headers={"Host": "www.example.test"})).status_code == 200


def test_observers_hear_every_change_of_the_table() -> None:
    from dockyard.routetable import Backend

    table = RouteTable()
    heard: list[int] = []
    table.subscribe(lambda: heard.append(1))
    table.set_backend("a", Backend("127.0.0.1", 1))
    table.set_status("a", "deploying")
    table.set_hosts(aliases={"x.test": "a"}, own_certificates={"x.test": ("c", "k")})
    table.remove("a")
    assert len(heard) == 4
    snap = table.snapshot()
    assert snap.aliases == {"x.test": "a"}
    assert snap.own_certificates == {"x.test": ("c", "k")}
    assert snap.routes == {}
