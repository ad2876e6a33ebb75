"""Output helpers: rich consoles, ``--json`` output, statuses and sizes in words."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

IN_PROGRESS = frozenset({"queued", "building", "pushing", "starting"})


PIPE_WIDTH = 160


def stdout() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Into a file or a pipe, rich would assume 80 columns and squash tables.
        console.width = PIPE_WIDTH
    return console


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    # Plain write, not rich: scripts parse this, so no markup, wrapping or colour.
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def plain(console: Console, text: str) -> None:
    """A line that is data (a log line, a URL): never markup, never wrapped."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def status_text(status: str) -> str:
    if status == "success":
        style = "bold green"
    elif status in IN_PROGRESS:
        style = "cyan"
    elif status == "aborted":
        style = "yellow"
    else:
        style = "bold red"
    return f"[{style}]{escape(status)}[/]"


def human_bytes(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def short_time(timestamp: object) -> str:
    """``2026-11-21T10:49:42.390+00:00`` as ``2026-11-21 10:49:42``."""
    if not isinstance(timestamp, str):
        return ""
    return timestamp.replace("T", " ")[:19]
