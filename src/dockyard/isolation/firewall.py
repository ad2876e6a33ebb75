"""The host's firewall for app namespaces: one nftables table, plus Docker's hole.

Every app's host-side interface is named ``dyapp<uid>`` (``addresses``), so one table
matches them all with ``dyapp*`` and nothing is added or removed per app. What it does,
for traffic coming *from* an app:

- to the host itself (any of its addresses, the app's gateway included): refused, except
  replies to connections the host opened (the router's), the router's port ("through the
  router") and DNS to the host's resolvers. The host's loopback is not even routable from a
  namespace: the app's 127.0.0.1 is its own;
- to another app, or to a Docker bridge (``docker0``, ``br-*``: containers of the host):
  refused;
- to link-local addresses (169.254.0.0/16: cloud metadata) and the ranges the operator
  lists (``DOCKYARD_BLOCKED_NETWORKS``): refused, except DNS to the host's resolvers;
- anything else (the outside world, over IPv4): forwarded with NAT (masquerade).

Traffic *to* an app from anywhere but the host is refused, so the router on the host is the
only way in. Refused means an ICMP "administratively prohibited" at once, so a blocked
connection fails fast instead of hanging.

Docker sets the ``FORWARD`` policy of iptables' filter table to DROP; a packet must be
accepted by every base chain of its hook, so the apps' forwarded traffic also needs an
ACCEPT there. Docker's ``DOCKER-USER`` chain is the documented place: the rules go there,
after creating it if Docker has not yet (it keeps the chain's rules when it starts).

``ruleset`` and ``docker_user_rules`` are pure; ``apply`` changes the host.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dockyard.errors import DockyardError
from dockyard.isolation.addresses import HOST_IF_PREFIX

TABLE = "dockyard"
LINK_LOCAL = ipaddress.IPv4Network("169.254.0.0/16")
DOCKER_BRIDGES = ("docker*", "br-*")
DOCKER_USER = "DOCKER-USER"
DOCKER_USER_COMMENT = "dockyard: app namespaces"
RESOLV_CONF = Path("/etc/resolv.conf")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
COMMAND_TIMEOUT = 30.0


class FirewallError(DockyardError):
    """The host's firewall rules for apps could not be installed."""


@dataclass(frozen=True)
class FirewallConfig:
    pool: ipaddress.IPv4Network
    blocked: tuple[ipaddress.IPv4Network, ...] = ()
    # The host's DNS resolvers (not on loopback: those cannot be reached from a namespace).
    resolvers: tuple[ipaddress.IPv4Address, ...] = ()
    router_ports: tuple[int, ...] = field(default_factory=tuple)


def host_resolvers(text: str) -> tuple[list[ipaddress.IPv4Address], list[str]]:
    """The IPv4 ``nameserver`` entries of a resolv.conf: those apps can reach, and those on
    loopback they cannot (systemd-resolved's 127.0.0.53, a local dnsmasq)."""
    reachable: list[ipaddress.IPv4Address] = []
    loopback: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0] != "nameserver":
            continue
        try:
            address = ipaddress.ip_address(parts[1])
        except ValueError:
            continue  # an IPv6 scope suffix or garbage: not one apps could use anyway
        if address.is_loopback:
            loopback.append(parts[1])
        elif isinstance(address, ipaddress.IPv4Address) and address not in reachable:
            reachable.append(address)
    return reachable, loopback


def ruleset(config: FirewallConfig) -> str:
    """The nft script that replaces dockyard's table atomically (one transaction)."""
    apps = f'"{HOST_IF_PREFIX}*"'
    reject = "reject with icmpx type admin-prohibited"
    blocked = _elements(ipaddress.collapse_addresses([LINK_LOCAL, *config.blocked]))
    resolvers = _elements(str(address) for address in config.resolvers)
    bridges = ", ".join(f'"{name}"' for name in DOCKER_BRIDGES)
    dns: list[str] = []
    if resolvers:
        dns = [f"iifname {apps} ip daddr @resolvers meta l4proto {{ tcp, udp }} th dport 53 accept"]
    router: list[str] = []
    if config.router_ports:
        ports = ", ".join(str(port) for port in sorted(set(config.router_ports)))
        router = [f"iifname {apps} tcp dport {{ {ports} }} accept"]
    lines = [
        # Creating first makes the delete valid when the table does not exist yet.
        f"table inet {TABLE} {{}}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "  set blocked {",
        "    type ipv4_addr; flags interval;",
        f"    elements = {{ {blocked} }}",
        "  }",
        "  set resolvers {",
        "    type ipv4_addr;",
        *([f"    elements = {{ {resolvers} }}"] if resolvers else []),
        "  }",
        "  chain input {",
        "    type filter hook input priority filter - 10; policy accept;",
        f"    iifname {apps} ct state established,related accept",
        *(f"    {rule}" for rule in dns + router),
        f"    iifname {apps} {reject}",
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter - 10; policy accept;",
        f"    oifname {apps} ct state established,related accept",
        f"    oifname {apps} {reject}",
        *(f"    {rule}" for rule in dns),
        f"    iifname {apps} meta nfproto ipv6 drop",
        f"    iifname {apps} oifname {{ {bridges} }} {reject}",
        f"    iifname {apps} ip daddr @blocked {reject}",
        # The uplink's MTU may be below the namespace's (a tunnel): clamp TCP's segments.
        f"    iifname {apps} tcp flags syn tcp option maxseg size set rt mtu",
        f"    iifname {apps} accept",
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f"    ip saddr {config.pool} oifname != {apps} masquerade",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _elements(items: Iterable[object]) -> str:
    return ", ".join(str(item) for item in items)


def docker_user_rules() -> list[list[str]]:
    """The rules (iptables arguments after the chain) that let apps' forwarded traffic
    past Docker's DROP policy. What they accept, dockyard's table has already filtered."""
    comment = ["-m", "comment", "--comment", DOCKER_USER_COMMENT]
    return [
        ["-i", f"{HOST_IF_PREFIX}+", *comment, "-j", "ACCEPT"],
        [
            "-o", f"{HOST_IF_PREFIX}+", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
            *comment, "-j", "ACCEPT",
        ],
    ]  # fmt: skip


def apply(config: FirewallConfig) -> None:
    """Install (or replace) the rules, and turn IPv4 forwarding on."""
    nft = shutil.which("nft")
    if nft is None:
        raise FirewallError(
            "Isolating apps' networks needs nftables, which is not installed: run "
            "apt-get install -y nftables (scripts/setup.sh does), or set "
            "DOCKYARD_NETWORK_ISOLATION=false to run apps without network isolation."
        )
    _run([nft, "-f", "-"], stdin=ruleset(config))
    _enable_forwarding()
    iptables = shutil.which("iptables")
    if iptables is not None:
        _ensure_docker_user(iptables)


def _enable_forwarding() -> None:
    """Forwarding is what lets a namespace reach the outside world at all."""
    if IP_FORWARD.read_text().strip() == "1":
        return
    try:
        IP_FORWARD.write_text("1\n")
    except OSError as exc:
        raise FirewallError(
            f"Apps cannot reach the outside world: IPv4 forwarding is off and could not be "
            f"turned on ({exc.strerror}). Set net.ipv4.ip_forward=1 on the host."
        ) from None


def remove() -> None:
    """Delete dockyard's table and its DOCKER-USER rules (tests; an uninstall)."""
    nft = shutil.which("nft")
    if nft is not None:
        _run([nft, "-f", "-"], stdin=f"table inet {TABLE} {{}}\ndelete table inet {TABLE}\n")
    iptables = shutil.which("iptables")
    if iptables is not None and _has_chain(iptables, DOCKER_USER):
        for rule in docker_user_rules():
            while _succeeds([iptables, "-w", "-C", DOCKER_USER, *rule]):
                _run([iptables, "-w", "-D", DOCKER_USER, *rule])


def _ensure_docker_user(iptables: str) -> None:
    """Put our rules first in DOCKER-USER, creating the chain if Docker has not (yet)."""
    if not _has_chain(iptables, DOCKER_USER):
        _run([iptables, "-w", "-N", DOCKER_USER])
    rules = docker_user_rules()
    if all(_succeeds([iptables, "-w", "-C", DOCKER_USER, *rule]) for rule in rules):
        return
    for rule in rules:  # some missing: put them all back, in order, at the top
        while _succeeds([iptables, "-w", "-C", DOCKER_USER, *rule]):
            _run([iptables, "-w", "-D", DOCKER_USER, *rule])
    for position, rule in enumerate(rules, start=1):
        _run([iptables, "-w", "-I", DOCKER_USER, str(position), *rule])


def _has_chain(iptables: str, chain: str) -> bool:
    return _succeeds([iptables, "-w", "-S", chain])


def _succeeds(argv: Sequence[str]) -> bool:
    return (
        subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=COMMAND_TIMEOUT,
            check=False,
        ).returncode
        == 0
    )


def _run(argv: Sequence[str], *, stdin: str | None = None) -> None:
    try:
        done = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FirewallError(f"The firewall rules for apps could not be installed: {exc}") from None
    if done.returncode != 0:
        raise FirewallError(
            f"The firewall rules for apps could not be installed: {' '.join(argv)} "
            f"failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
        )
