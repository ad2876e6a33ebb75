"""Custom domains and force-HTTPS over real HTTP, on SQLite and PostgreSQL, as the
official client sends them (API-OPS §7, §8)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import httpx
import pytest
from tests.conftest import Api
from tests.tlshelpers import self_signed


def _app(client: httpx.Client, name: str) -> None:
    assert client.post("/v1/apps", json={"app": {"name": name}}).status_code == 201


def _add(client: httpx.Client, app: str, name: str, **extra: object) -> httpx.Response:
    return client.post(f"/v1/apps/{app}/domains", json={"domain": {"name": name, **extra}})


def test_add_list_remove_a_domain_and_the_router_follows(api: Api) -> None:
    routes = api.platform.routes
    with api.client() as client:
        _app(client, "shop-app")
        added = _add(client, "shop-app", "WWW.Example.Test")
        assert added.status_code == 201, added.text
        domain = added.json()["domain"]
        assert domain["name"] == "www.example.test"
        assert domain["letsencrypt_enabled"] is True
        assert domain["letsencrypt_status"] == "new"
        assert domain["tlskey"] == ""
        # The route table knows the name before the API answered.
        assert routes.app_for_host("www.example.test") == "shop-app"
        listed = client.get("/v1/apps/shop-app/domains?").json()["domains"]
        assert [d["name"] for d in listed] == ["www.example.test"]
        assert client.delete(f"/v1/apps/shop-app/domains/{domain['id']}?").status_code == 204
        assert client.get("/v1/apps/shop-app/domains?").json()["domains"] == []
        assert routes.app_for_host("www.example.test") is None
        missing = client.delete(f"/v1/apps/shop-app/domains/{domain['id']}?")
        assert missing.status_code == 404
        assert missing.json()["resource"] == "domain"
        # The timeline says it, as the official client prints it (API-OPS §6).
        events = client.get("/v1/apps/shop-app/events?page=1&per_page=10").json()["events"]
        assert [(e["type"], e["type_data"]) for e in events[:2]] == [
            ("delete_domain", {"hostname": "www.example.test"}),
            ("new_domain", {"hostname": "www.example.test", "ssl": False}),
        ]


def test_a_domain_belongs_to_one_app_across_all_users(api: Api) -> None:
    with api.client() as alice, api.client(api.new_user("bob")) as bob:
        _app(alice, "alice-app")
        _app(bob, "bobs-app")
        assert _add(alice, "alice-app", "www.example.test").status_code == 201
        again = _add(bob, "bobs-app", "www.example.test.")
        assert again.status_code == 422
        assert "one app only" in again.json()["errors"]["name"][0]
        # Bob cannot see or remove Alice's domain either.
        assert bob.get("/v1/apps/alice-app/domains?").status_code == 404


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("10.0.0.1", "not an IP address"),
        ("[::1]", "not an IP address"),
        ("*.example.test", "wildcard"),
        ("localhost", "two labels"),
        ("bad_name.example.test", "host name"),
        ("-x.example.test", "host name"),
        ("other-app.localhost", "under localhost"),
        ("localhost.", "two labels"),
        ("", "is required"),
    ],
)
def test_names_that_cannot_be_claimed_are_422_saying_why(api: Api, name: str, words: str) -> None:
    with api.client() as client:
        _app(client, "shop-app")
        _app(client, "other-app")
        response = _add(client, "shop-app", name)
        assert response.status_code == 422, response.text
        assert any(words in m for m in response.json()["errors"]["name"]), response.json()


def test_a_certificate_of_ones_own_is_checked_and_its_key_never_returned(
    api: Api, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path / "certs", "secure.example.test")
    other_cert, other_key = self_signed(tmp_path / "certs", "other.example.test")
    with api.client() as client:
        _app(client, "shop-app")
        mismatched = _add(client, "shop-app", "secure.example.test", tlscert=cert, tlskey=other_key)
        assert mismatched.status_code == 422
        assert "does not match" in mismatched.json()["errors"]["tlskey"][0]
        wrong_name = _add(
            client, "shop-app", "secure.example.test", tlscert=other_cert, tlskey=other_key
        )
        assert "does not cover secure.example.test" in wrong_name.json()["errors"]["tlscert"][0]

        added = _add(client, "shop-app", "secure.example.test", tlscert=cert, tlskey=key)
        assert added.status_code == 201, added.text
        domain = added.json()["domain"]
        assert domain["ssl"] is True
        assert domain["tlscert"] == "CN=secure.example.test"
        assert domain["validity"]
        assert "PRIVATE KEY" not in added.text
        listed = client.get("/v1/apps/shop-app/domains?")
        assert "PRIVATE KEY" not in listed.text
        key_files = list(api.platform.settings.tls_keys_dir.glob("*.key"))
        assert len(key_files) == 1
        assert stat.S_IMODE(os.stat(key_files[0]).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(api.platform.settings.tls_keys_dir).st_mode) == 0o700
        assert key_files[0].read_text() == key
        # domains-ssl --disable: both empty removes the certificate and its key.
        patched = client.patch(
            f"/v1/apps/shop-app/domains/{domain['id']}",
            json={"domain": {"tlscert": "", "tlskey": ""}},
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["domain"]["ssl"] is False
        assert list(api.platform.settings.tls_keys_dir.glob("*.key")) == []
        latest = client.get("/v1/apps/shop-app/events?page=1&per_page=1").json()["events"][0]
        assert (latest["type"], latest["type_data"]) == (
            "edit_domain", {"hostname": "secure.example.test", "ssl": False, "old_ssl": True}
        )
        # set-canonical-domain is refused, saying so, rather than answered as if done.
        canonical = client.patch(
            f"/v1/apps/shop-app/domains/{domain['id']}", json={"domain": {"canonical": True}}
        )
        assert canonical.status_code == 422
        assert "not supported" in canonical.json()["errors"]["canonical"][0]


def test_force_https_is_an_app_setting_the_router_reads(api: Api) -> None:
    with api.client() as client:
        _app(client, "shop-app")
        enabled = client.put("/v1/apps/shop-app", json={"force_https": True})
        assert enabled.status_code == 200, enabled.text
        assert enabled.json()["app"]["force_https"] is True
        assert api.platform.routes.forces_https("shop-app")
        assert client.get("/v1/apps/shop-app?").json()["app"]["force_https"] is True
        client.put("/v1/apps/shop-app", json={"force_https": False})
        assert not api.platform.routes.forces_https("shop-app")
        bad = client.put("/v1/apps/shop-app", json={"force_https": "yes"})
        assert bad.status_code == 422
        # The client's other app settings: each answer is about the field it sent.
        sticky = client.put("/v1/apps/shop-app", json={"sticky_session": True})
        assert sticky.status_code == 422 and "not supported" in sticky.json()["errors"]["sticky_session"][0]
        kept = client.put("/v1/apps/shop-app", json={"router_logs": True})
        assert kept.status_code == 200 and kept.json()["app"]["name"] == "shop-app"
        off = client.put("/v1/apps/shop-app", json={"router_logs": False})
        assert off.status_code == 422 and "router_logs" in off.json()["errors"]


def test_the_ask_check_allows_only_names_an_app_has(api: Api) -> None:
    with api.client() as client:
        _app(client, "shop-app")
        _add(client, "shop-app", "www.example.test")
        _add(client, "shop-app", "plain.example.test", letsencrypt_enabled=False)
        with httpx.Client(base_url=api.url) as anonymous:

            def ask(name: str) -> int:
                return anonymous.get("/internal/tls/ask", params={"domain": name}).status_code

            assert ask("www.example.test") == 200
            assert ask("shop-app.localhost") == 200
            assert ask("nobody.localhost") == 404
            assert ask("evil.example.test") == 404
            assert ask("plain.example.test") == 404  # --no-letsencrypt
            assert ask("") == 404


def test_a_wildcard_domain_is_served_where_the_operator_allows_it(api: Api) -> None:
    """Accepted only with DOCKYARD_ALLOW_WILDCARD_DOMAINS; then the router serves, and the
    ask check lets Caddy certify, each name one label under it."""
    with api.client() as client:
        _app(client, "shop-app")
        refused = _add(client, "shop-app", "*.wild.test")
        assert refused.status_code == 422 and "wildcard" in refused.text
        api.platform.settings = api.platform.settings.with_overrides(allow_wildcard_domains=True)
        assert _add(client, "shop-app", "*.wild.test").status_code == 201
        assert api.platform.routes.app_for_host("eu.wild.test") == "shop-app"
        with httpx.Client(base_url=api.url) as anonymous:
            for name, status in [("eu.wild.test", 200), ("a.eu.wild.test", 404), ("wild.test", 404)]:
                answer = anonymous.get("/internal/tls/ask", params={"domain": name})
                assert answer.status_code == status, name


def test_deleting_the_app_frees_its_domains_and_their_keys(api: Api, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "certs", "secure.example.test")
    keys_dir = api.platform.settings.tls_keys_dir
    with api.client() as client:
        _app(client, "shop-app")
        assert _add(client, "shop-app", "www.example.test").status_code == 201
        assert (
            _add(client, "shop-app", "secure.example.test", tlscert=cert, tlskey=key).status_code
            == 201
        )
        (key_file,) = keys_dir.glob("*.key")
        assert client.delete("/v1/apps/shop-app").status_code == 204
        assert api.platform.routes.app_for_host("www.example.test") is None
        # Another app (of anyone's) may claim the names now.
        _app(client, "next-app")
        assert _add(client, "next-app", "www.example.test").status_code == 201
        old = time.time() - 120
        os.utime(key_file, (old, old))  # as if the deletion were a while ago
        _add(client, "next-app", "other.example.test")  # any change sweeps
        assert not key_file.exists()
