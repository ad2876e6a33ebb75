"""Custom domain name rules: what an app may claim as a host name of its own.

A claimed name makes the router send that host's traffic to the app and lets the HTTPS
router order a certificate for it, so the rules refuse anything that could take traffic
or certificates meant for someone else: IP literals, names under the platform's apps
domain other than the app's own, and wildcards unless the operator allows them.
"""

from __future__ import annotations

import ipaddress
import re

MAX_NAME = 253
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalize(name: str) -> str:
    """The form names are stored and compared in: lowercase, no trailing dot."""
    return name.strip().lower().rstrip(".")


def domain_name_problems(
    name: object, *, app_name: str, apps_domain: str, allow_wildcard: bool
) -> list[str]:
    """What is wrong with ``name`` as a custom domain of ``app_name``; empty when fine."""
    if not isinstance(name, str) or not name.strip():
        return ['is required: {"domain": {"name": "www.example.com"}}']
    host = normalize(name)
    if len(host) > MAX_NAME:
        return [f"must be at most {MAX_NAME} characters long"]
    if _is_ip(host):
        return ["must be a domain name, not an IP address"]
    labels = host.split(".")
    wildcard = labels[0] == "*"
    if wildcard and not allow_wildcard:
        return ["must not be a wildcard (*.): this platform does not serve wildcard domains"]
    checked = labels[1:] if wildcard else labels
    if len(checked) < 2:
        return ["must have at least two labels, like example.com"]
    if not all(_LABEL.match(label) for label in checked):
        return [
            "must be a host name: labels of letters, digits and dashes, separated by dots, "
            "none starting or ending with a dash"
        ]
    if checked[-1].isdigit():
        return ["must end with a top-level domain, not a number"]
    suffix = "." + apps_domain
    if host == apps_domain or (host.endswith(suffix) and host != f"{app_name}{suffix}"):
        return [f"must not be under {apps_domain}: names there belong to the platform's apps"]
    return []


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
