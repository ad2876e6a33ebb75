"""Deployments API without workers: creation rules, listing, output, cancel, cache reset."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.conftest import Api

from dockyard.domain import status as st
from dockyard.services import deployments as service
from dockyard.services.events import DeploymentLog

EXTERNAL = "https://code.example.com/app/archive/main.tar.gz"


def create(client: httpx.Client, app: str = "deploy-app", **fields: object) -> httpx.Response:
    return client.post(
        f"/v1/apps/{app}/deployments", json={"deployment": {"source_url": EXTERNAL, **fields}}
    )


@pytest.fixture
def client(api: Api) -> Iterator[httpx.Client]:
    with api.client() as client:
        assert client.post("/v1/apps", json={"app": {"name": "deploy-app"}}).status_code == 201
        yield client


def test_create_is_201_with_every_field(client: httpx.Client) -> None:
    response = create(client, git_ref=None)
    assert response.status_code == 201
    deployment = response.json()["deployment"]
    for key in (
        "id",
        "app_id",
        "created_at",
        "finished_at",
        "status",
        "git_ref",
        "previous_git_ref",
        "type",
        "duration",
        "image_size",
        "pusher",
        "links",
    ):
        assert key in deployment, key
    assert deployment["status"] == "queued"
    assert deployment["git_ref"]  # made from the current time when null
    assert deployment["type"] == "archive"
    assert deployment["pusher"]["username"] == "alice"
    assert "+00:00" in deployment["created_at"]
    assert deployment["links"]["output"].endswith(f"/deployments/{deployment['id']}/output")


def test_legacy_download_url_is_accepted(client: httpx.Client) -> None:
    response = client.post(
        "/v1/apps/deploy-app/deployments",
        json={"deployment": {"download_url": EXTERNAL, "git_ref": "v1.0.0"}},
    )
    assert response.status_code == 201
    assert response.json()["deployment"]["git_ref"] == "v1.0.0"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "deployment"),
        ({"deployment": {}}, "source_url"),
        ({"deployment": {"source_url": "ftp://x/a.tar.gz"}}, "source_url"),
        ({"deployment": {"source_url": "file:///etc/passwd"}}, "source_url"),
        ({"deployment": {"source_url": EXTERNAL, "git_ref": 12}}, "git_ref"),
    ],
)
def test_bad_creation_bodies_are_422(
    client: httpx.Client, body: dict[str, object], field: str
) -> None:
    response = client.post("/v1/apps/deploy-app/deployments", json=body)
    assert response.status_code == 422
    assert response.json()["errors"][field]


def test_list_is_newest_first_and_paginated(client: httpx.Client) -> None:
    ids = [create(client, git_ref=f"v{i}").json()["deployment"]["id"] for i in range(5)]
    page = client.get("/v1/apps/deploy-app/deployments?page=1&per_page=2").json()
    assert [d["id"] for d in page["deployments"]] == ids[::-1][:2]
    assert page["meta"]["pagination"] == {
        "current_page": 1,
        "per_page": 2,
        "prev_page": None,
        "next_page": 2,
        "total_pages": 3,
        "total_count": 5,
    }
    last = client.get("/v1/apps/deploy-app/deployments?page=3&per_page=2").json()
    assert [d["id"] for d in last["deployments"]] == [ids[0]]
    assert last["meta"]["pagination"]["next_page"] is None
    assert last["meta"]["pagination"]["prev_page"] == 2
    assert client.get("/v1/apps/deploy-app/deployments?page=zero").status_code == 400


def test_output_is_the_stored_log_also_while_running(api: Api, client: httpx.Client) -> None:
    deployment = create(client).json()["deployment"]
    assert client.get(f"/v1/apps/deploy-app/deployments/{deployment['id']}/output").text == ""
    claimed = service.claim_next(
        db=api.platform.db, bus=api.platform.bus, worker_id="test", lease_seconds=30
    )
    assert claimed is not None and claimed.id == deployment["id"]
    DeploymentLog(
        db=api.platform.db, bus=api.platform.bus, app_id=claimed.app_id, deployment_id=claimed.id
    ).lines(["-----> one", "       two"])
    output = client.get(f"/v1/apps/deploy-app/deployments/{deployment['id']}/output")
    assert output.status_code == 200
    assert output.headers["content-type"].startswith("text/plain")
    assert output.text == "-----> one\n       two\n"


def test_log_lines_are_stored_without_their_line_endings_whoever_stores_them(
    api: Api, client: httpx.Client
) -> None:
    deployment = create(client).json()["deployment"]
    claimed = service.claim_next(
        db=api.platform.db, bus=api.platform.bus, worker_id="test", lease_seconds=30
    )
    assert claimed is not None
    DeploymentLog(
        db=api.platform.db, bus=api.platform.bus, app_id=claimed.app_id, deployment_id=claimed.id
    ).lines(["from the writer\r\n"])
    service.transition(
        db=api.platform.db,
        bus=api.platform.bus,
        deployment_id=claimed.id,
        new_status=st.BUILD_ERROR,
        lines=("with the status\n",),
    )
    output = client.get(f"/v1/apps/deploy-app/deployments/{deployment['id']}/output")
    assert output.text == "from the writer\nwith the status\n"


def test_one_active_deployment_per_app_others_wait_in_order(api: Api, client: httpx.Client) -> None:
    client.post("/v1/apps", json={"app": {"name": "other-app"}})
    first, second = (create(client).json()["deployment"]["id"] for _ in range(2))
    other = create(client, app="other-app").json()["deployment"]["id"]

    def claim() -> Any:
        return service.claim_next(
            db=api.platform.db, bus=api.platform.bus, worker_id="t", lease_seconds=30
        )

    assert claim().id == first
    assert claim().id == other  # another app builds in parallel
    assert claim() is None  # the second waits for the first
    service.transition(
        db=api.platform.db, bus=api.platform.bus, deployment_id=first, new_status=st.BUILD_ERROR
    )
    assert claim().id == second


def test_cancel_a_queued_deployment_ends_it_aborted(client: httpx.Client) -> None:
    deployment = create(client).json()["deployment"]
    response = client.post(f"/v1/apps/deploy-app/deployments/{deployment['id']}/cancel", json={})
    assert response.status_code == 200
    assert response.json()["deployment"]["status"] == "aborted"
    assert (
        "cancelled" in client.get(f"/v1/apps/deploy-app/deployments/{deployment['id']}/output").text
    )
    again = client.post(f"/v1/apps/deploy-app/deployments/{deployment['id']}/cancel", json={})
    assert again.status_code == 409


def test_restart_aborts_orphans_with_a_log_line(api: Api, client: httpx.Client) -> None:
    deployment = create(client).json()["deployment"]
    service.claim_next(db=api.platform.db, bus=api.platform.bus, worker_id="gone", lease_seconds=30)
    aborted = service.abort_orphans(db=api.platform.db, bus=api.platform.bus, everything=True)
    assert [d.id for d in aborted] == [deployment["id"]]
    shown = client.get(f"/v1/apps/deploy-app/deployments/{deployment['id']}").json()["deployment"]
    assert shown["status"] == "aborted"
    assert shown["finished_at"]
    assert (
        "restarted" in client.get(f"/v1/apps/deploy-app/deployments/{deployment['id']}/output").text
    )
    # A new deployment of the same app is accepted and claimable without manual unlocking.
    create(client)
    assert (
        service.claim_next(
            db=api.platform.db, bus=api.platform.bus, worker_id="new", lease_seconds=30
        )
        is not None
    )


def test_status_machine_refuses_other_transitions() -> None:
    with pytest.raises(st.InvalidTransition):
        st.check_transition(st.QUEUED, st.SUCCESS)
    with pytest.raises(st.InvalidTransition):
        st.check_transition(st.SUCCESS, st.ABORTED)
    st.check_transition(st.STARTING, st.TIMEOUT_ERROR)


def test_cache_reset_is_204_and_empties_the_cache(api: Api, client: httpx.Client) -> None:
    app_id = client.get("/v1/apps/deploy-app").json()["app"]["id"]
    cache = api.platform.settings.data_dir / "caches" / app_id
    (cache / "uv").mkdir(parents=True)
    (cache / "uv" / "wheel").write_text("cached")
    assert client.delete("/v1/apps/deploy-app/caches/deployment?").status_code == 204
    assert not cache.exists()
    assert client.delete("/v1/apps/deploy-app/caches/deployment").status_code == 204


def test_own_source_url_must_be_uploaded_and_valid(api: Api, client: httpx.Client) -> None:
    source = client.post("/v1/sources", json={}).json()["source"]
    not_uploaded = client.post(
        "/v1/apps/deploy-app/deployments",
        json={"deployment": {"source_url": source["download_url"]}},
    )
    assert not_uploaded.status_code == 404
    forged = source["download_url"].split("?")[0] + "?token=forged"
    assert (
        client.post(
            "/v1/apps/deploy-app/deployments", json={"deployment": {"source_url": forged}}
        ).status_code
        == 403
    )


def test_listing_pages_follow_every_change(api: Api, client: httpx.Client) -> None:
    first = create(client).json()["deployment"]["id"]
    listed = client.get("/v1/apps/deploy-app/deployments?page=1&per_page=20").json()
    assert [(d["id"], d["status"]) for d in listed["deployments"]] == [(first, "queued")]
    assert (
        client.get("/v1/apps/deploy-app/deployments?page=1&per_page=20").json() == listed
    )  # served again

    assert (
        client.get(f"/v1/apps/deploy-app/deployments/{first}").json()["deployment"]["status"]
        == "queued"
    )
    service.claim_next(db=api.platform.db, bus=api.platform.bus, worker_id="t", lease_seconds=30)
    listed = client.get("/v1/apps/deploy-app/deployments?page=1&per_page=20").json()
    assert listed["deployments"][0]["status"] == "building"
    assert (
        client.get(f"/v1/apps/deploy-app/deployments/{first}").json()["deployment"]["status"]
        == "building"
    )

    second = create(client).json()["deployment"]["id"]
    listed = client.get("/v1/apps/deploy-app/deployments?page=1&per_page=20").json()
    assert [d["id"] for d in listed["deployments"]] == [second, first]
    assert listed["meta"]["pagination"]["total_count"] == 2

    service.transition(
        db=api.platform.db, bus=api.platform.bus, deployment_id=first, new_status=st.BUILD_ERROR
    )
    listed = client.get("/v1/apps/deploy-app/deployments?page=1&per_page=20").json()
    assert listed["deployments"][1]["status"] == "build-error"
    assert listed["deployments"][1]["finished_at"]


def test_a_recreated_app_does_not_show_its_predecessors_deployments(
    api: Api, client: httpx.Client
) -> None:
    create(client)
    assert len(client.get("/v1/apps/deploy-app/deployments").json()["deployments"]) == 1
    assert client.delete("/v1/apps/deploy-app").status_code == 204
    assert client.get("/v1/apps/deploy-app/deployments").status_code == 404
    assert client.post("/v1/apps", json={"app": {"name": "deploy-app"}}).status_code == 201
    listed = client.get("/v1/apps/deploy-app/deployments").json()
    assert listed["deployments"] == []
    assert listed["meta"]["pagination"]["total_count"] == 0


TRANSITION_ELSEWHERE = """
import sys
from dockyard.bootstrap import build_platform
from dockyard.settings import Settings
from dockyard.services import deployments as service
settings = Settings.from_mapping({"DOCKYARD_DATA_DIR": sys.argv[1], "DOCKYARD_DATABASE_URL": sys.argv[2]})
platform = build_platform(settings)
service.transition(db=platform.db, bus=platform.bus, deployment_id=sys.argv[3], new_status="build-error")
"""


def test_a_change_made_by_another_process_shows_up_in_reads(api: Api, client: httpx.Client) -> None:
    if not api.platform.settings.is_postgres:
        pytest.skip("only PostgreSQL is shared between server processes")
    deployment_id = create(client).json()["deployment"]["id"]
    service.claim_next(db=api.platform.db, bus=api.platform.bus, worker_id="t", lease_seconds=30)
    show = f"/v1/apps/deploy-app/deployments/{deployment_id}"
    assert client.get(show).json()["deployment"]["status"] == "building"  # now cached
    settings = api.platform.settings
    subprocess.run(
        [
            sys.executable,
            "-c",
            TRANSITION_ELSEWHERE,
            str(settings.data_dir / "other"),
            settings.database_url,
            deployment_id,
        ],
        check=True,
        timeout=60,
    )
    # The other process's notification reaches this server's bus within milliseconds;
    # the time-to-live (5 s) is only a backstop, so well before it the change must show.
    deadline = time.monotonic() + 2
    while client.get(show).json()["deployment"]["status"] != "build-error":
        assert time.monotonic() < deadline, "the other process's change was not seen"
        time.sleep(0.02)
    listed = client.get("/v1/apps/deploy-app/deployments").json()
    assert listed["deployments"][0]["status"] == "build-error"
