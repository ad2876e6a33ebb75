"""What the load-generating processes share: they run on uvloop when it is there, and
write their result to a file (a result of hundreds of kilobytes once came back through
a pipe with a line break in the middle of it)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any


def run_to_file(main: Coroutine[Any, Any, dict[str, Any]], out: str) -> dict[str, Any]:
    try:
        import uvloop

        result = uvloop.run(main)
    except ImportError:
        result = asyncio.run(main)
    with open(out, "w") as file:
        json.dump(result, file)
    return result
