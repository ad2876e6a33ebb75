"""The open deployment streams of this process, so that shutdown can end them last."""

from __future__ import annotations

import asyncio
import contextlib


class OpenStreams:
    """Tasks that send deployment streams. Only the event loop's thread touches it."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)

    def discard(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
