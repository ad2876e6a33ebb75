"""Where each app's network namespace sits: names and addresses, derived from its sandbox uid.

The sandbox uid is unique per app and never changes, so the same app gets the same
namespace, interfaces and addresses after a server restart or a reboot, and two apps never
share any. Each app takes a /30 of the pool: the host's end of the veth pair is its first
address, the app's end (``eth0`` in the namespace) the second::

    pool 10.213.0.0/16, app number 3 (uid FIRST_UID + 3)
    10.213.0.12/30: host dyapp200003 = 10.213.0.13, namespace dockyard-200003 eth0 = 10.213.0.14

Nothing here touches the system.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from dockyard.errors import DockyardError

NETNS_DIR = Path("/run/netns")  # where ``ip netns`` keeps named namespaces
NETNS_PREFIX = "dockyard-"
# Host-side interface names: the prefix the firewall matches (``dyapp*``) and the uid.
# Linux allows 15 characters: 5 + the 10 digits of the largest uid.
HOST_IF_PREFIX = "dyapp"
APP_IF = "eth0"
BLOCK_PREFIX = 30


class NetworkPoolExhausted(DockyardError):
    """The app network pool has no /30 left for this app."""


@dataclass(frozen=True)
class AppAddresses:
    uid: int
    netns: str  # the namespace's name, as ``ip netns`` knows it
    host_if: str  # the host's end of the veth pair
    app_if: str  # the app's end, inside the namespace
    network: ipaddress.IPv4Network  # the /30
    host_address: ipaddress.IPv4Address  # the app's gateway; the router connects from it
    app_address: ipaddress.IPv4Address  # where the app's instances listen

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns


def capacity(pool: ipaddress.IPv4Network) -> int:
    """How many apps ``pool`` holds."""
    return int(pool.num_addresses // 2 ** (32 - BLOCK_PREFIX))


def allocate(*, uid: int, first_uid: int, pool: ipaddress.IPv4Network) -> AppAddresses:
    """The namespace of the app whose sandbox uid is ``uid`` (apps are numbered from
    ``first_uid``)."""
    index = uid - first_uid
    if index < 0:
        raise ValueError(f"sandbox uid {uid} is below the first app uid {first_uid}")
    if index >= capacity(pool):
        raise NetworkPoolExhausted(
            f"The app network pool {pool} holds {capacity(pool)} apps and this app is number "
            f"{index + 1}: give DOCKYARD_APP_NETWORK_POOL a larger private range."
        )
    block = ipaddress.IPv4Network(
        (int(pool.network_address) + index * 2 ** (32 - BLOCK_PREFIX), BLOCK_PREFIX)
    )
    return AppAddresses(
        uid=uid,
        netns=f"{NETNS_PREFIX}{uid}",
        host_if=f"{HOST_IF_PREFIX}{uid}",
        app_if=APP_IF,
        network=block,
        host_address=block.network_address + 1,
        app_address=block.network_address + 2,
    )
