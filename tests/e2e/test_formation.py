"""Several instances per process type on a real server: each answers through the router,
one dying leaves the others serving, a redeploy of several loses no request, and web
scaled to zero says so."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import server_process
from tests.e2e.deployer import Deployer
from tests.helpers import tar_gz_from_files, wait_for

SERVER = """
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = f"{os.environ['RELEASE']} {os.environ['CONTAINER']}\\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""
APP = "trio-app"


def release(name: str) -> bytes:
    return tar_gz_from_files(
        {"Procfile": f"web: RELEASE={name} python3 server.py\n", "server.py": SERVER}
    )


@pytest.fixture(scope="module")
def deployer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployer]:
    server = server_process(tmp_path_factory.mktemp("server"), DOCKYARD_BOOT_TIMEOUT="10")
    server.start()
    try:
        yield Deployer(server=server, token=server.create_user("formation"))
    finally:
        server.stop()
        server.remove_data()


def answers(deployer: Deployer, count: int) -> list[str]:
    # A new connection for each request, as separate visitors make them.
    return [deployer.get(APP).text.strip() for _ in range(count)]


def pid_of(container: str) -> int:
    """The instance's process: the one whose environment names it, as the app sees it."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"CONTAINER={container}".encode() in environ and b"server.py" in cmdline:
            return int(entry.name)
    raise AssertionError(f"no process of {container}")


def test_three_instances_serve_and_survive_one_dying_and_a_redeploy(deployer: Deployer) -> None:
    deployer.create_app(APP)
    status, output = deployer.deploy(APP, archive=release("one"))
    assert status == "success", output

    deployer.scale(APP, 3, size="", timeout=30)
    seen = set(answers(deployer, 9))
    assert seen == {f"one {APP}-web-1", f"one {APP}-web-2", f"one {APP}-web-3"}

    os.kill(pid_of(f"{APP}-web-2"), signal.SIGKILL)
    assert all(answer.startswith("one ") for answer in answers(deployer, 12)), (
        "the two others serve every request meanwhile"
    )
    wait_for(
        lambda: f"one {APP}-web-2" in answers(deployer, 6),
        timeout=20,
        what="web-2 to be restarted and back in the rotation",
    )

    with deployer.visitor(APP) as visits:
        status, output = deployer.deploy(APP, archive=release("two"))
        assert status == "success", output
        wait_for(lambda: any(s.startswith("two ") for s in visits.seen), timeout=15, what="two")
    assert visits.failures == []
    # A keep-alive connection stays with its instance while it serves; new ones go round.
    assert set(answers(deployer, 9)) == {f"two {APP}-web-{i}" for i in (1, 2, 3)}
    assert "formation: web:3:M" in output, "the redeploy kept the user's amount"


def test_web_scaled_to_zero_answers_a_page_that_says_so(deployer: Deployer) -> None:
    app = "zero-app"
    deployer.create_app(app)
    status, output = deployer.deploy(app, archive=release("z"))
    assert status == "success", output
    with deployer.client() as client:
        response = client.post(
            f"/v1/apps/{app}/scale", json={"containers": [{"name": "web", "amount": 0}]}
        )
        assert response.status_code == 202

    def page() -> httpx.Response | None:
        response = deployer.get(app)
        return response if response.status_code == 503 else None

    response = wait_for(page, timeout=10, what="the scaled-to-zero page")
    assert "scaled to zero web instances" in response.text
    with deployer.client() as client:
        assert client.get(f"/v1/apps/{app}/ps").json()["containers"] == []
