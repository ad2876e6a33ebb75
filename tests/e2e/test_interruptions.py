"""Interrupted deployments: cancelled by the user, or cut by a SIGTERM of the server."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import server_process
from tests.e2e.deployer import SLOW_COMPILE, Deployer, server_with_buildpack_host
from tests.helpers import ScalingoClient, tar_gz_from_files, wait_for

SIMPLE_WEB = tar_gz_from_files({"Procfile": "web: python3 -m http.server $PORT\n"})


def deploy_first_release(deployer: Deployer, app: str) -> None:
    deployer.create_app(app)
    assert deployer.wait(app, deployer.start(app, archive=SIMPLE_WEB))[0] == "success"


def test_sigterm_aborts_running_deployments_and_streams_see_it(tmp_path: Path) -> None:
    with server_with_buildpack_host(tmp_path, "ivan") as (deployer, buildpacks):
        app = deployer.create_app("draining-app")
        deployment_id = deployer.start(
            "draining-app", archive=buildpacks.app_using("slow", SLOW_COMPILE)
        )
        client = ScalingoClient(deployer.server.url, deployer.token)
        client.exchange()
        result: dict[str, Any] = {}

        def follow() -> None:
            try:
                result["follow"] = client.follow(
                    app["links"]["deployments_stream"], deployment_id, timeout=60
                )
            except Exception as exc:  # the assertion below reports it
                result["error"] = exc

        follower = threading.Thread(target=follow)
        follower.start()
        deployer.wait_for_output("draining-app", deployment_id, "started")
        server = deployer.server
        assert server.process is not None
        started = time.monotonic()
        server.process.terminate()
        server.process.wait(timeout=60)
        stopped_in = time.monotonic() - started
        server.process = None
        follower.join(timeout=30)
        assert "error" not in result, result.get("error")
        _lines, statuses, _frames = result["follow"]
        assert statuses[-1] == "aborted"
        assert stopped_in < 20
        server.start()
        status, output = deployer.wait("draining-app", deployment_id, timeout=10)
        assert status == "aborted"
        assert "shutting down" in output
        assert httpx.get(f"{server.url}/v1/regions").status_code == 401


def test_cancelling_a_running_build_ends_it_aborted_and_keeps_the_old_release(
    tmp_path: Path,
) -> None:
    with server_with_buildpack_host(tmp_path, "judy") as (deployer, buildpacks):
        deploy_first_release(deployer, "cancel-me-app")
        deployment_id = deployer.start(
            "cancel-me-app", archive=buildpacks.app_using("slow", SLOW_COMPILE)
        )
        deployer.wait_for_output("cancel-me-app", deployment_id, "started")
        with deployer.client() as api:
            cancelled = api.post(
                f"/v1/apps/cancel-me-app/deployments/{deployment_id}/cancel", json={}
            )
        assert cancelled.status_code == 200
        status, output = deployer.wait("cancel-me-app", deployment_id, timeout=15)
        assert status == "aborted"
        assert "cancelled" in output
        assert deployer.get("cancel-me-app").status_code == 200


def test_cancelling_while_starting_ends_aborted_not_crashed(tmp_path: Path) -> None:
    server = server_process(tmp_path, DOCKYARD_BOOT_TIMEOUT="60")
    server.start()
    try:
        deployer = Deployer(server=server, token=server.create_user("kim"))
        deploy_first_release(deployer, "cancel-boot-app")
        never_binds = tar_gz_from_files({"Procfile": "web: sleep 600\n"})
        deployment_id = deployer.start("cancel-boot-app", archive=never_binds)
        with deployer.client() as api:
            path = f"/v1/apps/cancel-boot-app/deployments/{deployment_id}"
            wait_for(
                lambda: api.get(path).json()["deployment"]["status"] == "starting",
                timeout=30,
                what="starting",
            )
            assert api.post(f"{path}/cancel", json={}).status_code == 200
        started = time.monotonic()
        status, output = deployer.wait("cancel-boot-app", deployment_id, timeout=15)
        assert status == "aborted", output
        assert time.monotonic() - started < 10
        assert deployer.get("cancel-boot-app").status_code == 200
    finally:
        server.stop()
        server.remove_data()
