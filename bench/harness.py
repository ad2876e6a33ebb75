"""What every benchmark shares: a real ``dockyard serve`` process, a client for its API,
a recorder of its WebSocket stream, statistics and the result rows.

Each benchmark starts its own server with the embedded defaults (SQLite, local runtime,
bubblewrap sandbox) on a fresh data directory, and talks to it only over HTTP and
WebSocket, as a user would.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect
from websockets.typing import Origin

FINAL = {"success", "build-error", "crashed-error", "timeout-error", "aborted"}
# What the official client sends; the stream accepts any origin, this keeps it realistic.
CLIENT_ORIGIN = Origin("http://scalingo-cli.local/1")
REPO = Path(__file__).resolve().parent.parent

# Sandboxes run as unprivileged uids that must traverse to the data dir, so servers keep
# their data under a 0711 directory rather than a private temporary one.
DATA_ROOT = Path(tempfile.gettempdir()) / "dockyard-bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def traversable_dir(prefix: str) -> Path:
    """A new empty directory that sandbox uids can traverse (but not list)."""
    DATA_ROOT.mkdir(mode=0o711, exist_ok=True)
    DATA_ROOT.chmod(0o711)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=DATA_ROOT))
    path.chmod(0o711)
    return path


# -- the server ----------------------------------------------------------------------------


@dataclass
class Server:
    """``python -m dockyard.cli serve`` as its own process, on its own data dir."""

    data_dir: Path
    port: int
    router_port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, name: str, **extra_env: str) -> Server:
        data_dir = traversable_dir(f"{name}-")
        port, router_port = free_port(), free_port()
        env = {
            **os.environ,
            "DOCKYARD_DATA_DIR": str(data_dir / "data"),
            "DOCKYARD_PORT": str(port),
            "DOCKYARD_ROUTER_PORT": str(router_port),
            "DOCKYARD_ATTACH_PORT": str(free_port()),
            **extra_env,
        }
        return cls(data_dir=data_dir, port=port, router_port=router_port, env=env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60) -> None:
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dockyard.cli", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dockyard serve exited:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/v1/regions", timeout=1).status_code == 401:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"dockyard serve did not answer within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def create_user(self, username: str = "bench") -> str:
        """A user made with the admin command; returns its API token."""
        out = subprocess.run(
            [sys.executable, "-m", "dockyard.cli", "admin", "create-user",
             "--username", username, "--email", f"{username}@example.com"],
            env=self.env, capture_output=True, check=True, text=True, cwd=REPO,
        ).stdout  # fmt: skip
        return out.strip().splitlines()[-1]

    def remove_data(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of process ``pid``, in KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


@contextmanager
def running_server(name: str, **extra_env: str) -> Iterator[Server]:
    server = Server.create(name, **extra_env)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        server.remove_data()


# -- the API, as a user drives it ----------------------------------------------------------


class Api:
    def __init__(self, server: Server, token: str) -> None:
        self.server = server
        self.token = token
        self.http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        # Upload URLs are capabilities: no token. One client for all of them, as a real
        # client keeps: a new httpx client per upload spends ~50 ms building its TLS
        # context, which the upload phase would then measure instead of dockyard.
        self.uploads = httpx.Client(timeout=120)

    def close(self) -> None:
        self.http.close()
        self.uploads.close()

    def create_app(self, name: str) -> dict[str, Any]:
        response = self.http.post("/v1/apps", json={"app": {"name": name}})
        response.raise_for_status()
        app: dict[str, Any] = response.json()["app"]
        return app

    def upload(self, archive: bytes) -> str:
        """A new source with ``archive`` uploaded to it; returns its download URL."""
        source = self.http.post("/v1/sources", json={}).json()["source"]
        response = self.uploads.put(
            source["upload_url"],
            content=archive,
            headers={"Content-Type": "application/x-gzip"},
            timeout=120,
        )
        response.raise_for_status()
        url: str = source["download_url"]
        return url

    def submit(self, app: str, source_url: str) -> str:
        body = {"deployment": {"source_url": source_url, "git_ref": None}}
        response = self.http.post(f"/v1/apps/{app}/deployments", json=body)
        response.raise_for_status()
        deployment_id: str = response.json()["deployment"]["id"]
        return deployment_id

    def deployment(self, app: str, deployment_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/apps/{app}/deployments/{deployment_id}")
        response.raise_for_status()
        deployment: dict[str, Any] = response.json()["deployment"]
        return deployment

    def wait(self, app: str, deployment_id: str, *, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status: str = self.deployment(app, deployment_id)["status"]
            if status in FINAL:
                return status
            time.sleep(0.05)
        raise TimeoutError(f"deployment {deployment_id} did not end within {timeout} s")

    def output(self, app: str, deployment_id: str) -> str:
        response = self.http.get(f"/v1/apps/{app}/deployments/{deployment_id}/output")
        response.raise_for_status()
        return response.text

    def wait_serving(self, app: str, *, expect: bytes = b"", timeout: float = 30) -> float:
        """Poll the router until the app answers 200 (with ``expect`` in the body);
        returns the time.monotonic() of that first answer."""
        port = self.server.router_port
        return wait_for_200(port, host=f"{app}.localhost:{port}", expect=expect, timeout=timeout)


def wait_for_200(port: int, *, host: str = "", expect: bytes = b"", timeout: float = 30) -> float:
    """Poll ``GET /`` on a loopback port until 200 (with ``expect`` in the body); returns
    the time.monotonic() of that answer. A bare ``http.client`` connection per try costs
    well under a millisecond, so the poll itself does not blur what it measures."""
    deadline = time.monotonic() + timeout
    headers = {"Host": host} if host else {}
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/", headers=headers)
            response = connection.getresponse()
            body = response.read()
            if response.status == 200 and expect in body:
                return time.monotonic()
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        time.sleep(0.005)
    raise TimeoutError(f"port {port} ({host or 'direct'}) did not answer 200 within {timeout} s")


PHASES = ("upload", "queued", "building", "pushing", "starting", "routed")


def timed_deploy(
    api: Api, recorder: StreamRecorder, app: str, payload: bytes, *, expect: bytes = b""
) -> dict[str, Any]:
    """Upload, deploy and wait for the first 200 (with ``expect``) through the router.

    Seconds per phase, from the stream's status events as they arrive: upload (new
    source and PUT), queued (POST to ``building``), building, pushing, starting (to
    ``success``), routed (``success`` to the first 200); plus ``total`` and the build log
    with each line's arrival time.
    """
    started = time.monotonic()
    source_url = api.upload(payload)
    uploaded = time.monotonic()
    deployment_id = api.submit(app, source_url)
    _, final = recorder.wait_final(deployment_id, timeout=900)
    must_succeed(api, app, deployment_id, final)
    served = api.wait_serving(app, expect=expect)
    at = {status: stamp for stamp, status in recorder.statuses(deployment_id)}
    return {
        "upload": uploaded - started,
        "queued": at["building"] - uploaded,
        "building": at["pushing"] - at["building"],
        "pushing": at["starting"] - at["pushing"],
        "starting": at["success"] - at["starting"],
        "routed": served - at["success"],
        "total": served - started,
        "log": [(round(stamp - started, 4), line) for stamp, line in recorder.logs(deployment_id)],
        "deployment_id": deployment_id,
    }


def must_succeed(api: Api, app: str, deployment_id: str, status: str) -> None:
    if status != "success":
        output = api.output(app, deployment_id)
        raise RuntimeError(f"deployment of {app} ended {status}:\n{output[-3000:]}")


class StreamRecorder:
    """Follows one app's deployment stream from a thread, stamping every frame on arrival.

    Connected before anything is submitted, so status events are timed as they happen
    rather than replayed later.
    """

    def __init__(self, stream_url: str, token: str) -> None:
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._socket = connect(stream_url, origin=CLIENT_ORIGIN, open_timeout=10)
        self._socket.send(json.dumps({"type": "auth", "data": {"token": token}}) + "\n")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        # The server has no "authenticated" frame: give it a moment to subscribe us.
        time.sleep(0.3)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                raw = self._socket.recv(timeout=None)
                stamp = time.monotonic()
                frame = json.loads(raw)
                with self._cond:
                    self.frames.append((stamp, frame))
                    self._cond.notify_all()
        except Exception:  # noqa: S110 - a closed socket ends the recording, nothing else to do
            pass

    def statuses(self, deployment_id: str) -> list[tuple[float, str]]:
        with self._cond:
            return [
                (stamp, frame["data"]["status"])
                for stamp, frame in self.frames
                if frame.get("id") == deployment_id and frame["type"] == "status"
            ]

    def status_frames(self) -> list[dict[str, Any]]:
        """Every status frame so far, in arrival order."""
        with self._cond:
            return [frame for _, frame in self.frames if frame["type"] == "status"]

    def logs(self, deployment_id: str) -> list[tuple[float, str]]:
        with self._cond:
            return [
                (stamp, frame["data"]["content"])
                for stamp, frame in self.frames
                if frame.get("id") == deployment_id and frame["type"] == "log"
            ]

    def wait_final(self, deployment_id: str, *, timeout: float = 600) -> tuple[float, str]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for stamp, status in self.statuses(deployment_id):
                    if status in FINAL:
                        return stamp, status
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no final status for {deployment_id} within {timeout} s")
                self._cond.wait(left)

    def close(self) -> None:
        self._stop.set()
        self._socket.close()
        self._thread.join(timeout=5)


# -- statistics and results ----------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: every figure is a real sample)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(fraction * len(ordered) + 0.999999) - 1))
    return ordered[rank]


def median(values: list[float]) -> float:
    return percentile(values, 0.5)


@dataclass
class Check:
    """One row of the table: dockyard's figure, the baseline's, and the target."""

    metric: str
    unit: str
    dockyard: float
    baseline: float | None
    target: str
    met: bool
    # Set when rounds were measured in pairs (dockyard's and the baseline's, back to
    # back): the median of the per-pair ratios, steadier than a ratio of medians when the
    # machine's speed drifts between rounds.
    paired_ratio: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.paired_ratio is not None:
            return self.paired_ratio
        if self.baseline is None or self.baseline == 0:
            return None
        return self.dockyard / self.baseline


@dataclass
class Result:
    benchmark: str
    checks: list[Check] = field(default_factory=list)
    samples: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def check(
        self,
        metric: str,
        unit: str,
        dockyard: float,
        baseline: float | None,
        target: str,
        met: bool,
        *,
        paired_ratio: float | None = None,
    ) -> None:
        self.checks.append(Check(metric, unit, dockyard, baseline, target, met, paired_ratio))

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "error": self.error,
            "checks": [{**vars(check), "ratio": check.ratio} for check in self.checks],
            "notes": self.notes,
            "samples": self.samples,
        }


@dataclass(frozen=True)
class Mode:
    """How long to measure: ``quick`` trades precision for a run under two minutes."""

    quick: bool

    def pick(self, quick: Any, full: Any) -> Any:
        return quick if self.quick else full


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.monotonic()
    value = fn()
    return time.monotonic() - started, value
