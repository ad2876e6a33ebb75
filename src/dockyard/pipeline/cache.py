"""The per-app deployment cache handed to ``bin/compile`` as CACHE_DIR.

A build works on a copy made of hard links (cheap, whatever the cache's size); the copy
replaces the saved cache only after a successful build, so a failed build never poisons
it. Copies never follow symlinks: they are recreated as symlinks.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def _link_tree(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for root, dirs, files in os.walk(source, followlinks=False):
        relative = Path(root).relative_to(source)
        for name in dirs:
            src = Path(root) / name
            dst = target / relative / name
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
            else:
                dst.mkdir(exist_ok=True)
        for name in files:
            src = Path(root) / name
            dst = target / relative / name
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
            elif src.is_file():
                try:
                    os.link(src, dst, follow_symlinks=False)
                except OSError:
                    shutil.copy2(src, dst, follow_symlinks=False)


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
    if saved.exists():
        # Renamed away first, so a build starting now never sees a half-deleted cache.
        doomed = saved.with_name(f".deleting-{saved.name}-{uuid.uuid4().hex}")
        saved.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def discard(saved: Path) -> None:
    """Remove the cache and its generation marker for good (the app is being deleted)."""
    shutil.rmtree(saved, ignore_errors=True)
    _generation_file(saved).unlink(missing_ok=True)


def checkout(saved: Path, working: Path) -> str:
    """Give a build its own view of the saved cache (empty if there is none); returns the
    cache's generation, for ``save``."""
    seen = generation(saved)
    if saved.is_dir():
        _link_tree(saved, working)
    else:
        working.mkdir(parents=True, exist_ok=True)
    return seen


def save(working: Path, saved: Path, *, seen_generation: str) -> bool:
    """Make ``working`` the saved cache (atomic swap), unless the cache was reset since
    the build checked it out: then the user asked for an empty cache, and gets it."""
    if generation(saved) != seen_generation:
        return False
    saved.parent.mkdir(parents=True, exist_ok=True)
    previous = saved.with_name(f".old-{saved.name}")
    shutil.rmtree(previous, ignore_errors=True)
    if saved.exists():
        saved.rename(previous)
    working.rename(saved)
    shutil.rmtree(previous, ignore_errors=True)
    return True
