"""How limits per client count a client's address, and its open connections: shared by
the API's front door, the attach server and the router, so that one machine is one
client to all."""

from __future__ import annotations

import ipaddress


def address_key(host: str) -> str:
    """The client address as limits count it: an IPv6 address by its /64, which one
    machine usually holds whole; an IPv4-mapped one as the IPv4 address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ClientConnections:
    """Open connections per client address. Used from the event loop's thread only."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}

    def take(self, address: str, limit: int) -> bool:
        count = self._open.get(address, 0)
        if count >= limit:
            return False
        self._open[address] = count + 1
        return True

    def give_back(self, address: str) -> None:
        count = self._open.get(address, 0) - 1
        if count > 0:
            self._open[address] = count
        else:
            self._open.pop(address, None)

    def count(self, address: str) -> int:
        return self._open.get(address, 0)
