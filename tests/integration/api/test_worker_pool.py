"""The worker pool: deployments created through the API are claimed as soon as they may
start (one at a time per app, in order), by wakes alone, on both databases."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from tests.conftest import Api
from tests.helpers import wait_for

from dockyard.domain import status as st
from dockyard.domain.records import DeploymentRecord
from dockyard.platform import Platform
from dockyard.services import deployments as service
from dockyard.worker import pool as pool_module
from dockyard.worker.pool import WorkerPool

APPS = ["pool-a", "pool-b", "pool-c", "pool-d", "pool-e"]
PER_APP = 3
RUN_SECONDS = 0.02


class Recorder:
    """A stand-in for run_deployment: notes what runs when, then ends it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: list[tuple[str, str, float, float]] = []  # app id, deployment, start, end

    def __call__(self, platform: Platform, deployment: DeploymentRecord, stopping: object) -> None:
        started = time.monotonic()
        time.sleep(RUN_SECONDS)
        ended = time.monotonic()
        with self.lock:
            self.runs.append((deployment.app_id, deployment.id, started, ended))
        service.transition(
            db=platform.db,
            bus=platform.bus,
            deployment_id=deployment.id,
            new_status=st.BUILD_ERROR,
        )


@pytest.fixture
def recorder(api: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    # No poll to fall back on within the test: a lost wake would leave a deployment queued.
    monkeypatch.setattr(pool_module, "IDLE_POLL_SECONDS", 60.0)
    recorder = Recorder()
    pool = WorkerPool(api.platform, recorder, workers=3)
    api.platform.deployment_queued.connect(pool.wake)
    pool.start()
    yield recorder
    pool.stop(timeout=5)


def test_every_deployment_runs_as_soon_as_it_may_one_at_a_time_per_app_in_order(
    api: Api, recorder: Recorder
) -> None:
    submitted: dict[str, list[str]] = {}
    with api.client() as client:
        for app in APPS:
            client.post("/v1/apps", json={"app": {"name": app}}).raise_for_status()
        body = {"deployment": {"source_url": "https://code.example.com/app.tar.gz"}}

        def submit(app: str) -> None:
            with api.client() as own:
                ids = []
                for _ in range(PER_APP):
                    response = own.post(f"/v1/apps/{app}/deployments", json=body)
                    response.raise_for_status()
                    ids.append(response.json()["deployment"]["id"])
                submitted[app] = ids

        threads = [threading.Thread(target=submit, args=(app,)) for app in APPS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        app_ids = {app: _app_id(client, app) for app in APPS}

    total = len(APPS) * PER_APP
    wait_for(lambda: len(recorder.runs) == total, timeout=15, what="every deployment to run")
    for app in APPS:
        runs = sorted((r for r in recorder.runs if r[0] == app_ids[app]), key=lambda r: r[2])
        assert [deployment for _, deployment, _, _ in runs] == submitted[app], "in order"
        for before, after in itertools.pairwise(runs):
            assert before[3] <= after[2], f"two deployments of {app} ran at once"


def _app_id(client: httpx.Client, app: str) -> str:
    found: str = client.get(f"/v1/apps/{app}").json()["app"]["id"]
    return found
