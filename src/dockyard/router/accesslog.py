"""The router's access log: one line per request it answered for an app, in that app's
logs under ``[router]`` (``method=GET path="/" host=… from="…" status=200
duration=0.004s``: key=value pairs, which the official client colours).

The router's event loop only appends a tuple to a list; formatting and writing happen in
a thread, a batch every ``flush_seconds``, so the log costs the router almost nothing.
Lines beyond ``max_pending`` between two flushes are dropped and counted, never queued
without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence

log = logging.getLogger(__name__)

# {app: [(unix time, line), ...]}; the runtime's ``RouterLogs.write`` in ``dockyard serve``.
Writer = Callable[[Mapping[str, Sequence[tuple[float, str]]]], None]
_Entry = tuple[str, float, bytes, bytes, str, bytes, int, float]
MAX_PATH_CHARS = 1024


class AccessLog:
    def __init__(
        self, write: Writer, *, flush_seconds: float = 0.2, max_pending: int = 100_000
    ) -> None:
        self.write = write
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.dropped = 0
        self._pending: list[_Entry] = []
        self._task: asyncio.Task[None] | None = None

    def record(
        self,
        app: str,
        method: bytes,
        target: bytes,
        host: str,
        client_ip: bytes,
        status: int,
        seconds: float,
    ) -> None:
        """One answered request (called on the router's loop: keep it an append)."""
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        self._pending.append((app, time.time(), method, target, host, client_ip, status, seconds))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            await asyncio.to_thread(self._write, batch)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            await self.flush()

    def _write(self, batch: list[_Entry]) -> None:
        by_app: dict[str, list[tuple[float, str]]] = {}
        for app, at, method, target, host, client_ip, status, seconds in batch:
            by_app.setdefault(app, []).append(
                (at, _line(method, target, host, client_ip, status, seconds))
            )
        try:
            self.write(by_app)
        except Exception:
            log.exception("the router's access lines could not be written")


def _line(
    method: bytes, target: bytes, host: str, client_ip: bytes, status: int, seconds: float
) -> str:
    path = target.decode("latin-1")[:MAX_PATH_CHARS].replace('"', "%22").replace(" ", "%20")
    return (
        f'method={method.decode("latin-1")} path="{path}" host={host[:253]}'
        f' from="{client_ip.decode("latin-1")}" status={status} duration={seconds:.3f}s'
    )
