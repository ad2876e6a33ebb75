"""App name rules. This is a security boundary: an app name becomes a host name, a
directory name and a process name, so only the shape below is ever accepted."""

from __future__ import annotations

import re

APP_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{4,46}[a-z0-9]$")
RESERVED_NAMES = frozenset({"www", "api", "admin", "dockyard", "localhost"})


def app_name_problems(name: object) -> list[str]:
    """What is wrong with ``name`` as an app name, in words; empty when it is fine."""
    if not isinstance(name, str) or not name:
        return ["is required"]
    problems = []
    if not 6 <= len(name) <= 48:
        problems.append("must be between 6 and 48 characters long")
    if not APP_NAME_RE.match(name):
        problems.append(
            "may contain only lowercase letters, digits and dashes, "
            "must start with a letter and must not end with a dash"
        )
    if "--" in name:
        problems.append("must not contain two dashes in a row")
    if name in RESERVED_NAMES:
        problems.append("is reserved")
    return problems
