"""Probes of a real ``dockyard serve`` running real builds and apps (issue 15, items 3,
5, 8 and 10): deleting an app while its release starts, a build flooding its output, and
an app's variables on the host's process list and in its sandbox's /proc/1/environ."""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.deployer import BuildpackHost, Deployer, server_with_buildpack_host
from tests.helpers import processes_of, tar_gz_from_files, wait_for

MAX_OUTPUT = 256 * 1024


@pytest.fixture(scope="module")
def hosted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployer, BuildpackHost]]:
    with server_with_buildpack_host(
        tmp_path_factory.mktemp("hardening"),
        "mallory",
        DOCKYARD_MAX_BUILD_OUTPUT_BYTES=str(MAX_OUTPUT),
        DOCKYARD_BOOT_TIMEOUT="60",
    ) as pair:
        yield pair


@pytest.fixture
def deployer(hosted: tuple[Deployer, BuildpackHost]) -> Deployer:
    return hosted[0]


def _sandbox_uid(deployer: Deployer, app: str) -> int:
    with sqlite3.connect(deployer.server.data_dir / "dockyard.db") as db:
        row = db.execute("SELECT sandbox_uid FROM apps WHERE name = ?", (app,)).fetchone()
    assert row is not None, app
    return int(row[0])


def _status(deployer: Deployer, app: str, deployment_id: str) -> str:
    with deployer.client() as client:
        status: str = client.get(f"/v1/apps/{app}/deployments/{deployment_id}").json()[
            "deployment"
        ]["status"]
        return status


def _server_log(deployer: Deployer) -> str:
    assert deployer.server.log_path is not None
    return deployer.server.log_path.read_text(errors="replace")


def test_deleting_an_app_while_it_starts_stops_it_and_its_uid_is_never_reused(
    deployer: Deployer,
) -> None:
    """Before: the new release kept listening until the server stopped, the worker
    crashed storing the log, and the next app created got the same uid at once."""
    deployer.create_app("doomed-app")
    # The web process takes a few seconds to listen: the deployment waits in "starting".
    slow_boot = "web: sleep 4 && exec python3 -m http.server $PORT\n"
    deployment_id = deployer.start("doomed-app", archive=tar_gz_from_files({"Procfile": slow_boot}))
    wait_for(
        lambda: _status(deployer, "doomed-app", deployment_id) == "starting",
        timeout=60,
        what="the deployment to be starting",
    )
    uid = _sandbox_uid(deployer, "doomed-app")
    wait_for(lambda: processes_of(uid), timeout=10, what="the release's processes")
    began = time.monotonic()
    with deployer.client() as client:
        assert client.delete("/v1/apps/doomed-app").status_code == 204
        assert client.get("/v1/apps/doomed-app").status_code == 404
    deleting = time.monotonic() - began
    assert processes_of(uid) == [], "the release outlived its app"
    assert deleting < 15, deleting
    # Past the moment the release would have listened, nothing of it came back.
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        assert processes_of(uid) == [], "the release came back after its app was deleted"
        time.sleep(0.2)
    assert deployer.get("doomed-app").status_code == 404
    log = _server_log(deployer)
    assert "could not be stored" not in log and "Traceback" not in log
    deployer.create_app("next-app")
    assert _sandbox_uid(deployer, "next-app") > uid


def test_a_build_flooding_its_output_is_cut_keeping_the_end(
    hosted: tuple[Deployer, BuildpackHost],
) -> None:
    """Before: 100 MB printed by a buildpack were all stored (database +361 MB, server
    memory +100 MB). Here 30 MB against a 256 KiB cap."""
    deployer, buildpacks = hosted
    flood = (
        "#!/bin/sh\n"
        "echo 'the flood begins'\n"
        "head -c 30000000 /dev/zero | tr '\\0' 'x' | fold -w 99\n"
        "echo 'ERROR: the real cause, at the very end'\n"
        "exit 1\n"
    )
    deployer.create_app("flood-app")
    pid = deployer.server.process.pid if deployer.server.process else 0
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = _memory(pid)["VmRSS"]
    latencies: list[float] = []
    done = threading.Event()

    def poll_api() -> None:
        with deployer.client() as client:
            while not done.is_set():
                began = time.monotonic()
                assert client.get("/v1/apps").status_code == 200
                latencies.append(time.monotonic() - began)
                time.sleep(0.05)

    watcher = threading.Thread(target=poll_api)
    watcher.start()
    try:
        status, output = deployer.deploy("flood-app", archive=buildpacks.app_using("flood", flood))
    finally:
        done.set()
        watcher.join()
    peak = _memory(pid)["VmHWM"]
    assert status == "build-error"
    assert "the flood begins" in output
    assert "were cut here: a deployment stores at most 256 KiB of output" in output
    assert "ERROR: the real cause, at the very end" in output[-8000:]
    assert len(output.encode()) < MAX_OUTPUT + 16 * 1024, len(output)
    assert peak - before < 40 * 1024 * 1024, (before, peak)
    assert latencies and max(latencies) < 2.0, max(latencies)


def _memory(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(rest.split()[0]) * 1024
    return fields


def test_app_variables_are_not_on_the_process_list_nor_the_servers_pwd_in_pid_1(
    deployer: Deployer,
) -> None:
    secret = "v-" + secrets.token_hex(12)
    deployer.create_app("environ-app")
    with deployer.client() as client:
        response = client.post(
            "/v1/apps/environ-app/variables",
            json={"variable": {"name": "API_SECRET", "value": secret}},
        )
        assert response.status_code == 201
    # The web process publishes its sandbox's /proc/1/environ, one variable a line.
    procfile = (
        "web: tr '\\0' '\\n' < /proc/1/environ > /tmp/pid1.txt && cd /tmp && "
        "exec python3 -m http.server $PORT\n"
    )
    status, output = deployer.deploy(
        "environ-app", archive=tar_gz_from_files({"Procfile": procfile})
    )
    assert status == "success", output
    command_lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command_lines.append((entry / "cmdline").read_bytes())
            except OSError:
                continue
    assert not [line for line in command_lines if secret.encode() in line]
    pid1 = deployer.get("environ-app", "/pid1.txt")
    assert pid1.status_code == 200
    variables = dict(line.split("=", 1) for line in pid1.text.splitlines() if "=" in line)
    assert variables["API_SECRET"] == secret
    assert "PWD" not in variables, variables.get("PWD")
    assert not [name for name in variables if name.startswith("DOCKYARD_")]
