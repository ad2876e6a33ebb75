"""What an app's environment variables may hold: only what every build and every process
of the app can be started with.

Variables reach builds and apps through ``execve``'s environment, which the kernel bounds:
one ``NAME=VALUE`` string at most 128 KiB (MAX_ARG_STRLEN), all of them together with the
arguments within ARG_MAX (a quarter of the stack limit: 2 MiB with the usual 8 MiB), and
no NUL inside a string (it would end it). The bounds here are well inside those, with room
for what dockyard and the buildpacks add (PATH, PORT, HOME, the buildpacks' defaults), so
a variable the API accepts can never make a deployment fail; one it refuses is refused
with a 422 naming it and the limit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# A POSIX name (letters, digits, underscores, not starting with a digit): what a shell can
# expand, and what ``env`` prints back unambiguously.
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_NAME_CHARS = 255  # the column's size
MAX_VALUE_BYTES = 32 * 1024  # UTF-8 bytes: a quarter of the kernel's 128 KiB per string
MAX_VARIABLES_BYTES = 256 * 1024  # all "NAME=VALUE" strings of an app: an eighth of ARG_MAX
MAX_VARIABLES = 1000


def name_problems(name: object) -> list[str]:
    if not isinstance(name, str):
        return ["must be a string"]
    if not name or len(name) > MAX_NAME_CHARS or not NAME_RE.match(name):
        return [
            f"must be 1 to {MAX_NAME_CHARS} letters, digits and underscores, not starting "
            "with a digit (a POSIX environment variable name)"
        ]
    return []


def value_problems(name: str, value: object) -> list[str]:
    if not isinstance(value, str):
        return [f"of {name} must be a string"]
    if "\x00" in value:
        return [f"of {name} contains a NUL character, which no environment variable can hold"]
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_VALUE_BYTES:
        return [
            f"of {name} is {size} bytes in UTF-8; a value may be at most "
            f"{MAX_VALUE_BYTES // 1024} KiB ({MAX_VALUE_BYTES} bytes)"
        ]
    return []


def entry_bytes(name: str, value: str) -> int:
    """What one variable weighs in an exec'd environment: ``NAME=VALUE`` and its NUL."""
    return len(name) + 1 + len(value.encode("utf-8", "surrogatepass")) + 1


def environment_problems(variables: Mapping[str, str], changed: list[str]) -> list[str]:
    """What is wrong with ``variables`` as an app's whole set, once ``changed`` (the names
    being set) are in it; empty when it is fine."""
    if len(variables) > MAX_VARIABLES:
        return [
            f"an app may have at most {MAX_VARIABLES} variables; this would make "
            f"{len(variables)}: delete some first"
        ]
    total = sum(entry_bytes(name, value) for name, value in variables.items())
    if total > MAX_VARIABLES_BYTES:
        named = ", ".join(changed[:5]) + (", …" if len(changed) > 5 else "")
        return [
            f"setting {named} would make the app's variables {total} bytes (names and values "
            f"in UTF-8); they may be at most {MAX_VARIABLES_BYTES // 1024} KiB "
            f"({MAX_VARIABLES_BYTES} bytes) in all"
        ]
    return []
