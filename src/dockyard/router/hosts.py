"""Host header → app name: ``APP.DOMAIN[:port]``, case-insensitive."""

from __future__ import annotations

import functools
import re

# One DNS label: what an app name can be. Anything else (nested subdomains, underscores,
# IP literals) cannot name an app, so it gets the 404 page rather than a lookup.
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


# Clients send the same few host names over and over; the cache is bounded, so junk names
# cost an eviction, not memory.
@functools.lru_cache(maxsize=4096)
def app_from_host(host: str, apps_domain: str) -> str | None:
    """The app named by ``host``, or None when the host is not ``APP.<apps_domain>``."""
    name = host.lower()
    if name.startswith("["):
        return None  # an IPv6 literal never names an app
    name = name.partition(":")[0].rstrip(".")
    suffix = "." + apps_domain.lower().strip(".")
    if not name.endswith(suffix):
        return None
    label = name[: -len(suffix)]
    return label if _LABEL.fullmatch(label) else None
