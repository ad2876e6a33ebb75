"""Addons over real HTTP on SQLite and PostgreSQL, as the official client sends its
requests (API-OPS §9), on addon servers faked in memory (the real ones: e2e/test_addons.py)."""

from __future__ import annotations

import httpx
import pytest
from tests.conftest import Api

from dockyard.addons.fake import FakeAddonServers

PG = {
    "addon": {
        "addon_provider_id": "postgresql",
        "plan_id": "postgresql-starter-512",
        "options": None,
    }
}


@pytest.fixture
def servers(api: Api) -> FakeAddonServers:
    fake = FakeAddonServers()
    api.platform.addons = fake
    return fake


def _app(client: httpx.Client, name: str) -> None:
    assert client.post("/v1/apps", json={"app": {"name": name}}).status_code == 201


def _variables(client: httpx.Client, app: str) -> dict[str, str]:
    rows = client.get(f"/v1/apps/{app}/variables?").json()["variables"]
    return {row["name"]: row["value"] for row in rows}


def test_the_catalogue_as_addons_list_and_addons_plans_read_it(api: Api) -> None:
    with api.client(validate=True) as client:
        providers = client.get("/v1/addon_providers?").json()["addon_providers"]
        assert [(p["id"], p["name"]) for p in providers] == [
            ("postgresql", "PostgreSQL"),
            ("redis", "Redis"),
        ]
        plans = client.get("/v1/addon_providers/postgresql/plans?show_all=false").json()["plans"]
        names = [plan["name"] for plan in plans]
        assert "postgresql-starter-512" in names and all(p["id"] == p["name"] for p in plans)
        redis = client.get("/v1/addon_providers/redis/plans?show_all=false").json()["plans"]
        assert {"redis-starter-128", "redis-starter-256"} <= {plan["name"] for plan in redis}
        missing = client.get("/v1/addon_providers/mongodb/plans?")
        assert missing.status_code == 404 and missing.json()["resource"] == "addon_provider"


def test_add_show_info_and_remove_an_addon(api: Api, servers: FakeAddonServers) -> None:
    with api.client(validate=True) as client:
        _app(client, "shop-app")
        added = client.post("/v1/apps/shop-app/addons", json=PG)
        assert added.status_code == 201, added.text
        body = added.json()
        addon = body["addon"]
        assert addon["id"].startswith("ad-") and addon["status"] == "running"
        assert addon["plan"]["name"] == "postgresql-starter-512"
        assert addon["addon_provider"]["id"] == "postgresql"
        assert body["variables"] == ["SCALINGO_POSTGRESQL_URL", "DATABASE_URL"]
        env = _variables(client, "shop-app")
        assert env["DATABASE_URL"] == env["SCALINGO_POSTGRESQL_URL"]
        spec = servers.specs[addon["id"]]
        assert env["DATABASE_URL"] == (
            f"postgres://{spec.resource_id}:{spec.password}@127.0.0.1:5432/{spec.resource_id}"
        )
        assert spec.memory_mb == 512 and spec.host_uid >= 1_000_000

        # One of each provider per app.
        again = client.post("/v1/apps/shop-app/addons", json=PG)
        assert again.status_code == 409 and "one of each provider" in again.json()["error"]
        # addons-info: the addon, its token, the database API with that token.
        assert client.get(f"/v1/apps/shop-app/addons/{addon['id']}?").json()["addon"] == addon
        token = client.post(f"/v1/apps/shop-app/addons/{addon['id']}/token", content=b"{}")
        token_value = token.json()["addon"]["token"]
        database = httpx.get(
            f"{api.url}/api/databases/{addon['id']}?",
            headers={"Authorization": f"Bearer {token_value}"},
        )
        assert database.status_code == 200, database.text
        info = database.json()["database"]
        assert (info["type_name"], info["readable_version"]) == ("postgresql", "15.4")
        # The addon token is no user credential, and the user's is no addon token.
        as_user = httpx.get(
            f"{api.url}/v1/apps?", headers={"Authorization": f"Bearer {token_value}"}
        )
        assert as_user.status_code == 401
        wrong = httpx.get(f"{api.url}/api/databases/{addon['id']}?", headers=client.headers)
        assert wrong.status_code == 401

        # addons-upgrade: the server gets the new plan's limits.
        upgraded = client.patch(
            f"/v1/apps/shop-app/addons/{addon['id']}",
            json={"addon": {"plan_id": "postgresql-starter-2048"}},
        )
        assert upgraded.status_code == 200, upgraded.text
        assert upgraded.json()["addon"]["plan"]["name"] == "postgresql-starter-2048"
        assert servers.specs[addon["id"]].memory_mb == 2048
        wrong_plan = client.patch(
            f"/v1/apps/shop-app/addons/{addon['id']}",
            json={"addon": {"plan_id": "redis-starter-256"}},
        )
        assert wrong_plan.status_code == 422
        assert "postgresql-starter-512" in wrong_plan.json()["errors"]["plan_id"][0]
        # A provider's name finds the app's addon of that provider (the client's aliases).
        assert (
            client.get("/v1/apps/shop-app/addons/postgresql?").json()["addon"]["id"] == addon["id"]
        )
        assert client.delete(f"/v1/apps/shop-app/addons/{addon['id']}?").status_code == 204
        assert "DATABASE_URL" not in _variables(client, "shop-app")
        assert addon["id"] not in servers.data
        assert client.get("/v1/apps/shop-app/addons?").json()["addons"] == []
        events = [e["type"] for e in client.get("/v1/apps/shop-app/events?").json()["events"]]
        assert {"new_addon", "upgrade_addon", "delete_addon"} <= set(events)


def test_field_errors_and_failures_say_what_to_change(api: Api, servers: FakeAddonServers) -> None:
    with api.client() as client:
        _app(client, "shop-app")
        unknown = client.post(
            "/v1/apps/shop-app/addons",
            json={"addon": {"addon_provider_id": "mongodb", "plan_id": "x"}},
        )
        assert unknown.status_code == 422
        assert "postgresql, redis" in unknown.json()["errors"]["addon_provider_id"][0]
        bad_plan = client.post(
            "/v1/apps/shop-app/addons",
            json={"addon": {"addon_provider_id": "redis", "plan_id": "redis-huge"}},
        )
        assert "redis-starter-256" in bad_plan.json()["errors"]["plan_id"][0]
        assert client.post("/v1/apps/shop-app/addons", json={}).status_code == 422
        servers.fail_next = "initdb: no space left on device"
        failed = client.post("/v1/apps/shop-app/addons", json=PG)
        assert failed.status_code == 409
        assert "no space left on device" in failed.json()["error"]
        # Nothing is left of a failed provisioning: a new attempt works.
        assert client.get("/v1/apps/shop-app/addons?").json()["addons"] == []
        assert client.post("/v1/apps/shop-app/addons", json=PG).status_code == 201


def test_backups_restore_into_the_addon_that_replaced_a_removed_one(
    api: Api, servers: FakeAddonServers
) -> None:
    with api.client(validate=True) as client:
        _app(client, "shop-app")
        first = client.post("/v1/apps/shop-app/addons", json=PG).json()["addon"]
        servers.data[first["id"]] = {"visits": "3"}
        made = client.post(f"/v1/apps/shop-app/addons/{first['id']}/backups", content=b"{}")
        assert made.status_code == 201, made.text
        backup = made.json()["backup"]
        assert backup["addon_provider_id"] == "postgresql" and backup["size"] > 0
        assert client.delete(f"/v1/apps/shop-app/addons/{first['id']}?").status_code == 204
        fresh = client.post("/v1/apps/shop-app/addons", json=PG).json()["addon"]
        listed = client.get("/v1/apps/shop-app/addon_backups?").json()["backups"]
        assert [b["id"] for b in listed] == [backup["id"]]
        restored = client.post(
            f"/v1/apps/shop-app/addons/{fresh['id']}/restore", json={"backup_id": backup["id"]}
        )
        assert restored.status_code == 200, restored.text
        assert servers.data[fresh["id"]] == {"visits": "3"}
        # A Redis addon cannot take a PostgreSQL dump.
        redis = {"addon": {"addon_provider_id": "redis", "plan_id": "redis-sandbox"}}
        cache = client.post("/v1/apps/shop-app/addons", json=redis).json()["addon"]
        mismatch = client.post(
            f"/v1/apps/shop-app/addons/{cache['id']}/restore", json={"backup_id": backup["id"]}
        )
        assert mismatch.status_code == 409 and "postgresql" in mismatch.json()["error"]


def test_someone_elses_addons_are_not_found(api: Api, servers: FakeAddonServers) -> None:
    with api.client() as alice, api.client(api.new_user("bob")) as bob:
        _app(alice, "shop-app")
        addon = alice.post("/v1/apps/shop-app/addons", json=PG).json()["addon"]
        for response in (
            bob.get("/v1/apps/shop-app/addons?"),
            bob.post("/v1/apps/shop-app/addons", json=PG),
            bob.delete(f"/v1/apps/shop-app/addons/{addon['id']}?"),
            bob.post(f"/v1/apps/shop-app/addons/{addon['id']}/token", content=b"{}"),
            bob.post(f"/v1/apps/shop-app/addons/{addon['id']}/backups", content=b"{}"),
        ):
            assert response.status_code == 404
            assert response.json()["resource"] == "app"


def test_without_addon_servers_the_api_says_why(api: Api) -> None:
    with api.client() as client:
        _app(client, "shop-app")
        refused = client.post("/v1/apps/shop-app/addons", json=PG)
        assert refused.status_code == 409
        assert "local runtime" in refused.json()["error"]


def test_an_addon_cut_short_by_a_crash_is_removed_at_the_next_start(
    api: Api, servers: FakeAddonServers
) -> None:
    from sqlalchemy import update

    from dockyard.db.engine import transaction
    from dockyard.db.models import Addon
    from dockyard.services import addons as addons_service

    with api.client() as client:
        _app(client, "shop-app")
        addon = client.post("/v1/apps/shop-app/addons", json=PG).json()["addon"]
        with transaction(api.platform.db) as session:  # as a crash mid-provisioning leaves it
            session.execute(update(Addon).values(status=addons_service.PROVISIONING))
        assert addons_service.running_specs(db=api.platform.db) == []
        removed = addons_service.finish_interrupted(db=api.platform.db, servers=servers)
        assert removed == [addon["id"]] and addon["id"] not in servers.data
        assert client.post("/v1/apps/shop-app/addons", json=PG).status_code == 201
