"""Helpers shared by tests: archives of sample apps, a client that plays the official
Scalingo CLI's requests exactly, and waiting on conditions with deadlines."""

from __future__ import annotations

import base64
import io
import json
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from websockets.sync.client import connect
from websockets.typing import Origin

from tests.openapi_check import check_response

CLIENT_ORIGIN = Origin("http://scalingo-cli.local/1")  # what the official client sends
T = TypeVar("T")
FINAL = {"success", "build-error", "crashed-error", "timeout-error", "hook-error", "aborted"}


def tar_gz_of(directory: Path, root: str = "app-main") -> bytes:
    """A code-host style archive: one top-level folder holding ``directory``'s content."""
    return tar_gz_from_files({}, root=root, directory=directory)


def tar_gz_from_files(
    files: dict[str, str], root: str = "app", directory: Path | None = None
) -> bytes:
    """An archive with one top-level folder ``root`` holding ``files`` (executable, so
    scripts and buildpack steps run), after ``directory``'s content if given."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        if directory is not None:
            archive.add(directory, arcname=root)
        for name, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size = len(data)
            info.mode = 0o755
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def wait_for(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class ScalingoClient:
    """The official client's deploy flow, request for request (docs/api.md, its **client** points)."""

    HEADERS = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "Accept-Encoding": "gzip",
        "User-Agent": "Scalingo CLI v1.48.0",
    }

    def __init__(self, url: str, api_token: str) -> None:
        self.url = url
        self.api_token = api_token
        self.jwt = ""

    def exchange(self) -> str:
        basic = base64.b64encode(f":{self.api_token}".encode()).decode()
        response = httpx.post(
            f"{self.url}/v1/tokens/exchange",
            content=b"{}",
            headers={**self.HEADERS, "Authorization": f"Basic {basic}"},
        )
        assert response.status_code == 200, response.text
        check_response(self.url, "POST", f"{self.url}/v1/tokens/exchange", response)
        self.jwt = response.json()["token"]
        return self.jwt

    def request(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        url = f"{self.url}/v1{path}"
        if method in ("GET", "DELETE") and "?" not in path:
            url += "?"
        content = (
            json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
        )
        response = httpx.request(
            method,
            url,
            content=content,
            headers={**self.HEADERS, "Authorization": f"Bearer {self.jwt}"},
            timeout=30,
        )
        assert response.status_code == expect, (method, path, response.status_code, response.text)
        check_response(self.url, method, url, response)
        if expect == 204 or not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def upload(self, upload_url: str, archive: bytes) -> None:
        response = httpx.put(
            upload_url,
            content=archive,
            headers={
                "Content-Type": "application/x-gzip",
                "User-Agent": "Go-http-client/1.1",
                "Accept-Encoding": "gzip",
            },
        )
        assert response.status_code == 200, response.text

    def follow(
        self, stream_url: str, deployment_id: str, *, timeout: float = 120
    ) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        """Authenticate on the stream and collect this deployment's log lines and statuses
        until a final status, as the client does."""
        lines: list[str] = []
        statuses: list[str] = []
        frames: list[dict[str, Any]] = []
        with connect(stream_url, origin=CLIENT_ORIGIN, open_timeout=10) as socket:
            socket.send(json.dumps({"type": "auth", "data": {"token": self.jwt}}) + "\n")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                frame = json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic())))
                frames.append(frame)
                if frame.get("id") != deployment_id:
                    continue
                if frame["type"] == "log":
                    lines.append(frame["data"]["content"])
                elif frame["type"] == "status":
                    statuses.append(frame["data"]["status"])
                    if frame["data"]["status"] in FINAL:
                        return lines, statuses, frames
        raise AssertionError(f"no final status within {timeout} s; statuses so far: {statuses}")


def processes_of(uid: int) -> list[str]:
    """Live processes of ``uid`` (zombies are dead, only waiting for the host's init),
    outside containers: every test server numbers its apps' uids from the same first one,
    so a container another test's docker-runtime server left running may hold the same
    uid, and it is not this sandbox's."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid != uid or _in_a_container(entry):
                    continue
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(f"{entry.name} {state} {(entry / 'comm').read_text().strip()}")
            except OSError:
                continue
    return found


def _in_a_container(process: Path) -> bool:
    """Whether the process is in a container engine's cgroup (Docker's or Podman's)."""
    cgroups = (process / "cgroup").read_text()
    return "/docker" in cgroups or "libpod" in cgroups
