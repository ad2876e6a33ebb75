"""How limits per client count a client's address: shared by the API's front door and the
router, so that one machine is one client to both."""

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
