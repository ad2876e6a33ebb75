"""Closing the host, and the other apps' overlay addresses, to Swarm's tasks.

A task reaches the outside through ``docker_gwbridge``, and host-mode published ports
listen on every address of the host, the bridge's gateway included: without a rule, any
app could reach any other app's published port (and the host's own services, the
registry among them) through the host. One iptables rule drops new connections from that
bridge to the host itself; replies to the host's own connections (the router's, to the
published ports) are not new, so they pass. The bridge keeps Docker's
``enable_icc=false``, so tasks do not reach each other across it either.

Each app has its own overlay network, but a task's packets to *another* overlay's
address leave by the default route, through the host, and whatever lies beyond it could
carry them: the swarm's address pools are dropped in ``DOCKER-USER`` for traffic from the
bridge.

On a swarm of several machines, every node needs the same rules (``iptables -I INPUT -i
docker_gwbridge -m conntrack --ctstate NEW -j DROP`` and ``iptables -I DOCKER-USER -i
docker_gwbridge -d <pool> -j DROP``): dockyard sets them where it runs, commented
``dockyard: swarm tasks``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from dockyard.errors import BootError, DockyardError
from dockyard.runtime.docker import network

GATEWAY_BRIDGE = "docker_gwbridge"
DOCKER_USER = "DOCKER-USER"
COMMENT = "dockyard: swarm tasks"  # how an operator (or a test) finds these rules


def host_rule() -> list[str]:
    # New connections only: replies to the host's own connections (the router's) pass.
    return [
        "INPUT", "-i", GATEWAY_BRIDGE, "-m", "conntrack", "--ctstate", "NEW",
        "-m", "comment", "--comment", COMMENT, "-j", "DROP",
    ]  # fmt: skip


def pool_rule(pool: str) -> list[str]:
    return [
        DOCKER_USER, "-i", GATEWAY_BRIDGE, "-d", pool,
        "-m", "comment", "--comment", COMMENT, "-j", "DROP",
    ]  # fmt: skip


def close_host(pools: Iterable[str]) -> None:
    """Insert the rules that are missing (each once, whatever restarts before)."""
    rules = [host_rule()]
    rules += [pool_rule(str(ipaddress.ip_network(pool, strict=False))) for pool in pools]
    try:
        for rule in rules:
            if network.iptables("-C", *rule).returncode != 0:
                done = network.iptables("-I", *rule)
                if done.returncode != 0:
                    raise BootError(done.stderr.strip(), timed_out=False)
    except BootError as exc:
        raise DockyardError(f"The host could not be closed to Swarm's tasks: {exc.message}") from None
