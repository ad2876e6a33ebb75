"""Collaborators, the one authorization rule, the timeline and rename, over real HTTP
on SQLite and PostgreSQL (the requests the official client sends: API-OPS §6, §11, §13)."""

from __future__ import annotations

import httpx
from tests.conftest import Api

JSON = {"Content-Type": "application/json"}


def _app(client: httpx.Client, name: str) -> dict:
    response = client.post("/v1/apps", json={"app": {"name": name}})
    assert response.status_code == 201, response.text
    return response.json()["app"]


def test_a_collaborator_deploys_and_configures_but_cannot_destroy_or_share(api: Api) -> None:
    bob_token, carol_token = api.new_user("bobby"), api.new_user("carol")
    with (
        api.client(validate=True) as alice,
        api.client(bob_token, validate=True) as bob,
        api.client(carol_token, validate=True) as carol,
    ):
        _app(alice, "shared-app")
        added = alice.post(
            "/v1/apps/shared-app/collaborators",
            json={"collaborator": {"email": "bobby@example.com", "is_limited": False}},
        )
        assert added.status_code == 201, added.text
        collaborator = added.json()["collaborator"]
        assert collaborator["username"] == "bobby" and collaborator["status"] == "accepted"
        assert collaborator["is_limited"] is False

        # Bob sees the app among his, and may change it as its owner could.
        assert [a["name"] for a in bob.get("/v1/apps?").json()["apps"]] == ["shared-app"]
        assert bob.get("/v1/apps/shared-app?").json()["app"]["owner"]["username"] == "alice"
        assert (
            bob.post(
                "/v1/apps/shared-app/variables", json={"variable": {"name": "K", "value": "v"}}
            ).status_code
            == 201
        )
        assert bob.get("/v1/apps/shared-app/deployments?").status_code == 200
        assert bob.get("/v1/apps/shared-app/collaborators?").status_code == 200
        scaled = bob.post(
            "/v1/apps/shared-app/scale", json={"containers": [{"name": "web", "amount": 1}]}
        )
        assert scaled.status_code != 404, scaled.text  # the app has no release yet: 422

        # Destroying the app and managing its collaborators are the owner's.
        destroyed = bob.delete("/v1/apps/shared-app?", headers=JSON)
        assert destroyed.status_code == 403
        assert "owner" in destroyed.json()["error"]
        assert destroyed.json()["code"] == "owner_only"
        invited = bob.post(
            "/v1/apps/shared-app/collaborators",
            json={"collaborator": {"email": "carol@example.com"}},
        )
        assert invited.status_code == 403
        removed = bob.delete(f"/v1/apps/shared-app/collaborators/{collaborator['id']}?")
        assert removed.status_code == 403
        assert alice.get("/v1/apps/shared-app?").status_code == 200

        # A stranger cannot tell the app exists.
        for method, path in [
            ("GET", "/v1/apps/shared-app?"),
            ("DELETE", "/v1/apps/shared-app?"),
            ("GET", "/v1/apps/shared-app/variables?"),
            ("GET", "/v1/apps/shared-app/events?"),
            ("GET", "/v1/apps/shared-app/collaborators?"),
            ("GET", "/v1/apps/shared-app/deployments?"),
            ("GET", "/v1/apps/shared-app/containers?"),
            ("POST", "/v1/apps/shared-app/rename"),
        ]:
            response = carol.request(
                method, path, json={"current_name": "shared-app", "new_name": "stolen-app"}
                if method == "POST" else None,
            )
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["resource"] == "app"
        assert carol.get("/v1/apps?").json()["apps"] == []

        # Once removed, Bob is a stranger too (and cached listings forget him).
        assert (
            alice.delete(f"/v1/apps/shared-app/collaborators/{collaborator['id']}?").status_code
            == 204
        )
        assert bob.get("/v1/apps/shared-app/deployments?").status_code == 404
        assert bob.get("/v1/apps/shared-app?").status_code == 404
        assert alice.get("/v1/apps/shared-app/collaborators?").json() == {"collaborators": []}


def test_adding_a_collaborator_says_what_is_wrong(api: Api) -> None:
    api.new_user("bobby")
    with api.client(validate=True) as alice:
        _app(alice, "lonely-app")
        cases = [
            ({"collaborator": {"email": "nobody@example.com"}}, "email", "need an account"),
            ({"collaborator": {"email": "alice@example.com"}}, "email", "owner"),
            ({"collaborator": {"email": "bobby@example.com", "is_limited": True}}, "is_limited", "limited"),
            ({"email": "bobby@example.com"}, "collaborator", "is required"),
        ]
        for body, field, words in cases:
            response = alice.post("/v1/apps/lonely-app/collaborators", json=body)
            assert response.status_code == 422, response.text
            assert words in " ".join(response.json()["errors"][field])
        assert alice.post(
            "/v1/apps/lonely-app/collaborators", json={"collaborator": {"email": "BOBBY@example.com"}}
        ).status_code == 201
        again = alice.post(
            "/v1/apps/lonely-app/collaborators", json={"collaborator": {"email": "bobby@example.com"}}
        )
        assert again.status_code == 422
        assert "already" in again.json()["errors"]["email"][0]
        # collaborators-update: a full collaborator stays one; limited is refused the same way.
        bobby = alice.get("/v1/apps/lonely-app/collaborators").json()["collaborators"][0]
        url = f"/v1/apps/lonely-app/collaborators/{bobby['id']}"
        full = alice.patch(url, json={"collaborator": {"is_limited": False}})
        assert full.status_code == 200 and full.json()["collaborator"]["email"] == "bobby@example.com"
        limited = alice.patch(url, json={"collaborator": {"is_limited": True}})
        assert limited.status_code == 422 and "limited" in limited.json()["errors"]["is_limited"][0]
        assert alice.patch(
            "/v1/apps/lonely-app/collaborators/nope", json={"collaborator": {"is_limited": False}}
        ).status_code == 404


def test_timeline_lists_changes_newest_first_with_variable_names_only(api: Api) -> None:
    bob_token = api.new_user("bobby")
    with api.client(validate=True) as alice, api.client(bob_token, validate=True) as bob:
        _app(alice, "timeline-app")
        assert alice.post(
            "/v1/apps/timeline-app/variables", json={"variable": {"name": "ONE", "value": "s3cr3t-1"}}
        ).status_code == 201
        put = alice.put(
            "/v1/apps/timeline-app/variables",
            json={"variables": [{"name": "ONE", "value": "s3cr3t-2"}, {"name": "TWO", "value": "s3cr3t-3"}]},
        )
        assert put.status_code == 200
        two = next(v for v in put.json()["variables"] if v["name"] == "TWO")
        assert alice.delete(f"/v1/apps/timeline-app/variables/{two['id']}?").status_code == 204
        alice.post("/v1/apps/timeline-app/collaborators", json={"collaborator": {"email": "bobby@example.com"}})

        body = alice.get("/v1/apps/timeline-app/events?page=1&per_page=30").json()
        types = [e["type"] for e in body["events"]]
        assert types == [
            "new_collaborator", "delete_variable", "edit_variables", "new_variable", "new_app"
        ]
        assert "s3cr3t" not in str(body)
        events = {e["type"]: e for e in body["events"]}
        assert events["new_variable"]["type_data"] == {"name": "ONE"}
        assert events["edit_variables"]["type_data"] == {
            "new_vars": [{"name": "TWO"}], "updated_vars": [{"name": "ONE"}], "deleted_vars": []
        }
        assert events["delete_variable"]["type_data"] == {"name": "TWO"}
        assert events["new_collaborator"]["type_data"]["collaborator"]["email"] == "bobby@example.com"
        first = body["events"][0]
        assert first["app_name"] == "timeline-app"
        assert first["user"] == {"id": first["user"]["id"], "username": "alice", "email": "alice@example.com"}
        assert first["created_at"].endswith("+00:00")
        assert body["meta"]["pagination"] == {
            "current_page": 1, "per_page": 30, "prev_page": None, "next_page": None,
            "total_pages": 1, "total_count": 5,
        }

        # Pages of two, newest first; the last page is what is left.
        page3 = alice.get("/v1/apps/timeline-app/events?page=3&per_page=2").json()
        assert [e["type"] for e in page3["events"]] == ["new_app"]
        assert page3["meta"]["pagination"]["total_pages"] == 3
        assert page3["meta"]["pagination"]["prev_page"] == 2

        # The collaborator's own change is theirs in the timeline.
        bob.post("/v1/apps/timeline-app/variables", json={"variable": {"name": "BOB", "value": "x"}})
        newest = alice.get("/v1/apps/timeline-app/events?").json()["events"][0]
        assert newest["type"] == "new_variable" and newest["user"]["username"] == "bobby"

        # The user timeline spans apps; of a deleted app, it keeps what the user did
        # (its deletion included), no longer what others did to it.
        _app(alice, "second-app")
        assert alice.delete("/v1/apps/timeline-app?", headers=JSON).status_code == 204
        mine = alice.get("/v1/events?per_page=3").json()
        assert [(e["type"], e["app_name"]) for e in mine["events"]] == [
            ("delete_app", "timeline-app"), ("new_app", "second-app"), ("new_collaborator", "timeline-app")
        ]
        assert mine["meta"]["pagination"]["total_count"] == 7
        bad = alice.get("/v1/events?per_page=0")
        assert bad.status_code == 400 and "per_page" in bad.json()["error"]
        # ``timeline --per-page 500``: the client passes it on; it gets the largest page.
        most = alice.get("/v1/events?per_page=500")
        assert most.status_code == 200 and most.json()["meta"]["pagination"]["per_page"] == 100


def test_rename_moves_the_app_and_records_it(api: Api) -> None:
    with api.client(validate=True) as alice:
        app = _app(alice, "old-name-app")
        wrong = alice.post(
            "/v1/apps/old-name-app/rename", json={"current_name": "other", "new_name": "new-name-app"}
        )
        assert wrong.status_code == 422
        assert "current name" in wrong.json()["errors"]["current_name"][0]
        invalid = alice.post(
            "/v1/apps/old-name-app/rename", json={"current_name": "old-name-app", "new_name": "No!"}
        )
        assert invalid.status_code == 422 and invalid.json()["errors"]["new_name"]
        _app(alice, "taken-name")
        taken = alice.post(
            "/v1/apps/old-name-app/rename", json={"current_name": "old-name-app", "new_name": "taken-name"}
        )
        assert taken.json()["errors"]["new_name"] == ["is already taken"]

        renamed = alice.post(
            "/v1/apps/old-name-app/rename",
            json={"current_name": "old-name-app", "new_name": "new-name-app"},
        )
        assert renamed.status_code == 200, renamed.text
        body = renamed.json()["app"]
        assert body["name"] == "new-name-app" and body["id"] == app["id"]
        assert body["url"].startswith("http://new-name-app.localhost:")
        assert alice.get("/v1/apps/old-name-app?").status_code == 404
        assert alice.get("/v1/apps/new-name-app/deployments?").status_code == 200
        event = alice.get("/v1/apps/new-name-app/events?").json()["events"][0]
        assert event["type"] == "rename_app"
        assert event["type_data"] == {"old_name": "old-name-app", "new_name": "new-name-app"}
