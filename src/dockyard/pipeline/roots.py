"""The root directories of build sandboxes, kept from one build for the next.

A build's sandbox has a directory of its own as ``/`` (``BuildContext.sandbox_root``),
in which ``sandbox.prepare_root`` makes some twenty mount points and links, all root's:
most of the inodes the server itself created per deployment. On an ext4 file system
without a journal, as this project's machines have, each new inode skips over every
inode deleted in the last minutes (``recently_deleted`` in the kernel), so the busier the
disk the dearer a ``mkdir``: inode allocation was a fifth of the server's CPU time while
eight apps deployed at once (``perf record -a``; docs/performance.md).

Once a build is over, its root holds nothing of it: the app has moved to the release, the
cache back out, and the sandbox uid could never write to the root or its mount points
(mounts covered them while it ran). ``give_back`` checks that all the same, then puts the
root in a pool; ``take`` hands it to the next build with one rename.
"""

from __future__ import annotations

import logging
import os
import stat
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

POOL_SIZE = 16  # more than the builds a machine runs at once; extra roots are deleted
# What a build puts in its root: its app (moved to the release when it succeeds) and, for
# compile, its cache.
BUILD_ENTRIES = ("app", "cache")


def take(pool: Path, root: Path) -> None:
    """Make ``root`` (which must not exist) a root directory for a build's sandboxes: a
    pooled one if there is one, else a new empty directory (``prepare_root`` fills it)."""
    for candidate in _pooled(pool):
        try:
            candidate.rename(root)
        except FileNotFoundError:
            continue  # another worker took it first
        return
    root.mkdir(mode=0o755)


def give_back(pool: Path, root: Path) -> bool:
    """Put a finished build's root in the pool if it is as ``prepare_root`` made it: only
    directories, symlinks and empty files, all root's and writable by no one else. Returns
    whether it was pooled; if not, it stays where it is (the caller removes it with the
    rest of the build). Never raises: a root not reused only costs the next build time.

    Only for roots of sandboxed builds run by root: a build run as the server's own user
    (no sandbox, or a server not running as root) could write to its ``/``."""
    if os.geteuid() != 0:
        return False
    try:
        if not _is_bare(root) or len(_pooled(pool)) >= POOL_SIZE:
            return False
        pool.mkdir(mode=0o700, exist_ok=True)
        root.rename(pool / uuid.uuid4().hex)
    except OSError:
        log.warning("could not keep the build root %s for reuse", root, exc_info=True)
        return False
    return True


def _pooled(pool: Path) -> list[Path]:
    try:
        with os.scandir(pool) as entries:
            return [Path(entry.path) for entry in entries]
    except FileNotFoundError:
        return []


def _is_bare(root: Path) -> bool:
    owner = os.geteuid()
    pending = [str(root)]
    try:
        if any(os.path.lexists(root / name) for name in BUILD_ENTRIES):
            return False
        while pending:
            directory = pending.pop()
            if not _owned_and_closed(os.lstat(directory), owner):
                return False
            with os.scandir(directory) as entries:
                for entry in entries:
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(info.st_mode):
                        pending.append(entry.path)  # its owner and mode: checked in turn
                    elif not _is_bare_leaf(info, owner):
                        return False
    except OSError:
        return False
    return True


def _is_bare_leaf(info: os.stat_result, owner: int) -> bool:
    """A system link, or an empty file that a file is bound over (a tool)."""
    if stat.S_ISLNK(info.st_mode):
        return info.st_uid == owner  # a link's own mode bits mean nothing
    return stat.S_ISREG(info.st_mode) and info.st_size == 0 and _owned_and_closed(info, owner)


def _owned_and_closed(info: os.stat_result, owner: int) -> bool:
    return info.st_uid == owner and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
