"""LocalRuntime with the real bubblewrap sandbox: what only a sandbox does (isolation,
.profile.d, a read-only release), and the supervisor over it.

Starting, polling, stopping and re-attaching, which every runtime does alike, are in
tests/contract/test_runtime_contract.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dockyard import sandbox
from dockyard.errors import BootError
from dockyard.routetable import RouteTable
from dockyard.runtime.base import ProcessHandle, ProcessSpec
from dockyard.runtime.boot import tail_log
from dockyard.runtime.local import LocalRuntime, signal_inside
from dockyard.runtime.supervisor import Supervisor

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap"),
    pytest.mark.skipif(os.geteuid() != 0, reason="switches to an app uid: needs root"),
]

APP_UID = 64123
LIMITS = sandbox.Limits(max_processes=64, memory_bytes=512 * 1024**2)

WEB_APP = """
import http.server, os
print("booting on", os.environ["PORT"], flush=True)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        greeting = os.environ.get("GREETING", "")
        body = ("hello from " + os.environ["CONTAINER"] + " " + greeting).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


@pytest.fixture
def base() -> Iterator[Path]:
    # pytest's tmp_path sits under a 0700 directory the app's uid cannot traverse; the
    # releases live where a real data dir would put them: parents searchable (0711).
    path = Path(tempfile.mkdtemp(prefix="dockyard-runtime-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def runtime() -> LocalRuntime:
    return LocalRuntime()


@pytest.fixture
def started(runtime: LocalRuntime) -> Iterator[list[ProcessHandle]]:
    handles: list[ProcessHandle] = []
    yield handles
    for handle in handles:
        runtime.stop(handle, grace=0)


def write_release(base: Path, name: str, files: dict[str, str]) -> Path:
    release = base / "releases" / name
    for relative, content in files.items():
        path = release / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content))
    for directory in [base / "releases", *release.rglob("*"), release]:
        directory.chmod(0o755 if directory.is_dir() else 0o644)
    return release


def make_spec(
    base: Path,
    release: Path,
    command: str,
    *,
    process_type: str = "web",
    env: dict[str, str] | None = None,
) -> ProcessSpec:
    return ProcessSpec(
        app="sample-app",
        release_id="r1",
        process_type=process_type,
        index=1,
        command=command,
        env=env or {},
        release_dir=release,
        host_uid=APP_UID,
        limits=LIMITS,
        log_path=base / "logs" / f"{process_type}-1.log",
    )


def wait_until(condition: Callable[[], object], *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_profile_d_is_sourced_and_only_tmp_is_writable(
    base: Path, runtime: LocalRuntime, started: list[ProcessHandle]
) -> None:
    app = """
    import os
    print("FROM_PROFILE=" + os.environ.get("FROM_PROFILE", "unset"))
    print("HOME=" + os.environ["HOME"] + " cwd=" + os.getcwd())
    open(os.path.join(os.environ["HOME"], "scratch"), "w").write("ok")
    print("home writable")
    try:
        open("/app/new-file", "w")
        print("app writable")
    except OSError as exc:
        print("app read-only:", exc.strerror)
    """
    release = write_release(
        base,
        "profiled",
        {"job.py": app, ".profile.d/10-vars.sh": "export FROM_PROFILE=sourced\n"},
    )
    spec = make_spec(base, release, "/usr/bin/python3 job.py", process_type="job")
    handle = runtime.start(spec)
    started.append(handle)
    wait_until(lambda: runtime.poll(handle) is not None)
    runtime.stop(handle, grace=0)

    assert tail_log(spec.log_path) == [
        "FROM_PROFILE=sourced",
        "HOME=/tmp cwd=/app",
        "home writable",
        "app read-only: Read-only file system",
    ]
    assert runtime.poll(handle) == 0


def test_app_cannot_see_other_apps_the_data_dir_root_or_the_launcher_environment(
    base: Path, runtime: LocalRuntime, started: list[ProcessHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKYARD_TEST_LAUNCHER_SECRET", "launcher-secret-value")
    # Readable by anyone on the host: only the sandbox keeps the app away from them.
    other = write_release(base, "other-app", {"secret.txt": "other app's code"})
    data_dir = base / "data"
    data_dir.mkdir(mode=0o755)
    (data_dir / "dockyard.db").write_text("platform database")
    (data_dir / "dockyard.db").chmod(0o644)
    probe = """
    import json, os, sys
    def attempt(path):
        try:
            if os.path.isdir(path):
                return "listed: " + ",".join(sorted(os.listdir(path)))
            with open(path, "rb") as f:
                return "read: " + f.read().decode(errors="replace")
        except OSError as exc:
            return "refused: " + (exc.strerror or "")
    environ = {}
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        environ[pid] = attempt("/proc/%s/environ" % pid)
    print(json.dumps({
        "other": attempt(sys.argv[1]),
        "other_file": attempt(sys.argv[1] + "/secret.txt"),
        "data": attempt(sys.argv[2] + "/dockyard.db"),
        "root": attempt("/root"),
        "proc_environ": environ,
        "own_env": sorted(os.environ),
        "uid": os.getuid(),
    }))
    """
    release = write_release(base, "prober", {"probe.py": probe})
    spec = make_spec(
        base,
        release,
        f"/usr/bin/python3 probe.py {other} {data_dir}",
        process_type="probe",
        env={"APP_VARIABLE": "visible"},
    )
    handle = runtime.start(spec)
    started.append(handle)
    wait_until(lambda: runtime.poll(handle) is not None)
    runtime.stop(handle, grace=0)

    output = tail_log(spec.log_path)
    assert len(output) == 1, output
    seen = json.loads(output[0])
    assert seen["other"].startswith("refused: No such file")
    assert seen["other_file"].startswith("refused: No such file")
    assert seen["data"].startswith("refused: No such file")
    assert seen["root"].startswith("refused: No such file")
    for pid, environ in seen["proc_environ"].items():
        assert "launcher-secret-value" not in environ, pid
        assert "DOCKYARD_TEST_LAUNCHER_SECRET" not in environ, pid
    assert "1" in seen["proc_environ"]
    assert "DOCKYARD_TEST_LAUNCHER_SECRET" not in seen["own_env"]
    assert {"APP_VARIABLE", "CONTAINER", "HOME", "PATH"} <= set(seen["own_env"])
    assert seen["uid"] != 0


def test_a_release_the_app_user_cannot_reach_is_refused_in_words(
    base: Path, runtime: LocalRuntime
) -> None:
    release = write_release(base, "web", {"app.py": WEB_APP})
    (base / "releases").chmod(0o700)

    with pytest.raises(BootError) as raised:
        runtime.start(make_spec(base, release, "/usr/bin/python3 app.py"))

    assert f"cannot be reached by the app's user (uid {APP_UID})" in raised.value.message


# -- the supervisor over the real runtime ----------------------------------------------


class MemoryStore:
    def __init__(self) -> None:
        self.saved: dict[str, dict[str, object]] = {}

    def save(self, app: str, state: dict[str, object]) -> None:
        self.saved[app] = state

    def load_all(self) -> dict[str, dict[str, object]]:
        return dict(self.saved)


@pytest.fixture
def supervised(base: Path, runtime: LocalRuntime) -> Iterator[tuple[Supervisor, RouteTable]]:
    routes = RouteTable()
    supervisor = Supervisor(
        runtime,
        routes,
        MemoryStore(),
        boot_timeout=10,
        stop_grace=2,
        logs_dir=base / "logs",
        host_uid_for=lambda app: APP_UID,
        limits=LIMITS,
    )
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    thread.start()
    yield supervisor, routes
    stop.set()
    thread.join(5)
    supervisor.shutdown()


def get_routed(routes: RouteTable) -> str:
    backend = routes.lookup("sample-app")
    assert backend is not None
    url = f"http://{backend.host}:{backend.port}/"
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def test_deploy_switches_without_downtime_and_a_killed_process_is_restarted(
    base: Path, supervised: tuple[Supervisor, RouteTable]
) -> None:
    supervisor, routes = supervised
    first = write_release(base, "r1", {"app.py": WEB_APP})
    second = write_release(base, "r2", {"app.py": WEB_APP})
    log: list[str] = []
    types = {"web": "/usr/bin/python3 app.py"}

    supervisor.deploy("sample-app", "r1", first, types, {"GREETING": "one"}, log=log.append)
    assert get_routed(routes) == "hello from sample-app-web-1 one"
    supervisor.deploy("sample-app", "r2", second, types, {"GREETING": "two"}, log=log.append)
    assert get_routed(routes) == "hello from sample-app-web-1 two"

    web = supervisor._apps["sample-app"].processes["web-1"].handle
    assert web is not None
    killed_port = web.port
    assert signal_inside(web.state["pid"], signal.SIGKILL)

    wait_until(lambda: supervisor.status("sample-app") == "restarting", timeout=5)
    wait_until(lambda: supervisor.status("sample-app") == "running", timeout=10)
    assert get_routed(routes) == "hello from sample-app-web-1 two"
    backend = routes.lookup("sample-app")
    assert backend is not None and backend.port != killed_port
    logs = "\n".join(supervisor.app_logs("sample-app", lines=50))
    assert "[dockyard] web-1 exited with status 137; restarting in 1 s" in logs
    assert f"[web-1] booting on {backend.port}" in logs


def test_a_release_that_crashes_at_boot_leaves_the_previous_one_serving(
    base: Path, supervised: tuple[Supervisor, RouteTable]
) -> None:
    supervisor, routes = supervised
    good = write_release(base, "r1", {"app.py": WEB_APP})
    bad = write_release(base, "r2", {"app.py": "raise SystemExit('DATABASE_URL is not set')\n"})
    types = {"web": "/usr/bin/python3 app.py"}
    supervisor.deploy("sample-app", "r1", good, types, {}, log=lambda line: None)
    log: list[str] = []

    with pytest.raises(BootError) as raised:
        supervisor.deploy("sample-app", "r2", bad, types, {}, log=log.append)

    assert "exited with status 1 while booting" in raised.value.message
    assert "[web-1] DATABASE_URL is not set" in log
    assert get_routed(routes) == "hello from sample-app-web-1 "
    assert supervisor.status("sample-app") == "running"
