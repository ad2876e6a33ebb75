"""Running apps on a real server: boot checks, the zero-downtime switch, supervision,
restarts of the server, lifecycle endpoints, app logs and isolation between apps."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.pipeline.package import SLUG_SUFFIX
from tests.conftest import server_process
from tests.e2e import scalingo_ops
from tests.e2e.deployer import Deployer
from tests.helpers import tar_gz_from_files, wait_for

SERVER = """
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ.get("MESSAGE", "hello").encode() + b"\\n"
        if self.path == "/snoop":
            body = snoop().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        print("request", self.path, flush=True)

def snoop():
    results = []
    for path in sys.argv[1:]:
        try:
            results.append(f"{path}: READABLE {sorted(os.listdir(path)) if os.path.isdir(path) else open(path).read()[:40]}")
        except OSError as exc:
            results.append(f"{path}: denied ({exc.__class__.__name__})")
    return "\\n".join(results)

print("booting web on", os.environ["PORT"], flush=True)
ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


def web_app(message: str, *, extra_procfile: str = "", snoop: str = "") -> bytes:
    return tar_gz_from_files(
        {
            "Procfile": f"web: MESSAGE='{message}' python3 server.py {snoop}\n{extra_procfile}",
            "server.py": SERVER,
        }
    )


@pytest.fixture(scope="module")
def deployer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployer]:
    server = server_process(
        tmp_path_factory.mktemp("server"), DOCKYARD_BOOT_TIMEOUT="4", DOCKYARD_RELEASES_KEPT="2"
    )
    server.start()
    try:
        yield Deployer(server=server, token=server.create_user("gina"))
    finally:
        server.stop()
        server.remove_data()


def test_second_deployment_switches_with_no_failed_request(deployer: Deployer) -> None:
    deployer.create_app("switch-app")
    deployer.deploy_ok("switch-app", web_app("version one"))
    assert deployer.get("switch-app").text == "version one\n"

    with deployer.visitor("switch-app") as visits:
        deployer.deploy_ok("switch-app", web_app("version two"))
        wait_for(lambda: "version two\n" in visits.seen, timeout=10, what="the new release to serve")
    assert visits.failures == []
    assert visits.seen == {"version one\n", "version two\n"}


def test_app_that_never_binds_times_out_and_the_old_release_keeps_serving(
    deployer: Deployer,
) -> None:
    deployer.create_app("never-binds")
    deployer.deploy_ok("never-binds", web_app("still here"))
    archive = tar_gz_from_files(
        {
            "Procfile": "web: python3 -c 'import time; print(\"not listening\", flush=True); time.sleep(600)'\n"
        }
    )
    status, output = deployer.deploy("never-binds", archive=archive)
    assert status == "timeout-error"
    assert "4 seconds" in output, output
    assert deployer.get("never-binds").text == "still here\n"


def test_app_that_exits_at_boot_is_crashed_error_with_its_output(deployer: Deployer) -> None:
    deployer.create_app("exits-at-boot")
    deployer.deploy_ok("exits-at-boot", web_app("old one"))
    archive = tar_gz_from_files(
        {
            "Procfile": "web: python3 -c 'import sys; print(\"cannot find DATABASE_URL\", flush=True); sys.exit(3)'\n"
        }
    )
    status, output = deployer.deploy("exits-at-boot", archive=archive)
    assert status == "crashed-error"
    assert "cannot find DATABASE_URL" in output
    assert "3" in output
    assert deployer.get("exits-at-boot").text == "old one\n"


def web_pid(deployer: Deployer, app: str) -> int:
    """The host pid of the app's web server (the sandboxed python, not bwrap)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"python3", b"server.py"] and f"MESSAGE={app}".encode() in (
            Path(cmdline.parent, "environ").read_bytes()
        ):
            return int(cmdline.parent.name)
    raise AssertionError(f"no web process found for {app}")


def test_a_process_killed_after_success_is_back_within_seconds(deployer: Deployer) -> None:
    deployer.create_app("killed-web")
    deployer.deploy_ok("killed-web", web_app("killed-web"))
    pid = web_pid(deployer, "killed-web")
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: (
            deployer.get("killed-web").status_code == 200 and web_pid(deployer, "killed-web") != pid
        ),
        timeout=15,
        what="the restart",
    )
    assert deployer.get("killed-web").text == "killed-web\n"


def test_lifecycle_endpoints_and_app_logs(deployer: Deployer) -> None:
    deployer.create_app("lifecycle-app")
    deployer.deploy_ok("lifecycle-app", web_app("alive"))
    deployer.get("lifecycle-app", "/hello-logs")
    with deployer.client() as client:
        logs_url = client.get("/v1/apps/lifecycle-app/logs").json()["logs_url"]

        def logs_with_the_request() -> str | None:
            text = scalingo_ops.dump(logs_url, lines=50).text
            return text if "request /hello-logs" in text else None

        logs = wait_for(
            logs_with_the_request,
            timeout=10,
            what="the request in the app's logs",
        )
        assert "booting web on" in logs
        assert client.get("/v1/apps/lifecycle-app").json()["app"]["status"] == "running"
        assert client.post("/v1/apps/lifecycle-app/stop", json={}).status_code == 202
        assert client.get("/v1/apps/lifecycle-app").json()["app"]["status"] == "stopped"
        latest = client.get("/v1/apps/lifecycle-app/events?page=1&per_page=1").json()["events"][0]
        assert (latest["type"], latest["type_data"]) == ("stop_app", {"reason": "stopped by a user"})
        stopped_page = deployer.get("lifecycle-app")
        assert stopped_page.status_code == 503
        assert "stopped" in stopped_page.text
        assert client.post("/v1/apps/lifecycle-app/start", json={}).status_code == 202
        wait_for(
            lambda: deployer.get("lifecycle-app").status_code == 200,
            timeout=15,
            what="the app to start",
        )
        assert client.post("/v1/apps/lifecycle-app/restart", json={}).status_code == 202
        wait_for(
            lambda: deployer.get("lifecycle-app").status_code == 200,
            timeout=15,
            what="the app to restart",
        )
        assert client.delete("/v1/apps/lifecycle-app").status_code == 204
    assert deployer.get("lifecycle-app").status_code == 404
    with pytest.raises(AssertionError):
        web_pid(deployer, "alive")


def test_an_app_cannot_read_another_apps_files_or_the_data_dir(deployer: Deployer) -> None:
    deployer.create_app("victim-app")
    victim = deployer.deploy_ok("victim-app", web_app("victim"))
    data_dir = deployer.server.data_dir
    targets = f"{data_dir} {data_dir}/releases/{victim} {data_dir}/secret.key /root /proc/1/environ"
    deployer.create_app("snooper-app")
    deployer.deploy_ok("snooper-app", web_app("snooper", snoop=targets))
    report = deployer.get("snooper-app", "/snoop").text
    lines = report.splitlines()
    assert len(lines) == 5
    for line in lines[:4]:
        assert "denied" in line, report
    assert "DOCKYARD" not in lines[4] and "HOME=/root" not in lines[4]


def test_restarting_the_server_brings_apps_back_without_a_deployment(tmp_path: Path) -> None:
    server = server_process(tmp_path)
    server.start()
    try:
        deployer = Deployer(server=server, token=server.create_user("hank"))
        deployer.create_app("survivor-app")
        deployer.deploy_ok("survivor-app", web_app("survivor"))
        server.stop()
        server.start()
        wait_for(
            lambda: deployer.get("survivor-app").status_code == 200,
            timeout=20,
            what="the app to come back",
        )
        assert deployer.get("survivor-app").text == "survivor\n"
        with deployer.client() as client:
            assert (
                client.get("/v1/apps/survivor-app/deployments").json()["meta"]["pagination"][
                    "total_count"
                ]
                == 1
            )
    finally:
        server.stop()
        server.remove_data()


def test_logs_follow_streams_new_lines(deployer: Deployer) -> None:
    deployer.create_app("follow-logs-app")
    deployer.deploy_ok("follow-logs-app", web_app("follow"))
    with deployer.client() as client:
        logs_url = client.get("/v1/apps/follow-logs-app/logs").json()["logs_url"]
    with scalingo_ops.follow(logs_url) as stream:
        deployer.get("follow-logs-app", "/first-followed-request")
        text = scalingo_ops.next_log_frame(
            stream, containing="request /first-followed-request", timeout=10
        )
    assert "[web-1] request /first-followed-request" in text


def test_only_the_current_and_previous_releases_stay_on_disk(deployer: Deployer) -> None:
    """With DOCKYARD_RELEASES_KEPT=2 (this module's server): the serving release and the
    one before it."""
    deployer.create_app("pruned-app")
    ids = [deployer.deploy_ok("pruned-app", web_app(f"v{n}")) for n in range(3)]
    failed = deployer.start("pruned-app", archive=tar_gz_from_files({"Procfile": "web: false\n"}))
    assert deployer.wait("pruned-app", failed)[0] == "crashed-error"
    data = deployer.server.data_dir

    def kept() -> bool:
        on_disk = {i for i in [*ids, failed] if (data / "releases" / i).exists()}
        slugs = {
            i for i in [*ids, failed] if (data / "blobs" / "slugs" / f"{i}{SLUG_SUFFIX}").exists()
        }
        return on_disk == slugs == {ids[1], ids[2]}

    # The oldest goes once it has drained and stopped (a second after it was replaced).
    wait_for(kept, timeout=20, what="only the current and previous releases on disk")
    assert deployer.get("pruned-app").text == "v2\n"
