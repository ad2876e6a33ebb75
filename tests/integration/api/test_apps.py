"""Apps and variables over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from tests.conftest import Api


def test_create_show_list_delete_app(api: Api) -> None:
    with api.client() as client:
        created = client.post("/v1/apps", json={"app": {"name": "my-app-1"}})
        assert created.status_code == 201
        app = created.json()["app"]
        for key in (
            "id",
            "name",
            "created_at",
            "updated_at",
            "owner",
            "url",
            "status",
            "flags",
            "links",
        ):
            assert key in app
        assert app["links"]["deployments_stream"].startswith("ws://")
        assert app["owner"]["username"] == "alice"
        assert app["url"].startswith("http://my-app-1.localhost:")
        assert client.get("/v1/apps/my-app-1?").json()["app"]["id"] == app["id"]
        assert [a["name"] for a in client.get("/v1/apps").json()["apps"]] == ["my-app-1"]
        assert (
            client.delete(
                "/v1/apps/my-app-1?", headers={"Content-Type": "application/json"}
            ).status_code
            == 204
        )
        missing = client.get("/v1/apps/my-app-1")
        assert missing.status_code == 404
        assert missing.json() == {"resource": "app", "error": "not found"}


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("ab", "between 6 and 48"),
        ("My-App", "lowercase"),
        ("my_app_1", "lowercase"),
        ("app-1-", "end with a dash"),
        ("x" * 60, "between"),
    ],
)
def test_bad_app_names_are_422_saying_what_to_change(api: Api, name: str, words: str) -> None:
    with api.client() as client:
        response = client.post("/v1/apps", json={"app": {"name": name}})
    assert response.status_code == 422
    assert any(words in message for message in response.json()["errors"]["name"])


def test_taken_name_and_missing_body_are_422(api: Api) -> None:
    with api.client() as client:
        assert client.post("/v1/apps", json={"app": {"name": "taken-app"}}).status_code == 201
        taken = client.post("/v1/apps", json={"app": {"name": "taken-app"}})
        assert taken.status_code == 422
        assert taken.json()["errors"]["name"] == ["is already taken"]
        assert client.post("/v1/apps", json={}).json()["errors"]["app"]


def test_invalid_json_is_400_and_huge_json_is_413(api: Api) -> None:
    with api.client() as client:
        bad = client.post(
            "/v1/apps", content=b"{nope", headers={"Content-Type": "application/json"}
        )
        assert bad.status_code == 400
        assert bad.json()["code"] == "invalid_json"
        deep = client.post(
            "/v1/apps",
            content=b"[" * 5000 + b"]" * 5000,
            headers={"Content-Type": "application/json"},
        )
        assert deep.status_code == 400
        big = client.post("/v1/apps", content=b'{"a": "' + b"x" * (1024 * 1024 + 10) + b'"}')
        assert big.status_code == 413
        assert "error" in big.json()


def test_variables_follow_scalingo_shapes(api: Api) -> None:
    with api.client() as client:
        client.post("/v1/apps", json={"app": {"name": "vars-app"}})
        created = client.post(
            "/v1/apps/vars-app/variables", json={"variable": {"name": "GREETING", "value": "hi"}}
        )
        assert created.status_code == 201
        variable = created.json()["variable"]
        assert variable["name"] == "GREETING"
        bulk = client.put(
            "/v1/apps/vars-app/variables",
            json={
                "variables": [{"name": "A", "value": "1"}, {"name": "GREETING", "value": "hello"}]
            },
        )
        assert bulk.status_code == 200
        listed = {
            v["name"]: v["value"]
            for v in client.get("/v1/apps/vars-app/variables").json()["variables"]
        }
        assert listed == {"A": "1", "GREETING": "hello"}
        patched = client.patch(
            f"/v1/apps/vars-app/variables/{variable['id']}", json={"variable": {"value": "bonjour"}}
        )
        assert patched.json()["variable"]["value"] == "bonjour"
        assert client.delete(f"/v1/apps/vars-app/variables/{variable['id']}").status_code == 204
        assert [
            v["name"] for v in client.get("/v1/apps/vars-app/variables").json()["variables"]
        ] == ["A"]
        bad = client.post(
            "/v1/apps/vars-app/variables", json={"variable": {"name": "1BAD", "value": "x"}}
        )
        assert bad.status_code == 422
        assert bad.json()["errors"]["name"]


def test_another_users_app_is_404_everywhere(api: Api) -> None:
    bob = api.new_user("bob")
    with api.client() as alice:
        app = alice.post("/v1/apps", json={"app": {"name": "alice-app"}}).json()["app"]
        variable = alice.post(
            "/v1/apps/alice-app/variables", json={"variable": {"name": "K", "value": "v"}}
        ).json()["variable"]
        deployment = alice.post(
            "/v1/apps/alice-app/deployments",
            json={"deployment": {"source_url": "https://example.com/a.tar.gz"}},
        ).json()["deployment"]
    requests = [
        ("GET", "/v1/apps/alice-app"),
        ("DELETE", "/v1/apps/alice-app"),
        ("GET", "/v1/apps/alice-app/variables"),
        ("POST", "/v1/apps/alice-app/variables"),
        ("PATCH", f"/v1/apps/alice-app/variables/{variable['id']}"),
        ("DELETE", f"/v1/apps/alice-app/variables/{variable['id']}"),
        ("GET", "/v1/apps/alice-app/deployments"),
        ("POST", "/v1/apps/alice-app/deployments"),
        ("GET", f"/v1/apps/alice-app/deployments/{deployment['id']}"),
        ("GET", f"/v1/apps/alice-app/deployments/{deployment['id']}/output"),
        ("POST", f"/v1/apps/alice-app/deployments/{deployment['id']}/cancel"),
        ("DELETE", "/v1/apps/alice-app/caches/deployment"),
    ]
    bodies = {
        "POST": {
            "variable": {"name": "X", "value": "y"},
            "deployment": {"source_url": "https://example.com/b.tar.gz"},
        },
        "PATCH": {"variable": {"value": "stolen"}},
    }
    with api.client(bob) as client:
        for method, path in requests:
            response = client.request(method, path, json=bodies.get(method))
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"] == "not found"
        assert client.get("/v1/apps").json()["apps"] == []
    with api.client() as alice:
        assert alice.get("/v1/apps/alice-app").json()["app"]["id"] == app["id"]
        values = {
            v["name"]: v["value"]
            for v in alice.get("/v1/apps/alice-app/variables").json()["variables"]
        }
        assert values == {"K": "v"}
