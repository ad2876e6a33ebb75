"""Driving a real ``dockyard serve`` process over its API, for end-to-end tests."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ServerProcess, server_process
from tests.helpers import FINAL, tar_gz_from_files, wait_for


@dataclass
class Visits:
    seen: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)


@dataclass
class Deployer:
    server: ServerProcess
    token: str

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def create_app(self, name: str) -> dict[str, Any]:
        with self.client() as client:
            response = client.post("/v1/apps", json={"app": {"name": name}})
            assert response.status_code == 201, response.text
            app: dict[str, Any] = response.json()["app"]
            return app

    def upload(self, archive: bytes) -> str:
        with self.client() as client:
            source = client.post("/v1/sources", json={}).json()["source"]
        response = httpx.put(
            source["upload_url"], content=archive, headers={"Content-Type": "application/x-gzip"}
        )
        assert response.status_code == 200, response.text
        url: str = source["download_url"]
        return url

    def start(
        self, app: str, *, archive: bytes | None = None, source_url: str | None = None
    ) -> str:
        url = source_url or self.upload(archive or b"")
        with self.client() as client:
            response = client.post(
                f"/v1/apps/{app}/deployments",
                json={"deployment": {"source_url": url, "git_ref": None}},
            )
        assert response.status_code == 201, response.text
        deployment_id: str = response.json()["deployment"]["id"]
        return deployment_id

    def wait(self, app: str, deployment_id: str, *, timeout: float = 180) -> tuple[str, str]:
        """Final status and full output of a deployment."""
        with self.client() as client:

            def final() -> str | None:
                status: str = client.get(f"/v1/apps/{app}/deployments/{deployment_id}").json()[
                    "deployment"
                ]["status"]
                return status if status in FINAL else None

            status = wait_for(
                final, timeout=timeout, interval=0.1, what=f"deployment {deployment_id} to end"
            )
            output = client.get(f"/v1/apps/{app}/deployments/{deployment_id}/output").text
        return status, output

    def deploy(self, app: str, **source: Any) -> tuple[str, str]:
        return self.wait(app, self.start(app, **source))

    def scale(self, app: str, amount: int, *, size: str | None = None, timeout: float = 40) -> None:
        """``scale web:<amount>`` (with ``size`` when given), waited for as the client
        waits: until its operation is done."""
        container: dict[str, Any] = {"name": "web", "amount": amount}
        if size is not None:
            container["size"] = size
        with self.client() as client:
            response = client.post(f"/v1/apps/{app}/scale", json={"containers": [container]})
            assert response.status_code == 202, response.text
            operation = response.headers["location"]

            def ended() -> str | None:
                status: str = client.get(operation).json()["operation"]["status"]
                return status if status in ("done", "error") else None

            assert wait_for(ended, timeout=timeout, what="the scale operation") == "done"

    def deploy_ok(self, app: str, archive: bytes) -> str:
        """Deploys ``archive`` to ``app`` and fails the test, showing the log, unless the
        deployment succeeds; returns its id."""
        deployment_id = self.start(app, archive=archive)
        status, output = self.wait(app, deployment_id)
        assert status == "success", output
        return deployment_id

    def wait_for_output(
        self, app: str, deployment_id: str, text: str, *, timeout: float = 60
    ) -> None:
        with self.client() as client:
            path = f"/v1/apps/{app}/deployments/{deployment_id}/output"
            wait_for(
                lambda: text in client.get(path).text,
                timeout=timeout,
                what=f"{text!r} in the build log",
            )

    @contextmanager
    def visitor(self, app: str) -> Iterator[Visits]:
        """A visitor requesting the app's page through the router over and over (one
        keep-alive connection) while the block runs: every answer and failure is kept."""
        visits = Visits()
        stop = threading.Event()
        port = self.server.router_port

        def poll() -> None:
            with httpx.Client(headers={"Host": f"{app}.localhost:{port}"}, timeout=10) as client:
                while not stop.is_set():
                    try:
                        response = client.get(f"http://127.0.0.1:{port}/")
                        if response.status_code != 200:
                            visits.failures.append(f"{response.status_code}: {response.text[:80]}")
                        else:
                            visits.seen.add(response.text)
                    except httpx.HTTPError as exc:
                        visits.failures.append(repr(exc))

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            yield visits
        finally:
            stop.set()
            poller.join()

    def get(self, app: str, path: str = "/", **kwargs: Any) -> httpx.Response:
        """A request through the router, as a visitor of the app would make it."""
        port = self.server.router_port
        return httpx.get(
            f"http://127.0.0.1:{port}{path}",
            headers={"Host": f"{app}.localhost:{port}"},
            timeout=10,
            **kwargs,
        )


@contextmanager
def file_server(directory: Path) -> Iterator[int]:
    """A plain HTTP server on loopback serving ``directory`` (an 'external' archive host)."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


SLOW_COMPILE = "#!/bin/sh\necho started\nsleep 600\n"


def buildpack_archive(compile_script: str) -> bytes:
    """A custom buildpack whose compile step is ``compile_script``; any app is detected."""
    return tar_gz_from_files(
        {
            "bin/detect": "#!/bin/sh\necho Custom\n",
            "bin/compile": compile_script,
            "bin/release": "#!/bin/sh\necho '---'\necho 'default_process_types:'\n"
            "echo '  web: python3 -m http.server $PORT'\n",
        },
        root="buildpack",
    )


@dataclass
class BuildpackHost:
    """A loopback server holding custom buildpacks, allowed by the dockyard server."""

    directory: Path
    port: int

    def app_using(self, name: str, compile_script: str) -> bytes:
        """An app archive whose ``.buildpacks`` names a buildpack served here."""
        (self.directory / f"{name}.tar.gz").write_bytes(buildpack_archive(compile_script))
        return tar_gz_from_files(
            {".buildpacks": f"http://127.0.0.1:{self.port}/{name}.tar.gz\n", "x": "x"}
        )


@contextmanager
def server_with_buildpack_host(
    tmp_path: Path, username: str, **env: str
) -> Iterator[tuple[Deployer, BuildpackHost]]:
    """A real server allowed to fetch from a local buildpack host, and a user on it."""
    directory = tmp_path / "buildpacks"
    directory.mkdir()
    with file_server(directory) as port:
        server = server_process(tmp_path, DOCKYARD_FETCH_ALLOW=f"127.0.0.1:{port}", **env)
        server.start()
        try:
            yield (
                Deployer(server=server, token=server.create_user(username)),
                BuildpackHost(directory, port),
            )
        finally:
            server.stop()
            server.remove_data()
