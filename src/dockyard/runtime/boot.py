"""The boot check: a release is up when its web process accepts a TCP connection."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from dockyard.errors import BootError
from dockyard.runtime.base import ProcessHandle, Runtime
from dockyard.runtime.logfile import read_tail

# A tiny app binds ~100 ms after it starts, and deploy latency matters: poll often.
POLL_INTERVAL = 0.01


class BootCancelled(BootError):
    """The deployment was cancelled while its web process was booting."""


def accepts_connections(host: str, port: int, *, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_boot(
    runtime: Runtime,
    handle: ProcessHandle,
    *,
    timeout: float,
    cancelled: Callable[[], bool] = lambda: False,
    interval: float = POLL_INTERVAL,
    shown_timeout: float | None = None,
) -> None:
    """Return once the web process accepts a connection on its port.

    Raises ``BootError(timed_out=False)`` when it exits first, ``BootError(timed_out=True)``
    after ``timeout`` seconds (the process is stopped then), and ``BootCancelled`` when
    ``cancelled()`` becomes true. The caller puts ``tail_log`` of it into the deploy log.
    ``shown_timeout`` is the limit the message names, when ``timeout`` is what remains of it.
    """
    if handle.port is None:
        raise ValueError(f"{handle.spec.name} has no port to check")
    deadline = time.monotonic() + timeout
    while True:
        status = runtime.poll(handle)
        if status is not None:
            raise BootError(
                f"The {handle.spec.name} process {runtime.exit_reason(handle, status)} "
                "while booting.",
                timed_out=False,
            )
        remaining = deadline - time.monotonic()
        if accepts_connections(handle.host, handle.port, timeout=max(0.01, min(0.2, remaining))):
            return
        if cancelled():
            raise BootCancelled(
                f"The deployment was cancelled while {handle.spec.name} was booting.",
                timed_out=False,
            )
        if time.monotonic() >= deadline:
            runtime.stop(handle, grace=0)
            raise BootError(
                f"The {handle.spec.name} process did not accept connections on $PORT "
                f"within {timeout if shown_timeout is None else shown_timeout:g} seconds.",
                timed_out=True,
            )
        time.sleep(interval)


def tail_log(path: Path, lines: int = 20) -> list[str]:
    """The process's last output lines, as it wrote them (without timestamps)."""
    return [line.text for line in read_tail(path, lines)]
