"""Procfile parsing: ``name: command`` lines that say how to run an app's processes.

Pure: no I/O beyond the text it is given. The buildpack runner reads the file and turns
a ``ProcfileError`` into a build error the user sees with the line number.
"""

from __future__ import annotations

import re

PROCESS_NAME = re.compile(r"[A-Za-z0-9_-]+")
MAX_NAME_LENGTH = 63  # process names become parts of host names and unit names elsewhere


class ProcfileError(ValueError):
    """The Procfile cannot be understood; the message names the line and what is wrong."""


def parse_procfile(text: str) -> dict[str, str]:
    """Process types in the order they appear; blank lines and ``#`` comments are ignored."""
    processes: dict[str, str] = {}
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, command = line.partition(":")
        if not colon:
            raise ProcfileError(
                f"Procfile line {number} is not of the form `name: command`: {line!r}"
            )
        name, command = name.strip(), command.strip()
        if not PROCESS_NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
            raise ProcfileError(
                f"Procfile line {number}: {name!r} is not a valid process type name "
                f"(use letters, digits, '_' and '-', at most {MAX_NAME_LENGTH} characters)"
            )
        if not command:
            raise ProcfileError(f"Procfile line {number}: process type {name!r} has no command")
        if name in processes:
            raise ProcfileError(f"Procfile line {number}: process type {name!r} is defined twice")
        processes[name] = command
    return processes
