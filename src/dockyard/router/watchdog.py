"""One periodic sweep that enforces every connection's deadline.

Each connection keeps a ``deadline`` (loop time) and moves it as it works; the sweep calls
``expire()`` on those past it. Moving a deadline is a float store, which is far cheaper
on the per-request path than arming and cancelling a timer around every read.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Protocol


class Watched(Protocol):
    deadline: float

    def expire(self) -> None: ...


class Watchdog:
    def __init__(self, tick: float) -> None:
        self._tick = tick
        self._watched: set[Watched] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def add(self, item: Watched) -> None:
        self._watched.add(item)

    def discard(self, item: Watched) -> None:
        self._watched.discard(item)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._tick)
            now = loop.time()
            for item in [w for w in self._watched if w.deadline <= now]:
                item.deadline = math.inf  # expire once, even if it takes a while to close
                item.expire()
