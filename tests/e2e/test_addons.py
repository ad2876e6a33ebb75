"""Addons on a real server, through the official client's requests (API-OPS §9): an app
shaped like Scalingo's Django sample (pyproject + uv.lock + scalingo.json declaring a
PostgreSQL addon and a postdeploy migration) gets its database at its first deployment,
its page reads and writes it, another app cannot connect with the same URL, the data
survives ``kill -9`` of the server, and a backup restored into a fresh addon holds the same
rows. Redis is provisioned, reached and backed up through the API too."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.addons import recipes
from tests.conftest import ServerProcess, server_process
from tests.helpers import ScalingoClient, processes_of, tar_gz_from_files, wait_for

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap"),
    pytest.mark.skipif(os.geteuid() != 0, reason="app namespaces need root"),
]


@pytest.fixture(autouse=True)
def _servers_installed() -> None:
    try:
        recipes.postgresql_bin()
        recipes.redis_server()
    except Exception as exc:
        if os.environ.get("DOCKYARD_REQUIRE_ADDONS") == "1":
            pytest.fail(f"addon tests are required (DOCKYARD_REQUIRE_ADDONS=1): {exc}")
        pytest.skip(str(exc))


APP = """
import os, socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import psycopg


def redis_ping(url):
    parts = urlparse(url)
    password = parts.password.encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=3) as conn:
        conn.sendall(b"*2\\r\\n$4\\r\\nAUTH\\r\\n$%d\\r\\n%s\\r\\n*1\\r\\n$4\\r\\nPING\\r\\n" % (len(password), password))
        return conn.recv(100).decode().replace("\\r\\n", " ").strip()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        try:
            if url.path == "/probe":
                with psycopg.connect(parse_qs(url.query)["url"][0], connect_timeout=3):
                    body = "connected"
            elif url.path == "/redis":
                body = redis_ping(os.environ["REDIS_URL"])
            else:
                with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
                    conn.execute("INSERT INTO visits DEFAULT VALUES")
                    count = conn.execute("SELECT count(*) FROM visits").fetchone()[0]
                body = f"visits: {count}"
        except Exception as exc:
            body = f"failed: {exc.__class__.__name__}: {exc}"
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""

MIGRATE = """
import os, psycopg
with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS visits (id serial PRIMARY KEY)")
print("migrated: the visits table exists")
"""

PYPROJECT = """[project]
name = "shop-app"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["psycopg[binary]>=3.2"]
"""

MANIFEST = """{
  "name": "shop-app",
  "addons": [{"plan": "postgresql:postgresql-starter-512", "options": {"version": "15"}}],
  "scripts": {"postdeploy": "python migrate.py"}
}
"""


@pytest.fixture(scope="module")
def uv_lock(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The lock file of the app's pyproject, made as a developer would (``uv lock``)."""
    project = tmp_path_factory.mktemp("shop-app")
    (project / "pyproject.toml").write_text(PYPROJECT)
    uv = Path(sys.executable).parent / "uv"
    subprocess.run(
        [str(uv), "lock", "--quiet"],
        cwd=project,
        check=True,
        timeout=120,
        env={**os.environ, "UV_NATIVE_TLS": "1"},
    )
    return (project / "uv.lock").read_text()


def archive(lock: str, **extra: str) -> bytes:
    files = {
        "Procfile": "web: python app.py\n",
        "app.py": APP,
        "migrate.py": MIGRATE,
        "pyproject.toml": PYPROJECT,
        "uv.lock": lock,
        **extra,
    }
    return tar_gz_from_files(files)


def deploy(client: ScalingoClient, app: str, content: bytes) -> tuple[str, list[str]]:
    source = client.request("POST", "/sources", expect=201)["source"]
    client.upload(source["upload_url"], content)
    created = client.request(
        "POST",
        f"/apps/{app}/deployments",
        {"deployment": {"git_ref": "main", "source_url": source["download_url"]}},
        expect=201,
    )["deployment"]
    stream = client.request("GET", f"/apps/{app}")["app"]["links"]["deployments_stream"]
    lines, statuses, _ = client.follow(stream, created["id"], timeout=300)
    return statuses[-1], lines


def page(server: ServerProcess, app: str, path: str = "/") -> str:
    try:
        response = httpx.get(
            f"http://127.0.0.1:{server.router_port}{path}",
            headers={"Host": f"{app}.localhost:{server.router_port}"},
            timeout=15,
        )
    except httpx.HTTPError as exc:
        return f"unreachable: {exc}"
    return response.text if response.status_code == 200 else f"{response.status_code}"


def variables(client: ScalingoClient, app: str) -> dict[str, str]:
    rows = client.request("GET", f"/apps/{app}/variables")["variables"]
    return {row["name"]: row["value"] for row in rows}


def only_addon(client: ScalingoClient, app: str) -> dict[str, Any]:
    addons = client.request("GET", f"/apps/{app}/addons")["addons"]
    assert len(addons) == 1, addons
    addon: dict[str, Any] = addons[0]
    return addon


def addons_info(client: ScalingoClient, app: str, addon_id: str) -> dict[str, Any]:
    """``scalingo addons-info``: the addon, its token, then the database API with it."""
    client.request("GET", f"/apps/{app}/addons/{addon_id}")
    token = client.request("POST", f"/apps/{app}/addons/{addon_id}/token")["addon"]["token"]
    response = httpx.get(
        f"{client.url}/api/databases/{addon_id}?",
        headers={**client.HEADERS, "Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    database: dict[str, Any] = response.json()["database"]
    return database


def test_a_django_shaped_app_gets_its_own_postgresql(tmp_path: Path, uv_lock: str) -> None:
    server = server_process(tmp_path)
    server.start()
    try:
        client = ScalingoClient(server.url, server.create_user("alice"))
        client.exchange()
        for name in ("shop-app", "other-app"):
            client.request("POST", "/apps", {"app": {"name": name}}, expect=201)

        # The catalogue, as addons-list and addons-plans read it.
        providers = client.request("GET", "/addon_providers")["addon_providers"]
        assert {p["id"] for p in providers} == {"postgresql", "redis"}
        plans = client.request("GET", "/addon_providers/postgresql/plans?show_all=false")["plans"]
        assert "postgresql-starter-512" in [plan["name"] for plan in plans]

        # First deployment: the declared addon is provisioned before the release starts,
        # and the postdeploy hook migrates before the release gets traffic.
        status, lines = deploy(client, "shop-app", archive(uv_lock, **{"scalingo.json": MANIFEST}))
        log = "\n".join(lines)
        assert status == "success", log
        assert "Provisioning the addons scalingo.json declares" in log
        assert log.index("Provisioning the addons") < log.index("Starting the release")
        assert "migrated: the visits table exists" in log
        assert log.index("migrated:") < log.index("is up and serving")
        assert page(server, "shop-app") == "visits: 1"
        assert page(server, "shop-app") == "visits: 2"

        addon = only_addon(client, "shop-app")
        assert addon["id"].startswith("ad-")
        assert addon["addon_provider"]["id"] == "postgresql"
        assert addon["plan"]["name"] == "postgresql-starter-512"
        assert addon["status"] == "running"
        env = variables(client, "shop-app")
        url = env["DATABASE_URL"]
        assert env["SCALINGO_POSTGRESQL_URL"] == url
        assert url.startswith("postgres://") and "@127.0.0.1:5432/" in url
        # Its own server, as its own unprivileged uid, on data only that uid can read.
        data = server.data_dir / "addons" / addon["id"]
        owner = data.stat().st_uid
        assert owner >= 1_000_000 and data.stat().st_mode & 0o077 == 0
        assert any("postgres" in line for line in processes_of(owner))
        # Supervised: killed, it is started again on its data.
        for line in processes_of(owner):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
        wait_for(lambda: page(server, "shop-app") == "visits: 3", timeout=30, what="a restart")
        # addons-upgrade: the server restarts with the new plan's limits, on its data.
        changed = client.request(
            "PATCH",
            f"/apps/shop-app/addons/{addon['id']}",
            {"addon": {"plan_id": "postgresql-starter-1024"}},
        )
        assert changed["addon"]["plan"]["name"] == "postgresql-starter-1024"
        wait_for(lambda: page(server, "shop-app") == "visits: 4", timeout=30, what="the new plan")
        database = addons_info(client, "shop-app", addon["id"])
        assert database["type_name"] == "postgresql"
        assert database["readable_version"].startswith(recipes.version("postgresql")[:2])

        # Another app, with the URL and its password, reaches nothing: its 127.0.0.1 is
        # its own, and the firewall refuses the first app's address.
        assert deploy(client, "other-app", archive(uv_lock))[0] == "success"
        assert page(server, "shop-app", f"/probe?url={url}") == "connected"
        refused = page(server, "other-app", f"/probe?url={url}")
        assert refused.startswith("failed: OperationalError"), refused

        # A failing postdeploy hook (the Procfile's entry, Scalingo's usual way): hook-error,
        # its output in the log, and the previous release goes on serving.
        # It prints 3 MB first (its log file rotates three times, at 1 MiB): every line is
        # in the deployment's log, once and in order (4 MiB are stored).
        flood = "seq 1 30000 | awk '{printf \"n%s %090d\\n\", $1, 0}'"
        procfile = f"web: python app.py\npostdeploy: {flood}; python -c 'print(42); exit(3)'\n"
        status, lines = deploy(client, "other-app", archive(uv_lock, Procfile=procfile))
        assert status == "hook-error", "\n".join(lines[-50:])
        numbered = [line.split()[0] for line in lines if line.strip().startswith("n")]
        assert numbered == [f"n{n}" for n in range(1, 30001)], numbered[:3] + numbered[-3:]
        assert any(line.strip() == "42" for line in lines), lines[-50:]
        assert any("exit status 3" in line for line in lines), lines[-50:]
        assert page(server, "other-app", f"/probe?url={url}").startswith("failed: ")

        # Redis, added through the API: variables set, the app restarted to see them.
        added = client.request(
            "POST",
            "/apps/other-app/addons",
            {
                "addon": {
                    "addon_provider_id": "redis",
                    "plan_id": "redis-starter-256",
                    "options": None,
                }
            },
            expect=201,
        )
        assert added["variables"] == ["SCALINGO_REDIS_URL", "REDIS_URL"]
        wait_for(
            lambda: page(server, "other-app", "/redis") == "+OK +PONG", timeout=30, what="redis"
        )
        redis = added["addon"]
        assert addons_info(client, "other-app", redis["id"])["type_name"] == "redis"
        client.request("POST", f"/apps/other-app/addons/{redis['id']}/backups", expect=201)

        # kill -9 of the server, then a start: the database comes back with its rows.
        server.stop(kill=True)
        server.start()
        wait_for(lambda: page(server, "shop-app") == "visits: 5", timeout=60, what="the data back")

        # A backup, the addon removed (variables first), a fresh one, the backup restored.
        backup = client.request("POST", f"/apps/shop-app/addons/{addon['id']}/backups", expect=201)
        backup_id = backup["backup"]["id"]
        assert backup["backup"]["size"] > 0
        client.request("DELETE", f"/apps/shop-app/addons/{addon['id']}", expect=204)
        assert "DATABASE_URL" not in variables(client, "shop-app")
        assert client.request("GET", "/apps/shop-app/addons")["addons"] == []
        assert not (server.data_dir / "addons" / addon["id"]).exists()
        fresh = client.request(
            "POST",
            "/apps/shop-app/addons",
            {"addon": {"addon_provider_id": "postgresql", "plan_id": "postgresql-starter-512"}},
            expect=201,
        )["addon"]
        assert fresh["id"] != addon["id"]
        assert variables(client, "shop-app")["DATABASE_URL"] != url
        client.request(
            "POST", f"/apps/shop-app/addons/{fresh['id']}/restore", {"backup_id": backup_id}
        )
        wait_for(lambda: page(server, "shop-app") == "visits: 6", timeout=30, what="restored rows")

        events = client.request("GET", "/apps/shop-app/events")["events"]
        kinds = [event["type"] for event in events]
        assert {"new_addon", "delete_addon"} <= set(kinds)

        # Destroying the app removes its addons' servers and data.
        client.request("DELETE", "/apps/shop-app", expect=204)
        assert not (server.data_dir / "addons" / fresh["id"]).exists()
    finally:
        server.stop()
        server.remove_data()
