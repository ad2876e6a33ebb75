"""Two ``dockyard api`` processes behind a load balancer with no stickiness, one worker and
one router on PostgreSQL, each with a data directory of its own (no shared disk): what
one api process received (a source, a build cache) is fetched from it, wherever the next
request lands (README, "Running on several machines")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ServerProcess, free_port
from tests.e2e.cluster import Balancer, Cluster, api_answers
from tests.e2e.deployer import BuildpackHost, Deployer, file_server
from tests.e2e.test_separate_processes import CACHE_REPORTING_COMPILE
from tests.helpers import tar_gz_from_files, wait_for


@pytest.fixture
def two_apis(
    tmp_path: Path, postgres_url: str
) -> Iterator[tuple[Cluster, Balancer, dict[str, str], Deployer, BuildpackHost]]:
    buildpacks_dir = tmp_path / "buildpacks"
    buildpacks_dir.mkdir()
    ports = {"api-a": free_port(), "api-b": free_port()}
    balancer = Balancer(ports)
    with file_server(buildpacks_dir) as buildpack_port:
        cluster = Cluster(postgres_url, tmp_path, public_url=balancer.url)
        try:
            own = {name: cluster.start_api(name, port) for name, port in ports.items()}
            for name in ports:
                balancer.target = name
                wait_for(lambda: api_answers(cluster), timeout=30, what=f"{name} to answer")
            cluster.worker_env["DOCKYARD_FETCH_ALLOW"] = f"127.0.0.1:{buildpack_port}"
            cluster.start("worker-1", "worker", DOCKYARD_WORKER_NAME="w1", **cluster.worker_env)
            cluster.start("router", "router")
            token = cluster.create_user("pat")
            front = ServerProcess(
                url=balancer.url, router_port=cluster.router_port, data_dir=tmp_path, env={}
            )
            yield (
                cluster,
                balancer,
                own,
                Deployer(server=front, token=token),
                BuildpackHost(buildpacks_dir, buildpack_port),
            )
        finally:
            cluster.stop()
            balancer.close()


def holder(cluster: Cluster, query: str, key: str) -> str | None:
    with psycopg.connect(cluster.database_url) as conn:
        row = conn.execute(query, (key,)).fetchone()
    return row[0] if row else None


def test_two_apis_share_sources_and_build_caches_without_a_shared_disk(
    two_apis: tuple[Cluster, Balancer, dict[str, str], Deployer, BuildpackHost],
) -> None:
    cluster, balancer, own, deployer, buildpacks = two_apis
    buildpacks.app_using("reporter", CACHE_REPORTING_COMPILE)  # serves the buildpack

    def app(marker: str) -> bytes:
        """Reports whether its build cache is warm; its page (a listing) names ``marker``."""
        return tar_gz_from_files(
            {
                ".buildpacks": f"http://127.0.0.1:{buildpacks.port}/reporter.tar.gz\n",
                f"{marker}.txt": marker,
            }
        )

    def cache_file(api: str, app_id: str) -> Path:
        return cluster.data_dirs[api] / "blobs" / "caches" / f"{app_id}.tar.gz"

    def cache_holder(app_id: str) -> str | None:
        return holder(cluster, "SELECT holder_url FROM build_caches WHERE app_id = %s", app_id)

    def deploy(source_url: str, marker: str) -> str:
        deployment_id = deployer.start("multi-api", source_url=source_url)
        status, output = deployer.wait("multi-api", deployment_id, timeout=120)
        assert status == "success", output
        wait_for(
            lambda: f"{marker}.txt" in deployer.get("multi-api").text,
            timeout=20,
            what=f"{marker} through the router",
        )
        return output

    # A source uploaded through api A, deployed through api B: the worker fetches it from
    # A, and sends the build cache to B (where the balancer sends it).
    balancer.target = "api-a"
    app_id = deployer.create_app("multi-api")["id"]
    source_url = deployer.upload(app("v1"))
    source_id = source_url.split("?")[0].rsplit("/", 1)[-1]
    assert (
        holder(cluster, "SELECT holder_url FROM sources WHERE id = %s", source_id) == own["api-a"]
    )
    balancer.target = "api-b"
    assert "cold cache" in deploy(source_url, "v1")
    assert cache_holder(app_id) == own["api-b"]
    assert cache_file("api-b", app_id).exists() and not cache_file("api-a", app_id).exists()

    # A worker with an empty disk, everything through api A: it pulls B's cache from B,
    # then sends its own to A, and B drops its copy.
    cluster.kill("worker-1")
    cluster.start("worker-2", "worker", DOCKYARD_WORKER_NAME="w2", **cluster.worker_env)
    balancer.target = "api-a"
    output = deploy(deployer.upload(app("v2")), "v2")
    assert "Restored the deployment cache from the API" in output
    assert "warm cache: an earlier build" in output
    assert cache_holder(app_id) == own["api-a"]
    wait_for(lambda: not cache_file("api-b", app_id).exists(), timeout=10, what="B to drop it")

    # A cache reset through B, which holds nothing: A's copy is never served again (and
    # goes), and the next build is cold.
    balancer.target = "api-b"
    with deployer.client() as client:
        assert client.delete("/v1/apps/multi-api/caches/deployment").status_code == 204
    wait_for(lambda: not cache_file("api-a", app_id).exists(), timeout=10, what="A to drop it")
    assert "cold cache" in deploy(deployer.upload(app("v3")), "v3")

    # The api process holding a source is gone: its deployment fails, saying to upload
    # the source again; the app goes on serving.
    balancer.target = "api-a"
    orphan = deployer.upload(app("v4"))
    cluster.kill("api-a")
    balancer.target = "api-b"
    status, output = deployer.wait(
        "multi-api", deployer.start("multi-api", source_url=orphan), timeout=60
    )
    assert status == "build-error", output
    assert "upload the source again" in output
    assert "v3.txt" in deployer.get("multi-api").text
