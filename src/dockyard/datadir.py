"""One serving process per data directory.

``dockyard serve`` and ``dockyard worker`` keep builds, releases, caches and app logs in
``DOCKYARD_DATA_DIR``, and each clears at start what its predecessor left there: two of them
on one directory would remove each other's work. The first takes an exclusive lock on a
file there for as long as it runs (the kernel drops it when the process ends, however it
ends); a second is refused, saying what to change."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from dockyard.errors import DockyardError

LOCK_NAME = ".dockyard.lock"


def claim(data_dir: Path, command: str) -> int:
    """Hold ``data_dir`` for this process: the lock's file descriptor, to keep open for as
    long as it runs (not inherited by children: sandboxes that outlive it must not keep
    the directory held)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DockyardError(
            f"Another dockyard process already uses the data directory {data_dir}: give "
            f"each 'dockyard {command}' a DOCKYARD_DATA_DIR of its own."
        ) from None
    return fd
