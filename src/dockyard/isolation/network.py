"""Creating and removing apps' network namespaces (``ip netns`` + a veth pair each).

``AppNetworks.ensure(uid)`` is idempotent and cheap once done: the first call in a
process for an app checks what the kernel has (the host end carrying its address is the
last step of a creation, so it marks a complete one) and creates or repairs the rest; a
reboot (``/run/netns`` is a tmpfs) or a namespace deleted by hand is made again on the next
call. The host's firewall rules (``firewall``) are installed by the first ``ensure`` of the
process, or earlier by ``setup_host``.

Locks: one per app in this process; creations also take a file lock, so that two dockyard
processes (server and workers) never build the same namespace at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from dockyard.errors import DockyardError
from dockyard.isolation import firewall
from dockyard.isolation.addresses import AppAddresses, allocate

LOCK_FILE = Path("/run/dockyard-netns.lock")
DEFAULT_MTU = 1500
COMMAND_TIMEOUT = 30.0


class NetworkSetupError(DockyardError):
    """An app's network namespace could not be created."""


class AppNetworks:
    def __init__(
        self,
        *,
        pool: ipaddress.IPv4Network,
        first_uid: int,
        firewall_config: firewall.FirewallConfig,
    ) -> None:
        self.pool = pool
        self.first_uid = first_uid
        self.firewall_config = firewall_config
        self._lock = threading.Lock()
        self._app_locks: dict[int, threading.Lock] = {}
        self._ready: set[int] = set()
        self._host_ready = False

    def addresses(self, uid: int) -> AppAddresses:
        return allocate(uid=uid, first_uid=self.first_uid, pool=self.pool)

    def setup_host(self) -> None:
        """Install the host's firewall rules for apps (again, if they were)."""
        with self._lock:
            firewall.apply(self.firewall_config)
            self._host_ready = True

    def _ensure_host(self) -> None:
        with self._lock:
            if not self._host_ready:
                firewall.apply(self.firewall_config)
                self._host_ready = True

    def ensure(self, uid: int) -> AppAddresses:
        """The app's namespace, created or repaired if needed."""
        addresses = self.addresses(uid)
        if uid in self._ready and _exists(addresses):
            return addresses
        with self._app_lock(uid):
            self._ensure_host()
            with _file_lock():
                if not _intact(addresses):
                    _create(addresses, mtu=_uplink_mtu())
            self._ready.add(uid)
        return addresses

    def remove(self, uid: int) -> None:
        """Delete the app's namespace and veth pair (whatever of them exists)."""
        addresses = self.addresses(uid)
        with self._app_lock(uid), _file_lock():
            self._ready.discard(uid)
            _delete(addresses)

    def _app_lock(self, uid: int) -> threading.Lock:
        with self._lock:
            return self._app_locks.setdefault(uid, threading.Lock())


def _exists(addresses: AppAddresses) -> bool:
    return addresses.netns_path.exists() and Path("/sys/class/net", addresses.host_if).exists()


def _intact(addresses: AppAddresses) -> bool:
    if not addresses.netns_path.exists():
        return False
    done = _ip(["-j", "-4", "addr", "show", "dev", addresses.host_if], check=False)
    if done.returncode != 0:
        return False
    try:
        links = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        return False
    expected = (str(addresses.host_address), addresses.network.prefixlen)
    return any(
        (info.get("local"), info.get("prefixlen")) == expected
        for link in links
        for info in link.get("addr_info", [])
    ) and all("UP" in link.get("flags", []) for link in links)


def _create(addresses: AppAddresses, *, mtu: int) -> None:
    """Build the namespace from scratch; the host end's address goes last (see ``_intact``)."""
    _delete(addresses)  # half-made leftovers of an interrupted creation
    netns, host_if, app_if = addresses.netns, addresses.host_if, addresses.app_if
    prefix = addresses.network.prefixlen
    _ip(["netns", "add", netns])
    _ip(
        [
            "link", "add", "name", host_if, "mtu", str(mtu), "type", "veth",
            "peer", "name", app_if, "mtu", str(mtu), "netns", netns,
        ]
    )  # fmt: skip
    # No IPv6 link-local addresses: the namespace has no IPv6 route out, and an fe80::
    # address would let it talk to the host's end over IPv6.
    _ip(["link", "set", host_if, "addrgenmode", "none"])
    inside = [
        "link set lo up",
        f"link set {app_if} addrgenmode none",
        f"addr add {addresses.app_address}/{prefix} dev {app_if}",
        f"link set {app_if} up",
        f"route add default via {addresses.host_address}",
    ]
    _ip(["-n", netns, "-batch", "-"], stdin="\n".join(inside) + "\n")
    _ip(["link", "set", host_if, "up"])
    _ip(["addr", "add", f"{addresses.host_address}/{prefix}", "dev", host_if])


def _delete(addresses: AppAddresses) -> None:
    # Deleting one end of a veth pair deletes the other; a namespace with processes left
    # in it lives on, unnamed, until they exit.
    if Path("/sys/class/net", addresses.host_if).exists():
        _ip(["link", "delete", addresses.host_if], check=False)
    if addresses.netns_path.exists():
        _ip(["netns", "delete", addresses.netns])


def _uplink_mtu() -> int:
    """The MTU of the interface of the default route: a namespace's packets must fit."""
    done = _ip(["-j", "-4", "route", "show", "default"], check=False)
    try:
        routes = json.loads(done.stdout or "[]")
        devices = [route["dev"] for route in routes if "dev" in route]
        mtus = [int(Path("/sys/class/net", dev, "mtu").read_text()) for dev in devices]
    except (json.JSONDecodeError, KeyError, OSError, ValueError):
        return DEFAULT_MTU
    return min(mtus, default=DEFAULT_MTU)


@contextlib.contextmanager
def _file_lock() -> Iterator[None]:
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _ip(
    args: Sequence[str], *, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    ip = shutil.which("ip") or "/usr/sbin/ip"
    try:
        done = subprocess.run(
            [ip, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkSetupError(
            f"The app's network namespace could not be set up: ip {' '.join(args)}: {exc}"
        ) from None
    if check and done.returncode != 0:
        raise NetworkSetupError(
            f"The app's network namespace could not be set up: ip {' '.join(args)} failed: "
            f"{done.stderr.strip() or done.stdout.strip()}"
        )
    return done
