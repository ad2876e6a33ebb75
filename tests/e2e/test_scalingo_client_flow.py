"""The official Scalingo client's deploy flow, request for request, on a real server."""

from __future__ import annotations

import httpx
import jwt

from tests.conftest import SAMPLES, ServerProcess
from tests.helpers import ScalingoClient, tar_gz_of


def test_official_client_deploy_flow(dockyard_server: ServerProcess) -> None:
    client = ScalingoClient(dockyard_server.url, dockyard_server.create_user("carol"))
    token = client.exchange()
    assert "exp" in jwt.decode(token, options={"verify_signature": False})
    assert client.request("GET", "/users/self")["user"]["username"] == "carol"
    regions = client.request("GET", "/regions")["regions"]
    assert regions and regions[0]["api"] == dockyard_server.url
    client.request("POST", "/apps", {"app": {"name": "client-flow"}}, expect=201)

    source = client.request("POST", "/sources", expect=201)["source"]
    client.upload(source["upload_url"], tar_gz_of(SAMPLES / "procfile-app"))
    created = client.request(
        "POST",
        "/apps/client-flow/deployments",
        {"deployment": {"git_ref": None, "source_url": source["download_url"]}},
        expect=201,
    )["deployment"]
    assert created["pusher"]["username"] == "carol"
    assert created["created_at"]
    app = client.request("GET", "/apps/client-flow")["app"]
    lines, statuses, frames = client.follow(app["links"]["deployments_stream"], created["id"])

    assert statuses[-1] == "success", "\n".join(lines)
    assert statuses == ["building", "pushing", "starting", "success"]
    new_frames = [f for f in frames if f["type"] == "new" and f["id"] == created["id"]]
    assert len(new_frames) == 1
    assert new_frames[0]["data"]["deployment"]["pusher"]["username"] == "carol"
    assert any("Procfile" in line or "procfile" in line.lower() for line in lines)

    listed = client.request("GET", "/apps/client-flow/deployments?page=1&per_page=20")
    assert listed["deployments"][0]["id"] == created["id"]
    assert listed["meta"]["pagination"]["total_count"] == 1
    shown = client.request("GET", f"/apps/client-flow/deployments/{created['id']}")["deployment"]
    assert shown["status"] == "success"
    assert shown["finished_at"] and shown["image_size"] > 0
    output = client.request("GET", f"/apps/client-flow/deployments/{created['id']}/output")
    assert output == "".join(line + "\n" for line in lines)
    client.request("DELETE", "/apps/client-flow/caches/deployment", expect=204)

    # Capability tokens never reach a log, a deployment object or the build output.
    log_path = dockyard_server.log_path
    assert log_path is not None
    for url in (source["upload_url"], source["download_url"]):
        token = url.split("token=")[1]
        assert token not in output
        assert token not in str(shown) and token not in str(listed)
        assert token not in log_path.read_text()
    assert "token=[redacted]" in log_path.read_text()

    # And the app really answers through the router.
    response = httpx.get(
        f"http://127.0.0.1:{dockyard_server.router_port}/",
        headers={"Host": f"client-flow.localhost:{dockyard_server.router_port}"},
    )
    assert response.status_code == 200

    # Connecting after the deployment finished still yields its final status.
    late_lines, late_statuses, _ = client.follow(
        app["links"]["deployments_stream"], created["id"], timeout=10
    )
    assert late_statuses[-1] == "success"
    assert late_lines == lines
