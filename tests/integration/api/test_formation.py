"""ps, scale, containers, restart and operations through the API, on both databases, over
the supervisor and the fake runtime (the real runtime's side is in tests/e2e)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import Api

from dockyard import sandbox
from dockyard.domain import status as st
from dockyard.routetable import RouteTable
from dockyard.runtime.fake import FakeRuntime
from dockyard.runtime.supervisor import Supervisor
from dockyard.services import deployments as deployments_service
from dockyard.services import formation as formation_service
from dockyard.services.runtime_state import DatabaseStateStore

APP = "scaled-app"
TYPES = {"web": "gunicorn app:app", "worker": "celery -A app worker"}


@pytest.fixture
def client(api: Api) -> Iterator[httpx.Client]:
    """An app whose release (web and worker) was deployed, on a fake runtime."""
    platform = api.platform
    runtime = FakeRuntime()
    store = DatabaseStateStore(platform.db)
    supervisor = Supervisor(
        runtime,
        RouteTable(),
        store,
        boot_timeout=2,
        stop_grace=1,
        logs_dir=platform.settings.logs_dir,
        host_uid_for=store.sandbox_uid,
        limits=sandbox.Limits(),
    )
    platform.supervisor = supervisor
    with api.client() as client:
        assert client.post("/v1/apps", json={"app": {"name": APP}}).status_code == 201
        created = client.post(
            f"/v1/apps/{APP}/deployments",
            json={"deployment": {"source_url": "https://code.example.com/a.tar.gz"}},
        ).json()["deployment"]
        for status in (st.BUILDING, st.PUSHING, st.STARTING, st.SUCCESS):
            deployments_service.transition(
                db=platform.db,
                bus=platform.bus,
                deployment_id=created["id"],
                new_status=status,
                process_types=TYPES,
            )
        release = created["id"]
        wanted = formation_service.for_release(
            db=platform.db, app_id=created["app_id"], process_types=TYPES
        )
        supervisor.deploy(
            APP,
            release,
            Path("/releases") / release,
            TYPES,
            {},
            log=lambda line: None,
            formation=wanted,
        )
        formation_service.save(db=platform.db, app_id=created["app_id"], formation=wanted)
        stop = _ticking(supervisor)
        try:
            yield client
        finally:
            stop()
            runtime.kill_all()


def _ticking(supervisor: Supervisor) -> Callable[[], None]:
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    thread.start()

    def halt() -> None:
        stop.set()
        thread.join(5)

    return halt


def wait_operation(client: httpx.Client, location: str) -> dict[str, object]:
    op_id = location.rsplit("/", 1)[-1]
    deadline = time.monotonic() + 10
    while True:
        operation = client.get(f"/v1/apps/{APP}/operations/{op_id}?").json()["operation"]
        if operation["status"] in ("done", "error") or time.monotonic() > deadline:
            return dict(operation)
        time.sleep(0.05)


def scale(client: httpx.Client, *items: tuple[str, int, str]) -> httpx.Response:
    body = {
        "containers": [
            {"app_id": "", "name": name, "amount": amount, "command": "", "size": size}
            for name, amount, size in items
        ]
    }
    return client.post(f"/v1/apps/{APP}/scale", json=body)


def test_ps_lists_each_instance_as_the_official_client_reads_it(client: httpx.Client) -> None:
    containers = client.get(f"/v1/apps/{APP}/ps?").json()["containers"]

    assert [c["label"] for c in containers] == ["web-1", "worker-1"]
    web = containers[0]
    assert web["state"] == "running" and web["type"] == "web" and web["type_index"] == 1
    assert web["command"] == "gunicorn app:app"
    assert web["created_at"] and web["container_size"]["name"] == "M"
    assert web["container_size"]["memory"] == 512 * 1024**2


def test_scale_answers_202_with_the_formation_and_an_operation_that_ends_done(
    client: httpx.Client,
) -> None:
    assert client.get(f"/v1/apps/{APP}/autoscalers?").json() == {"autoscalers": []}

    response = scale(client, ("web", 3, "L"), ("worker", 0, "L"))

    assert response.status_code == 202
    assert sorted((c["name"], c["amount"], c["size"]) for c in response.json()["containers"]) == [
        ("web", 3, "L"),
        ("worker", 0, "L"),
    ]
    operation = wait_operation(client, response.headers["location"])
    assert operation["status"] == "done" and operation["type"] == "scale"
    labels = [c["label"] for c in client.get(f"/v1/apps/{APP}/ps?").json()["containers"]]
    assert labels == ["web-1", "web-2", "web-3"]
    # The client prints the answer as what is being scaled: only the types asked for.
    only_web = scale(client, ("web", 3, "L"))
    assert [(c["name"], c["amount"]) for c in only_web.json()["containers"]] == [("web", 3)]
    assert wait_operation(client, only_web.headers["location"])["status"] == "done"
    listed = client.get(f"/v1/apps/{APP}/containers?").json()["containers"]
    assert {(c["name"], c["amount"], c["size"], c["command"]) for c in listed} == {
        ("web", 3, "L", "gunicorn app:app"),
        ("worker", 0, "L", "celery -A app worker"),
    }


def test_bad_scale_requests_get_a_422_naming_what_to_change(client: httpx.Client) -> None:
    cases = {
        ("clock", 1, ""): "is not a process type of this app (its types: web, worker)",
        ("web", -2, ""): "amount must be a whole number from 0 to 100, got -2",
        ("web", 1000, ""): "amount must be a whole number from 0 to 100, got 1000",
        ("web", 1, "XXL"): "size must be one of S, M, L, XL, 2XL, got 'XXL'",
    }
    for item, message in cases.items():
        response = scale(client, item)
        assert response.status_code == 422, item
        assert message in str(response.json()["errors"])
    labels = [c["label"] for c in client.get(f"/v1/apps/{APP}/ps?").json()["containers"]]
    assert labels == ["web-1", "worker-1"], "nothing changed"


def test_a_formation_beyond_the_users_quota_is_refused_with_the_limit(
    client: httpx.Client, api: Api
) -> None:
    api.platform.settings = api.platform.settings.with_overrides(max_instances_per_user=4)

    response = scale(client, ("web", 4, ""), ("worker", 1, ""))

    assert response.status_code == 422
    assert "would run 5 instances in all your apps; your limit is 4" in str(response.json())
    assert scale(client, ("web", 3, ""), ("worker", 1, "")).status_code == 202


def test_restart_of_a_type_is_202_with_an_operation(client: httpx.Client) -> None:
    before = {
        c["label"]: c["created_at"] for c in client.get(f"/v1/apps/{APP}/ps?").json()["containers"]
    }

    response = client.post(f"/v1/apps/{APP}/restart", json={"scope": ["worker"]})

    assert response.status_code == 202
    assert wait_operation(client, response.headers["location"])["status"] == "done"
    assert client.post(f"/v1/apps/{APP}/restart", json={"scope": ["nope"]}).status_code == 409
    assert client.post(f"/v1/apps/{APP}/restart", json={"scope": "web"}).status_code == 422
    after = {c["label"]: c["state"] for c in client.get(f"/v1/apps/{APP}/ps?").json()["containers"]}
    assert after == {"web-1": "running", "worker-1": "running"}
    assert set(before) == set(after)


def test_another_users_app_is_not_found(client: httpx.Client, api: Api) -> None:
    other = api.new_user("mallory")
    with api.client(other) as client:
        for path in ("ps", "containers", "autoscalers", "operations/x"):
            assert client.get(f"/v1/apps/{APP}/{path}?").status_code == 404
        assert scale(client, ("web", 2, "")).status_code == 404
        assert client.post(f"/v1/apps/{APP}/restart", json={"scope": []}).status_code == 404


def test_a_restart_and_a_scale_up_run_with_the_variables_set_since_the_deployment(
    client: httpx.Client, api: Api
) -> None:
    supervisor = api.platform.supervisor
    assert isinstance(supervisor, Supervisor)
    runtime = supervisor.runtime
    assert isinstance(runtime, FakeRuntime)
    body = {"variable": {"name": "GREETING", "value": "hello again"}}
    assert client.post(f"/v1/apps/{APP}/variables", json=body).status_code == 201

    response = client.post(f"/v1/apps/{APP}/restart", json={"scope": ["web"]})
    assert wait_operation(client, response.headers["location"])["status"] == "done"
    response = scale(client, ("worker", 2, ""))
    assert wait_operation(client, response.headers["location"])["status"] == "done"

    envs = {
        handle.spec.name: runtime.env_of(handle)
        for process in supervisor._apps[APP].processes.values()
        if (handle := process.handle) is not None
    }
    assert envs["web-1"]["GREETING"] == "hello again", "restarted with the new variable"
    assert envs["worker-2"]["GREETING"] == "hello again", "started with the new variable"
    assert "GREETING" not in envs["worker-1"], "not restarted: still as it was deployed"
