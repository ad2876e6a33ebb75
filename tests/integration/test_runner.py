"""One deployment through the runner, in process: a real build in its sandbox, a fake
runtime, so that the order of packaging, start and routing can be watched (and packaging
made to fail)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import Api, make_settings, server_data_dir, serving_api
from tests.helpers import tar_gz_from_files

from dockyard import sandbox
from dockyard.domain import status as st
from dockyard.errors import BuildError
from dockyard.pipeline import cache, package
from dockyard.routetable import Backend, RouteTable
from dockyard.runtime.fake import FakeRuntime
from dockyard.runtime.supervisor import Supervisor
from dockyard.services import deployments as deployments_service
from dockyard.services.lifecycle import cache_dir
from dockyard.services.runtime_state import DatabaseStateStore
from dockyard.worker.runner import run_deployment

APP = "runner-app"
# The fake runtime runs nothing, but the procfile buildpack checks that the program exists.
FILES = {"Procfile": "web: sleep infinity\n", "index.txt": "hello\n"}
SLUG_SECONDS = 0.3  # packaging made slower than the fake processes take to launch


class RecordingRoutes(RouteTable):
    def __init__(self, events: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.events = events

    def set_backends(
        self, app: str, backends: Iterable[Backend], *, empty: str = "crashed"
    ) -> None:
        chosen = list(backends)
        if chosen:
            self.events.append(("route", app, ""))
        super().set_backends(app, chosen, empty=empty)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """The control plane on SQLite, its data where the build sandbox can reach it."""
    data_dir = server_data_dir()
    with serving_api(make_settings(tmp_path, DOCKYARD_DATA_DIR=str(data_dir))) as api:
        yield api
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def runtime(api: Api) -> Iterator[FakeRuntime]:
    runtime = FakeRuntime()
    api.platform.supervisor = Supervisor(
        runtime,
        RecordingRoutes(runtime.events),
        DatabaseStateStore(api.platform.db),
        boot_timeout=5,
        stop_grace=1,
        logs_dir=api.platform.settings.data_dir / "logs",
        host_uid_for=DatabaseStateStore(api.platform.db).sandbox_uid,
        limits=sandbox.Limits(),
    )
    yield runtime
    runtime.kill_all()


@pytest.fixture
def record_statuses(monkeypatch: pytest.MonkeyPatch, runtime: FakeRuntime) -> None:
    transition = deployments_service.transition

    def recording(**kwargs: Any) -> None:
        transition(**kwargs)
        runtime.events.append(("status", kwargs["new_status"], ""))

    monkeypatch.setattr(deployments_service, "transition", recording)


@pytest.fixture
def slow_slug(monkeypatch: pytest.MonkeyPatch, runtime: FakeRuntime) -> None:
    make_slug = package.make_slug

    def slow(app_dir: Path, slug_path: Path) -> int:
        time.sleep(SLUG_SECONDS)
        size = make_slug(app_dir, slug_path)
        runtime.events.append(("slug made", "", ""))
        return size

    monkeypatch.setattr(package, "make_slug", slow)


def deploy(api: Api, files: dict[str, str] = FILES, *, new_app: bool = True) -> tuple[str, str]:
    """Upload the app, create its deployment, run it as a worker would: (id, final status)."""
    with api.client() as client:
        if new_app:
            client.post("/v1/apps", json={"app": {"name": APP}}).raise_for_status()
        source = client.post("/v1/sources", json={}).json()["source"]
        httpx.put(
            source["upload_url"],
            content=tar_gz_from_files(files),
            headers={"Content-Type": "application/x-gzip"},
        ).raise_for_status()
        body = {"deployment": {"source_url": source["download_url"]}}
        created = client.post(f"/v1/apps/{APP}/deployments", json=body)
        created.raise_for_status()
    platform = api.platform
    claimed = deployments_service.claim_next(
        db=platform.db, bus=platform.bus, worker_id="test", lease_seconds=60
    )
    assert claimed is not None and claimed.id == created.json()["deployment"]["id"]
    return claimed.id, run_deployment(platform, claimed, stopping=threading.Event())


def test_the_release_boots_while_its_slug_is_made_and_is_routed_once_it_is_stored(
    api: Api, runtime: FakeRuntime, slow_slug: None, record_statuses: None
) -> None:
    deployment_id, final = deploy(api)
    assert final == st.SUCCESS
    steps = [name if kind == "status" else kind for kind, name, _ in runtime.events]
    assert steps == ["pushing", "start", "slug made", "starting", "route", "success"]
    slug = api.platform.blobs.local_path(f"slugs/{deployment_id}{package.SLUG_SUFFIX}")
    assert slug.stat().st_size > 0
    with api.client() as client:
        deployment = client.get(f"/v1/apps/{APP}/deployments/{deployment_id}").json()
    assert deployment["deployment"]["image_size"] == slug.stat().st_size


def test_a_packaging_failure_is_a_build_error_and_the_new_processes_are_stopped(
    api: Api, runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch, record_statuses: None
) -> None:
    def failing(app_dir: Path, slug_path: Path) -> int:
        time.sleep(SLUG_SECONDS)
        raise BuildError("The built app could not be packaged: tar said: No space left on device")

    monkeypatch.setattr(package, "make_slug", failing)
    deployment_id, final = deploy(api, {**FILES, "requirements.txt": ""})
    assert final == st.BUILD_ERROR
    # The build is not kept either: the next one starts from the cache as it was.
    assert not cache_dir(api.platform.settings, app_id(api)).exists()
    steps = [name if kind == "status" else kind for kind, name, _ in runtime.events]
    assert steps == ["pushing", "start", "stop", "build-error"]
    with api.client() as client:
        output = client.get(f"/v1/apps/{APP}/deployments/{deployment_id}/output").text
    assert "could not be packaged: tar said: No space left on device" in output
    kinds = [kind for kind, _, _ in runtime.events]
    assert "start" in kinds, "the processes were launched while packaging ran"
    assert "route" not in kinds
    assert runtime.running() == []
    assert not (api.platform.settings.releases_dir / deployment_id).exists()


def test_a_build_runs_in_the_root_a_finished_build_left_bare_never_in_a_failed_ones(
    api: Api, runtime: FakeRuntime
) -> None:
    pool = api.platform.settings.builds_dir / ".roots"
    assert deploy(api)[1] == st.SUCCESS
    (root,) = pool.iterdir()
    inode = root.stat().st_ino
    assert {path.name for path in root.iterdir()} >= {"usr", "proc", "tmp", "bin"}
    assert deploy(api, new_app=False)[1] == st.SUCCESS
    assert [path.stat().st_ino for path in pool.iterdir()] == [inode], "the same root, reused"

    unsupported = {**FILES, "requirements.txt": "", "runtime.txt": "python-2.7.18\n"}
    assert deploy(api, unsupported, new_app=False)[1] == st.BUILD_ERROR
    # Its build took the pooled root and left its app in it: that root is not reused.
    assert list(pool.iterdir()) == []


def test_the_next_build_cannot_reach_the_serving_release_through_the_cache(
    api: Api, runtime: FakeRuntime
) -> None:
    # dockyard keeps the Python buildpack's venv in the cache as hard links of the app's.
    files = {"Procfile": "web: serve-forever\n", "requirements.txt": ""}
    deployment_id, final = deploy(api, files)
    assert final == st.SUCCESS
    saved = cache_dir(api.platform.settings, app_id(api))
    next_build = api.platform.settings.data_dir / "next-build"
    owner = DatabaseStateStore(api.platform.db).sandbox_uid(APP)
    cache.checkout(saved, next_build, owner=owner)  # as the next build gets it
    release = api.platform.settings.releases_dir / deployment_id
    shared = _inodes(release) & _inodes(next_build)
    assert shared, "the venv is kept as hard links, not copied"
    for path in next_build.rglob("*"):
        st_ = path.lstat()
        if (st_.st_dev, st_.st_ino) in shared:
            assert st_.st_uid == 0 and not st_.st_mode & 0o222, f"{path} is writable"


def _inodes(root: Path) -> set[tuple[int, int]]:
    found = set()
    for path in root.rglob("*"):
        st_ = path.lstat()
        if path.is_file() and not path.is_symlink():
            found.add((st_.st_dev, st_.st_ino))
    return found


def app_id(api: Api) -> str:
    with api.client() as client:
        app: str = client.get(f"/v1/apps/{APP}").json()["app"]["id"]
    return app
