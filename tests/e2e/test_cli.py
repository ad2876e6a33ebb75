"""The ``dockyard`` command-line client, run as a real process against a real server."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import SAMPLES, ServerProcess, free_port, server_process
from tests.helpers import wait_for

COMMAND_TIMEOUT = 180


@dataclass
class Cli:
    """One user's ``dockyard`` command: its own HOME, configuration file and directory."""

    home: Path
    server: ServerProcess

    @property
    def config(self) -> Path:
        return self.home / "config" / "dockyard.json"

    def env(self, **extra: str) -> dict[str, str]:
        base = {key: value for key, value in os.environ.items() if not key.startswith("DOCKYARD_")}
        return {
            **base,
            "HOME": str(self.home),
            "DOCKYARD_CONFIG": str(self.config),
            "COLUMNS": "200",
            **extra,
        }

    def run(
        self,
        *args: str,
        cwd: Path | None = None,
        stdin: str = "",
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dockyard.cli", *args],
            cwd=cwd or self.home,
            env=env or self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )

    def ok(
        self, *args: str, cwd: Path | None = None, stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, cwd=cwd, stdin=stdin)
        assert result.returncode == 0, (
            f"dockyard {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        )
        assert "Traceback" not in result.stderr
        return result

    def login(self, username: str) -> None:
        token = self.server.create_user(username)
        self.ok("login", "--api-url", self.server.url, "--api-token", token)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # One server for the module (each test has its own user): starting one costs seconds.
    process = server_process(tmp_path_factory.mktemp("cli-server"))
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def cli(tmp_path: Path, server: ServerProcess) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    return Cli(home=home, server=server)


def expected_failure(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, f"{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stderr


def uploaded_bytes(stderr: str) -> int:
    found = re.search(r"Uploaded (\d+) bytes", stderr)
    assert found, stderr
    return int(found.group(1))


def test_login_apps_and_environment(cli: Cli) -> None:
    cli.login("cli-alice")
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600
    saved = json.loads(cli.config.read_text())
    assert saved["api_url"] == cli.server.url
    assert saved["jwt"]["exp"] > 0  # the exchanged JWT is cached with its expiry
    assert "cli-alice" in cli.ok("whoami").stdout

    project = cli.home / "project"
    project.mkdir()
    created = cli.ok("create", "cli-shop", cwd=project)
    assert "Created app cli-shop" in created.stdout
    assert json.loads((project / ".dockyard").read_text()) == {"app": "cli-shop"}
    listed = json.loads(cli.ok("apps", "--json").stdout)
    assert [app["name"] for app in listed] == ["cli-shop"]
    assert "cli-shop" in cli.ok("apps").stdout

    subdir = project / "src"
    subdir.mkdir()  # the .dockyard file of a parent directory selects the app
    cli.ok("env-set", "GREETING=hello world", "DEBUG=1", cwd=subdir)
    assert json.loads(cli.ok("env", "--json", cwd=subdir).stdout) == {
        "DEBUG": "1",
        "GREETING": "hello world",
    }
    assert "GREETING=hello world" in cli.ok("env", "--app", "cli-shop").stdout
    cli.ok("env-unset", "DEBUG", cwd=project)
    assert json.loads(cli.ok("env", "--json", "-a", "cli-shop").stdout) == {
        "GREETING": "hello world"
    }
    assert "no variable NOPE" in expected_failure(cli.run("env-unset", "NOPE", cwd=project), 2)
    assert "name:" in expected_failure(cli.run("env-set", "1BAD=x", cwd=project))

    assert "cli-shop" in cli.ok("open", cwd=project).stdout
    expected_failure(cli.run("destroy", "cli-shop", stdin="n\n"), 2)
    assert json.loads(cli.ok("apps", "--json").stdout)
    cli.ok("destroy", "--yes", cwd=project)
    assert json.loads(cli.ok("apps", "--json").stdout) == []
    assert not (project / ".dockyard").exists()


def test_errors_are_words(cli: Cli) -> None:
    assert "dockyard login" in expected_failure(cli.run("apps"))  # not logged in yet
    cli.login("cli-bob")
    assert "No app selected" in expected_failure(cli.run("env"), 2)
    assert "there is no app named 'ghost'" in expected_failure(cli.run("env", "--app", "ghost"))
    assert "name: must be" in expected_failure(cli.run("create", "x"))


def test_wrong_token_says_to_log_in_again(cli: Cli) -> None:
    refused = expected_failure(
        cli.run("login", "--api-url", cli.server.url, "--api-token", "tk-us-wrong")
    )
    assert "refused the API token" in refused
    assert "dockyard login" in refused
    assert not cli.config.exists()
    env = cli.env(DOCKYARD_API_URL=cli.server.url, DOCKYARD_API_TOKEN="tk-us-wrong")
    assert "dockyard login" in expected_failure(cli.run("apps", env=env))


def test_unreachable_server_names_the_url(cli: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    failed = expected_failure(
        cli.run("apps", env=cli.env(DOCKYARD_API_URL=url, DOCKYARD_API_TOKEN="tk"))
    )
    assert f"Could not connect to {url}/" in failed
    assert "server is running" in failed


def test_deployments_listing_and_logs(cli: Cli) -> None:
    cli.login("cli-carol")
    cli.ok("create", "cli-listing")
    assert "No deployments yet" in cli.ok("deployments").stdout
    first = cli.ok("deploy", str(SAMPLES / "procfile-app"), "--no-follow", "--git-ref", "v1")
    second = cli.ok("deploy", str(SAMPLES / "procfile-app"), "--no-follow", "--git-ref", "v2")
    ids = [re.search(r"Deployment (\S+) of", result.stdout).group(1) for result in (first, second)]  # type: ignore[union-attr]

    listed = json.loads(cli.ok("deployments", "--json").stdout)
    assert [d["id"] for d in listed["deployments"]] == ids[::-1]  # newest first
    assert [d["git_ref"] for d in listed["deployments"]] == ["v2", "v1"]
    assert listed["meta"]["pagination"]["total_count"] == 2
    table = cli.ok("deployments", "--per-page", "1").stdout
    assert ids[1] in table and ids[0] not in table
    assert "Page 1 of 2 (2 deployments). Next: --page 2" in table
    assert ids[0] in cli.ok("deployments", "--per-page", "1", "--page", "2").stdout

    # deployment-follow waits for the latest one, then deployment-logs prints its log.
    followed = cli.run("deployment-follow")
    assert "Deployment status:" in followed.stdout
    assert "Fetching source" in cli.ok("deployment-logs").stdout
    assert "Fetching source" in cli.ok("deployment-logs", ids[0]).stdout
    assert "deployment not found" in expected_failure(cli.run("deployment-logs", "no-such-id"))
    assert "cache" in cli.ok("deployment-delete-cache").stdout


def test_deploy_sends_a_packed_directory_without_ignored_files(cli: Cli) -> None:
    cli.login("cli-dave")
    cli.ok("create", "cli-packing")
    project = cli.home / "site"
    (project / ".git").mkdir(parents=True)
    (project / "Procfile").write_text("web: python3 -m http.server $PORT\n")
    (project / "index.html").write_text("<p>hello</p>\n")
    (project / ".dockyardignore").write_text("*.bin\n")
    (project / ".git" / "pack.bin").write_bytes(os.urandom(1024 * 1024))
    with (project / "big.bin").open("wb") as handle:
        for _ in range(50):  # random: it cannot hide by compressing well
            handle.write(os.urandom(1024 * 1024))
    result = cli.ok("deploy", str(project), "--no-follow")
    assert uploaded_bytes(result.stderr) < 10_000  # the server's own count of what arrived

    # An archive is sent as is.
    archive = cli.home / "site.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(SAMPLES / "procfile-app", arcname="procfile-app")
    as_is = cli.ok("deploy", str(archive), "--no-follow")
    assert uploaded_bytes(as_is.stderr) == archive.stat().st_size
    assert "neither a directory nor" in expected_failure(
        cli.run("deploy", str(project / "Procfile")), 2
    )


def test_deploy_directory_succeeds(cli: Cli) -> None:
    cli.login("cli-erin")
    cli.ok("create", "cli-deploy-ok")
    result = cli.run("deploy", str(SAMPLES / "procfile-app"))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "Procfile" in result.stdout  # the build log, live
    assert "Deployment status: success" in result.stdout
    assert "cli-deploy-ok is running at" in result.stdout
    logs = cli.run("logs", "-n", "20")
    assert logs.returncode == 0, f"logs: {logs.stdout}\n{logs.stderr}"
    assert re.search(r"^\d{4}-\d\d-\d\d \S+ \+0000 UTC \[web-1\] ", logs.stdout, re.M), logs.stdout
    # A one-off through the attach protocol: its output here, its status ours.
    ran = cli.run("run", "--env", "WHO=the-cli", "echo hello from $WHO; exit 3")
    assert ran.returncode == 3, f"{ran.stdout}\n{ran.stderr}"
    assert "hello from the-cli" in ran.stdout
    detached = cli.run("run", "--detached", "echo detached from the cli")
    assert detached.returncode == 0, detached.stderr
    label = re.search(r"one-off-\d+", detached.stderr)
    assert label, detached.stderr
    wait_for(
        lambda: "detached from the cli" in cli.ok("logs", "--filter", label.group(0)).stdout,
        timeout=15,
        what="the detached one-off's output in dockyard logs",
    )


def test_failing_build_exits_nonzero(cli: Cli) -> None:
    cli.login("cli-frank")
    cli.ok("create", "cli-deploy-bad")
    project = cli.home / "nothing-to-build"
    project.mkdir()
    (project / "README.txt").write_text("no buildpack marker here\n")
    result = cli.run("deploy", str(project))
    failure = expected_failure(result)
    assert "Deployment status: build-error" in result.stdout
    assert "ended with status build-error" in failure
    assert "Reason:" in failure  # the buildpack's own explanation, repeated
    assert "dockyard deployment-logs" in failure


def test_scale_ps_and_restart(cli: Cli) -> None:
    cli.login("cli-gail")
    cli.ok("create", "cli-scaled")
    cli.ok("deploy", str(SAMPLES / "procfile-app"))

    scaled = cli.ok("scale", "web:2:S")
    assert "web: 2 - S" in scaled.stdout
    listing = cli.ok("ps").stdout
    assert re.search(r"web-1\s+running\s+S", listing), listing
    assert re.search(r"web-2\s+running\s+S", listing), listing

    assert "Restarted cli-scaled" in cli.ok("restart", "web-2").stdout
    assert "web-2" in cli.ok("ps").stdout
    refused = expected_failure(cli.run("scale", "web:1000"))
    assert "from 0 to 100" in refused
    assert "TYPE:AMOUNT" in expected_failure(cli.run("scale", "web=2"), code=2)


def test_rollback_starts_the_previous_release_again_without_a_build(cli: Cli) -> None:
    cli.login("cli-gina")
    cli.ok("create", "cli-rollback")
    nothing = expected_failure(cli.run("rollback"))
    assert "no earlier successful release" in nothing
    first = cli.ok("deploy", str(SAMPLES / "procfile-app"), "--git-ref", "v1")
    cli.ok("deploy", str(SAMPLES / "procfile-app"), "--git-ref", "v2")
    first_id = re.search(r"Deployment (\S+) of", first.stdout).group(1)  # type: ignore[union-attr]

    rolled = cli.ok("rollback")
    assert f"to the release of deployment {first_id} (v1) created." in rolled.stdout
    assert "Rolling back to the release of deployment" in rolled.stdout  # its log, live
    assert "Deployment status: success" in rolled.stdout
    assert "Fetching source" not in rolled.stdout
    listed = json.loads(cli.ok("deployments", "--json").stdout)["deployments"]
    assert [(d["git_ref"], d["rollback_of"]) for d in listed] == [
        ("v1", first_id), ("v2", None), ("v1", None)
    ]
    assert "deployment not found" in expected_failure(cli.run("rollback", "no-such-id"))


def test_addons_add_backup_restore_and_remove(cli: Cli) -> None:
    cli.login("addons-user")
    cli.ok("create", "cli-addons-app")
    plans = cli.ok("addons-plans", "postgresql").stdout
    assert "postgresql-starter-512" in plans
    added = cli.ok("addons-add", "postgresql", "postgresql-sandbox").stdout
    assert "SCALINGO_POSTGRESQL_URL, DATABASE_URL" in added
    listed = cli.ok("addons").stdout
    assert "PostgreSQL" in listed and "postgresql-sandbox" in listed and "running" in listed
    assert "DATABASE_URL=postgres://" in cli.ok("env").stdout
    backup = re.search(r"Backup (\S+) of postgresql", cli.ok("addons-backup", "postgresql").stdout)
    assert backup, "no backup id printed"
    assert backup.group(1) in cli.ok("addons-backups").stdout
    restored = cli.ok("addons-restore", "postgresql", backup.group(1), "--yes").stdout
    assert "Restored backup" in restored
    unknown = expected_failure(cli.run("addons-add", "mongodb", "sandbox"))
    assert "postgresql, redis" in unknown
    assert "now on postgresql-starter-512" in cli.ok(
        "addons-upgrade", "postgresql", "postgresql-starter-512"
    ).stdout
    assert "postgresql-starter-512" in cli.ok("addons").stdout
    cli.ok("addons-remove", "postgresql", "--yes")
    assert "No addons" in cli.ok("addons").stdout
    assert "DATABASE_URL" not in cli.ok("env").stdout
