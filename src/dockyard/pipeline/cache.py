"""The per-app deployment cache handed to ``bin/compile`` as CACHE_DIR.

A build works on a copy made of hard links (cheap, whatever the cache's size); the copy
replaces the saved cache only after a successful build, so a failed build never poisons
it. Copies never follow symlinks: they are recreated as symlinks. The next build's copy
is made ahead, in the background once a cache is saved (``settle_in_background``): its
checkout is then one rename, where linking a Flask app's cache (900 entries) took 10-45
ms on the way to its compile.

A release can share files with the saved cache: the directories dockyard keeps for a
buildpack (``keep``: the Python buildpack's virtualenv) and whatever a buildpack
hard-linked itself (pnpm's store). The next build, which gets that cache writable, must
not be able to change a serving release through them. Kept files are frozen (read-only,
root's) and stay shared; for the others, ``settle_in_background`` gives the saved cache
copies of its own once the release is up. ``checkout``, ``reset`` and ``discard`` wait
for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
import uuid
from pathlib import Path

from dockyard.pipeline import keep

log = logging.getLogger(__name__)


def _link_tree(source: Path, target: Path, owner: int | None) -> None:
    """Recreate ``source`` at ``target``: directories made anew, files hard-linked,
    symlinks copied as links. With ``owner``, everything in ``target`` ends up owned by
    that uid (hard links share their inode, so the saved file's owner changes too, as a
    chown of the copy always did); doing it here, from the one stat each entry needs
    anyway, spares the build a second walk of a cache of maybe tens of thousands of files."""
    target.mkdir(parents=True, exist_ok=True)
    if owner is not None:
        os.lchown(target, owner, owner)
    pending = [(str(source), str(target))]
    while pending:
        source_dir, target_dir = pending.pop()
        with os.scandir(source_dir) as entries:
            for entry in entries:
                destination = os.path.join(target_dir, entry.name)
                if entry.is_symlink():
                    os.symlink(os.readlink(entry.path), destination)
                elif entry.is_dir(follow_symlinks=False):
                    os.mkdir(destination)
                    pending.append((entry.path, destination))
                elif entry.is_file(follow_symlinks=False):
                    try:
                        os.link(entry.path, destination, follow_symlinks=False)
                    except OSError:
                        shutil.copy2(entry.path, destination, follow_symlinks=False)
                    else:
                        if owner is None:
                            continue
                        st = entry.stat(follow_symlinks=False)
                        if st.st_uid == owner or keep.is_frozen(st):
                            continue  # a frozen file stays root's: see keep.py
                else:
                    continue  # sockets, FIFOs, devices: nothing a cache needs
                if owner is not None:
                    os.lchown(destination, owner, owner)


_DOOMED_PREFIX = ".removing-"


def _generation_file(saved: Path) -> Path:
    return saved.with_name(f"{saved.name}.generation")


def generation(saved: Path) -> str:
    """Changes each time the cache is reset; a build compares it before saving."""
    try:
        return _generation_file(saved).read_text()
    except FileNotFoundError:
        return ""


def reset(saved: Path) -> None:
    """Empty the saved cache; a build running now will not save its copy over the reset."""
    saved.parent.mkdir(parents=True, exist_ok=True)
    marker = _generation_file(saved)
    partial = marker.with_name(f".{marker.name}.{uuid.uuid4().hex}")
    partial.write_text(uuid.uuid4().hex)
    os.replace(partial, marker)
    _wait_settled(saved)
    _forget_spare(saved)
    if saved.exists():
        # Renamed away first, so a build starting now never sees a half-deleted cache.
        _set_aside(saved)
        _remove_in_background(saved)


def discard(saved: Path) -> None:
    """Remove the cache and its generation marker for good (the app is being deleted)."""
    _wait_settled(saved)
    _forget_spare(saved)
    shutil.rmtree(saved, ignore_errors=True)
    for leftover in _set_aside_copies(saved):
        shutil.rmtree(leftover, ignore_errors=True)
    _generation_file(saved).unlink(missing_ok=True)


def checkout(saved: Path, working: Path, *, owner: int | None = None) -> str:
    """Give a build its own view of the saved cache (empty if there is none), owned by
    ``owner`` if given; returns the cache's generation, for ``save``."""
    _wait_settled(saved)
    seen = generation(saved)
    if _take_spare(saved, working, owner):
        return seen
    if saved.is_dir():
        _link_tree(saved, working, owner)
    else:
        working.mkdir(parents=True, exist_ok=True)
        if owner is not None:
            os.lchown(working, owner, owner)
    return seen


def save(working: Path, saved: Path, *, seen_generation: str) -> bool:
    """Make ``working`` the saved cache (atomic swap), unless the cache was reset since
    the build checked it out: then the user asked for an empty cache, and gets it."""
    _wait_settled(saved)  # its copy being made now would be of the cache replaced
    if generation(saved) != seen_generation:
        return False
    with _lock:
        _spares_ready.discard(saved)  # a copy of the cache being replaced
    saved.parent.mkdir(parents=True, exist_ok=True)
    if saved.exists():
        _set_aside(saved)
    working.rename(saved)
    _remove_in_background(saved)
    return True


def _set_aside(saved: Path) -> Path:
    doomed = saved.with_name(f"{_DOOMED_PREFIX}{saved.name}-{uuid.uuid4().hex}")
    saved.rename(doomed)
    return doomed


def _set_aside_copies(saved: Path) -> list[Path]:
    return list(saved.parent.glob(f"{_DOOMED_PREFIX}{saved.name}-{'?' * 32}"))


def _remove_in_background(saved: Path) -> None:
    """Delete what was set aside from ``saved``, off the deployment's path: a cache of tens
    of thousands of files (node_modules) takes seconds to delete. Leftovers of a process
    that died meanwhile go along with the next one."""
    leftovers = _set_aside_copies(saved)

    def remove() -> None:
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)

    threading.Thread(target=remove, name="dockyard-cache-removal", daemon=True).start()


_settling: dict[Path, threading.Thread] = {}
_spares_ready: set[Path] = set()  # saved caches whose spare is a copy of them as they are
_lock = threading.Lock()


def settle_in_background(saved: Path, release_dir: Path) -> None:
    """After ``save``, in a thread: unshare ``saved`` from ``release_dir``, then make the
    next build's copy of it (its spare). ``checkout``, ``reset`` and ``discard`` of the
    same cache wait for it.

    Unsharing replaces each file of ``saved`` that the release shares (a hard link made by
    the build, not a frozen one: see ``keep``) with a copy of its own; the Python
    buildpack leaves none. Both steps run in processes of their own at a low priority:
    they run while the new release boots, and as threads of the server their thousands
    of short system calls fought the event loop and the workers for the GIL."""
    worker = threading.Thread(target=_settle, args=(saved, release_dir), name="dockyard-settle")
    with _lock:
        _settling[saved] = worker
        _spares_ready.discard(saved)
    worker.start()


def _settle(saved: Path, release_dir: Path) -> None:
    if _shares_files(release_dir):
        _in_background_process([sys.executable, "-m", __name__, str(saved), str(release_dir)])
    spare = _spare(saved)
    partial = spare.with_name(f"{spare.name}-partial")
    for leftover in (spare, partial):  # of a server that stopped before using them
        shutil.rmtree(leftover, ignore_errors=True)
    if not saved.is_dir():
        return
    # GNU cp in archive mode keeps the owners and modes of directories and links files.
    if _in_background_process(["cp", "--archive", "--link", str(saved), str(partial)]):
        partial.rename(spare)
        with _lock:
            _spares_ready.add(saved)
    else:
        shutil.rmtree(partial, ignore_errors=True)


def _shares_files(release_dir: Path) -> bool:
    try:
        return bool(_hard_linked_files(release_dir))
    except FileNotFoundError:
        return False  # the release failed to start and is gone: it shares nothing any more
    except OSError:
        log.exception("could not look for the files %s shares with its cache", release_dir)
        return True


def _in_background_process(argv: list[str]) -> bool:
    result = subprocess.run(
        ["nice", "-n", "10", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        close_fds=True,
        check=False,
    )
    if result.returncode != 0:
        why = result.stderr.decode(errors="replace").strip()[-500:]
        log.warning("%s exited with status %s: %s", argv[0], result.returncode, why)
    return result.returncode == 0


def _spare(saved: Path) -> Path:
    return saved.with_name(f"{saved.name}.next")


def _take_spare(saved: Path, working: Path, owner: int | None) -> bool:
    """Move the spare copy of ``saved`` to ``working``, if there is one made from
    ``saved`` as it is now, owned by ``owner``."""
    with _lock:
        if saved not in _spares_ready:
            return False
        _spares_ready.discard(saved)
    spare = _spare(saved)
    try:
        if owner is None or spare.stat().st_uid == owner:
            working.parent.mkdir(parents=True, exist_ok=True)
            spare.rename(working)
            return True
    except OSError as exc:  # e.g. builds and caches on two file systems: link it then
        log.warning("could not use the spare copy of the cache %s: %s", saved, exc)
    shutil.rmtree(spare, ignore_errors=True)
    return False


def _forget_spare(saved: Path) -> None:
    with _lock:
        _spares_ready.discard(saved)
    shutil.rmtree(_spare(saved), ignore_errors=True)


def _wait_settled(saved: Path) -> None:
    with _lock:
        worker = _settling.get(saved)
    if worker is None:
        return
    worker.join()
    with _lock:
        if _settling.get(saved) is worker:
            del _settling[saved]


def _unshare(saved: Path, release_dir: Path) -> None:
    try:
        shared = _hard_linked_files(release_dir)
        if not shared:
            return
        for directory, _dirs, files in os.walk(saved):
            for name in files:
                path = os.path.join(directory, name)
                st = os.lstat(path)
                if (st.st_dev, st.st_ino) in shared and not keep.is_frozen(st):
                    _replace_with_copy(path, st)
    except OSError:
        # The cache was reset or deleted meanwhile (nothing left to protect), or the disk
        # failed: then files may still be shared, which the operator must hear about.
        log.exception("could not unshare the deployment cache %s from %s", saved, release_dir)


def _hard_linked_files(root: Path) -> set[tuple[int, int]]:
    found = set()
    for directory, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(directory, name))
            if st.st_nlink > 1 and stat.S_ISREG(st.st_mode) and not keep.is_frozen(st):
                found.add((st.st_dev, st.st_ino))
    return found


def _replace_with_copy(path: str, st: os.stat_result) -> None:
    """``path`` becomes a new file with the same content, mode, times and owner.

    A handful of system calls per file: ``shutil.copy2``, which also reads and writes
    every extended attribute, took 0.24 s for a Flask virtualenv where this takes 0.06 s."""
    partial = f"{path}.{uuid.uuid4().hex}.dockyard-copy"
    source = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        target = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IMODE(st.st_mode))
        try:
            remaining = st.st_size
            while remaining > 0:
                copied = os.copy_file_range(source, target, remaining)
                if copied == 0:
                    break
                remaining -= copied
            os.fchown(target, st.st_uid, st.st_gid)
            os.fchmod(target, stat.S_IMODE(st.st_mode))  # not narrowed by the umask
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(target)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    finally:
        os.close(source)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="dockyard cache unshare: %(message)s")
    _unshare(Path(sys.argv[1]), Path(sys.argv[2]))
