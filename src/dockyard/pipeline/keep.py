"""Kept directories: a buildpack asks dockyard to keep a directory of the app in the cache.

A buildpack that wants a directory of the built app back next time (the Python buildpack's
virtualenv) writes one line per directory to ``$CACHE_DIR/.dockyard-keep``::

    python/venv-3f2a9c .venv

(the path in the cache, then the path in the app, both relative). After a successful
``bin/compile``, dockyard makes that cache path a copy of the app directory built of hard
links, and *freezes* every file in it: owned by root, no write bit, no setuid/setgid bit.
The next build finds the directory in its cache and can ``rename`` it into ``/app``
(instant: the build's ``/app`` and ``/cache`` are one mount), where it is read-only to
the build as it is to the app.

Why dockyard links rather than the buildpack: the release shares these files' inodes with
the cache, and every later build gets the cache writable. A file the build user could link
(``fs.protected_hardlinks``: only a file it owns or may write) is a file it could write,
and then it could change the serving release through its cache. Frozen files can be read,
renamed and deleted by a build, never written; ``cache.settle_in_background`` leaves them
shared, so keeping a virtualenv costs a few thousand system calls instead of a copy of
every file (a Flask virtualenv: ~0.01 s against ~0.1 s for the copy, which also fought the
new release's boot for the CPU).

Nothing of the build runs any more when this reads the app and the cache (its sandbox is
gone), so what a path names cannot change while it is followed; symlinks are never
followed all the same, and owners are changed through a descriptor.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

REQUESTS_FILE = ".dockyard-keep"
MAX_REQUESTS_BYTES = 64 * 1024
MAX_REQUESTS = 16
FROZEN_UID = 0


class _Refused(Exception):
    """A request that names something dockyard will not keep; the message says why."""


def discard_requests(cache_dir: Path) -> None:
    """Forget requests left in a cache (a build's requests are applied right after it)."""
    (cache_dir / REQUESTS_FILE).unlink(missing_ok=True)


def apply_requests(
    cache_dir: Path, app_dir: Path, *, owner: int | None, log: Callable[[str], None]
) -> list[str]:
    """Keep what the build asked for (see the module docstring), then forget the requests;
    the app's directories kept (relative paths).

    ``owner`` (only root can give files away) gets the directories made in the cache, so
    that the next build can move and delete what is in them. A request that cannot be
    honoured is skipped with a line in the build log: the build itself succeeded, and the
    next one only loses time.
    """
    requests = _read_requests(cache_dir, log)
    discard_requests(cache_dir)
    kept = []
    for line in requests:
        try:
            cache_rel, app_rel = _parse(line)
            source = _existing_dir(app_dir, app_rel, "in the app")
            target = _fresh_target(cache_dir, cache_rel, owner)
            _keep(source, target, owner)
        except _Refused as exc:
            log(f" !     Not kept in the cache ({REQUESTS_FILE}: {line!r}): {exc}")
        else:
            kept.append("/".join(app_rel))
    return kept


def give_to(cache_dir: Path, uid: int) -> None:
    """Make ``cache_dir`` (created if need be) and everything in it ``uid``'s, except the
    frozen files, which stay root's (only root can give files away: a no-op otherwise)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return
    for root, dirs, files in os.walk(cache_dir):
        os.lchown(root, uid, uid)
        for name in dirs + files:
            path = os.path.join(root, name)
            if not is_frozen(os.lstat(path)):
                os.lchown(path, uid, uid)


def is_frozen(st: os.stat_result) -> bool:
    """Whether a file was frozen by ``apply_requests``: no build can write it."""
    return st.st_uid == FROZEN_UID and not st.st_mode & 0o222


def _read_requests(cache_dir: Path, log: Callable[[str], None]) -> list[str]:
    try:
        fd = os.open(cache_dir / REQUESTS_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return []
    except OSError as exc:
        log(f" !     {REQUESTS_FILE} in the cache cannot be read ({exc.strerror}): nothing kept.")
        return []
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            log(f" !     {REQUESTS_FILE} in the cache is not a regular file: nothing kept.")
            return []
        data = file.read(MAX_REQUESTS_BYTES + 1)
    if len(data) > MAX_REQUESTS_BYTES:
        log(
            f" !     {REQUESTS_FILE} is larger than {MAX_REQUESTS_BYTES // 1024} KiB: nothing kept."
        )
        return []
    lines = [line.strip() for line in data.decode("utf-8", errors="replace").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if len(lines) > MAX_REQUESTS:
        log(f" !     {REQUESTS_FILE} asks for more than {MAX_REQUESTS} directories: nothing kept.")
        return []
    return list(dict.fromkeys(lines))


def _parse(line: str) -> tuple[list[str], list[str]]:
    fields = line.split()
    if len(fields) != 2:
        raise _Refused("a line is a path in the cache and a path in the app, nothing else")
    return _relative_parts(fields[0]), _relative_parts(fields[1])


def _relative_parts(text: str) -> list[str]:
    parts = text.strip("/").split("/") if not text.startswith("/") else []
    if not parts or any(part in ("", ".", "..") for part in parts) or "\0" in text:
        raise _Refused(f"{text!r} is not a plain relative path (no '..', not absolute)")
    return parts


def _existing_dir(base: Path, parts: list[str], where: str) -> Path:
    path = base
    for part in parts:
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise _Refused(f"{'/'.join(parts)} does not exist {where}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise _Refused(f"{'/'.join(parts)} {where} is not a directory (or is a symlink)")
    return path


def _fresh_target(cache_dir: Path, parts: list[str], owner: int | None) -> Path:
    """The cache path to keep into, its parents made (owned by ``owner``), nothing at it."""
    parent = cache_dir
    for part in parts[:-1]:
        parent = parent / part
        try:
            os.mkdir(parent)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(parent).st_mode):
                where = parent.relative_to(cache_dir)
                raise _Refused(f"{where} in the cache is not a directory") from None
        else:
            _chown(parent, owner)
    target = parent / parts[-1]
    if os.path.lexists(target):
        _remove(target)
    return target


def _keep(source: Path, target: Path, owner: int | None) -> None:
    # Made under a temporary name and renamed into place: a cache never holds a half
    # kept directory, even if the server dies in the middle.
    partial = target.with_name(f".{target.name}.keeping-{uuid.uuid4().hex}")
    try:
        _link_tree(source, partial, owner)
        os.rename(partial, target)
    except BaseException as exc:
        _remove(partial)
        if isinstance(exc, OSError):
            raise _Refused(f"it could not be linked into the cache ({exc.strerror})") from exc
        raise


def _link_tree(source: Path, target: Path, owner: int | None) -> None:
    os.mkdir(target)
    _chown(target, owner)
    pending = [(str(source), str(target))]
    freeze = os.geteuid() == 0
    while pending:
        source_dir, target_dir = pending.pop()
        with os.scandir(source_dir) as entries:
            for entry in entries:
                destination = os.path.join(target_dir, entry.name)
                if entry.is_dir(follow_symlinks=False):
                    os.mkdir(destination, 0o755)
                    _chown(destination, owner)
                    pending.append((entry.path, destination))
                elif entry.is_symlink():
                    os.symlink(os.readlink(entry.path), destination)
                    _chown(destination, owner)
                elif entry.is_file(follow_symlinks=False):
                    os.link(entry.path, destination, follow_symlinks=False)
                    if freeze:
                        _freeze(destination, entry.stat(follow_symlinks=False))
                # sockets, FIFOs, devices: nothing a cache needs


def _freeze(path: str, st: os.stat_result) -> None:
    if is_frozen(st) and not st.st_mode & 0o6000:
        return  # kept last time already: linked back unchanged
    # Through a descriptor of what was linked, never a path that could have become a
    # symlink: root changes owners here.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Refused(f"{path} changed while it was kept")
        # Readable and executable by all where the owner could: the app's uid no longer
        # owns the file but must still read it (and run what is in bin/).
        mode = (0o444 if st.st_mode & 0o400 else 0) | (0o111 if st.st_mode & 0o100 else 0)
        os.fchmod(fd, mode)  # first: drops setuid/setgid before root owns the file
        os.fchown(fd, FROZEN_UID, FROZEN_UID)
    finally:
        os.close(fd)


def _chown(path: str | Path, owner: int | None) -> None:
    if owner is not None:
        os.lchown(path, owner, owner)


def _remove(path: Path) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
