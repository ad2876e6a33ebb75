"""RouteTable and host names: pure, no sockets."""

from __future__ import annotations

import threading

import pytest

from dockyard.router import Backend, RouteTable
from dockyard.router.hosts import app_from_host


def test_a_backend_is_found_case_insensitively_and_replaced_whole() -> None:
    table = RouteTable()
    table.set_backend("Web", Backend("127.0.0.1", 5000))
    assert table.lookup("web") == Backend("127.0.0.1", 5000)
    assert table.status("WEB") == "running"
    table.set_backend("web", Backend("127.0.0.1", 5001))
    assert table.lookup("web") == Backend("127.0.0.1", 5001)


def test_deploying_keeps_the_backend_and_other_statuses_drop_it() -> None:
    table = RouteTable()
    table.set_backend("web", Backend("127.0.0.1", 5000))
    table.set_status("web", "deploying")
    assert table.lookup("web") == Backend("127.0.0.1", 5000)
    assert table.status("web") == "deploying"
    for status in ("stopped", "crashed", "none"):
        table.set_backend("web", Backend("127.0.0.1", 5000))
        table.set_status("web", status)
        assert table.lookup("web") is None
        assert table.status("web") == status


def test_remove_forgets_and_unknown_apps_read_as_none() -> None:
    table = RouteTable()
    table.set_status("web", "stopped")
    table.remove("web")
    table.remove("never-seen")
    assert table.lookup("web") is None
    assert table.status("web") == "none"


def test_an_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown route status"):
        RouteTable().set_status("web", "sleeping")


def test_updates_from_threads_never_show_a_torn_route() -> None:
    table = RouteTable()
    backends = [Backend("127.0.0.1", port) for port in range(6000, 6010)]
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            for backend in backends:
                table.set_backend("web", backend)
                table.set_status("web", "deploying")

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(20_000):
            assert table.lookup("web") in (None, *backends)
    finally:
        stop.set()
        for thread in threads:
            thread.join()


@pytest.mark.parametrize(
    ("host", "app"),
    [
        ("web.localhost", "web"),
        ("WEB.LocalHost:8080", "web"),
        ("web.localhost.", "web"),
        ("my-app-2.localhost:80", "my-app-2"),
        ("localhost", None),
        (".localhost", None),
        ("a.b.localhost", None),
        ("web.example.com", None),
        ("weblocalhost", None),
        ("-web.localhost", None),
        ("web_1.localhost", None),
        ("[::1]:8080", None),
        ("127.0.0.1:8080", None),
    ],
)
def test_app_from_host(host: str, app: str | None) -> None:
    assert app_from_host(host, "localhost") == app


def test_app_from_host_with_a_multi_label_domain() -> None:
    assert app_from_host("shop.apps.example.org:443", "apps.example.org") == "shop"
    assert app_from_host("shop.example.org", "apps.example.org") is None


def test_a_wildcard_domain_covers_one_label_and_a_name_of_its_own_wins() -> None:
    table = RouteTable()
    table.set_hosts(aliases={"*.shop.example": "shop", "admin.shop.example": "backoffice"})
    assert table.app_for_host("eu.shop.example") == "shop"
    assert table.app_for_host("EU.Shop.Example.") == "shop"
    assert table.app_for_host("admin.shop.example") == "backoffice"
    assert table.app_for_host("shop.example") is None  # the wildcard is not its parent
    assert table.app_for_host("a.eu.shop.example") is None  # nor two labels down
