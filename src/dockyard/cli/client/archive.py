"""Packing a directory into the tar.gz the server expects: one root folder, the app inside.

What goes in: regular files and directories not ignored (see :mod:`ignore`), with their
permission bits; symbolic links *as links*, never followed. The server refuses links
that leave the root or pass through another link (``pipeline/archive.py``), so such links
are left out here with a warning instead of failing the build later; an absolute link to
a place inside the directory is rewritten as a relative one. Hard links are stored as
separate files (the server refuses hard-link entries), and sockets, FIFOs and devices are
skipped. Owners are dropped: they mean nothing on the server.
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dockyard.cli.client.errors import ClientError
from dockyard.cli.client.ignore import IgnoreRules

COMPRESS_LEVEL = 6  # the usual speed/size balance; 9 is much slower for little gain


@dataclass
class PackResult:
    path: Path
    root: str
    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)


def root_name(directory: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", directory.resolve().name).strip(".-")
    return name or "app"


def pack_directory(
    directory: Path, dest: Path, *, warn: Callable[[str], None] = lambda _message: None
) -> PackResult:
    """Write ``directory`` as a gzip-compressed tar to ``dest``."""
    if not directory.is_dir():
        raise ClientError(f"{directory} is not a directory.")
    result = PackResult(path=dest, root=root_name(directory))
    packer = _Packer(directory, result, warn)
    with tarfile.open(dest, "w:gz", compresslevel=COMPRESS_LEVEL, format=tarfile.PAX_FORMAT) as tar:
        packer.tar = tar
        packer.run()
    return result


class _Packer:
    def __init__(self, directory: Path, result: PackResult, warn: Callable[[str], None]) -> None:
        self.top = directory.absolute()
        self.result = result
        self.warn = warn
        self.tar: tarfile.TarFile | None = None

    def run(self) -> None:
        self._add_directory_entry(self.top, "")
        # An explicit stack rather than recursion: no depth limit on what users upload.
        pending: list[tuple[Path, str, IgnoreRules]] = [
            (self.top, "", IgnoreRules().descend(self.top, ""))
        ]
        while pending:
            directory, rel, rules = pending.pop()
            subdirectories: list[tuple[Path, str, IgnoreRules]] = []
            for entry in sorted(os.scandir(directory), key=lambda item: item.name):
                child_rel = f"{rel}/{entry.name}" if rel else entry.name
                child = Path(entry.path)
                if entry.is_symlink():
                    if not rules.ignored(child_rel, is_dir=False):
                        self._add_symlink(child, child_rel)
                elif entry.is_dir(follow_symlinks=False):
                    if not rules.ignored(child_rel, is_dir=True):
                        self._add_directory_entry(child, child_rel)
                        subdirectories.append((child, child_rel, rules.descend(child, child_rel)))
                elif entry.is_file(follow_symlinks=False):
                    if not rules.ignored(child_rel, is_dir=False):
                        self._add_file(child, child_rel)
                else:
                    self._skip(child_rel, "it is not a regular file, directory or link")
            pending.extend(reversed(subdirectories))  # popped in name order

    def _info(self, path: Path, rel: str) -> tuple[tarfile.TarInfo, os.stat_result]:
        st = path.lstat()
        info = tarfile.TarInfo(f"{self.result.root}/{rel}" if rel else self.result.root)
        info.mode = stat.S_IMODE(st.st_mode) & 0o777
        info.mtime = int(st.st_mtime)
        return info, st

    def _add_directory_entry(self, path: Path, rel: str) -> None:
        assert self.tar is not None
        info, _ = self._info(path, rel)
        info.type = tarfile.DIRTYPE
        self.tar.addfile(info)

    def _add_file(self, path: Path, rel: str) -> None:
        assert self.tar is not None
        info, st = self._info(path, rel)
        info.type = tarfile.REGTYPE
        info.size = st.st_size
        try:
            with path.open("rb") as handle:
                self.tar.addfile(info, handle)
        except OSError as exc:
            raise ClientError(
                f"Cannot pack {rel}: {exc.strerror or exc}.",
                "Leave it out with a line in .dockyardignore, or fix its permissions.",
            ) from None
        self.result.files += 1
        self.result.bytes += st.st_size

    def _add_symlink(self, path: Path, rel: str) -> None:
        assert self.tar is not None
        target = os.readlink(path)
        checked, reason = self._checked_target(rel, target)
        if checked is None:
            self._skip(rel, f"it is a link to {target}, {reason}")
            return
        info, _ = self._info(path, rel)
        info.type = tarfile.SYMTYPE
        info.linkname = checked
        self.tar.addfile(info)
        self.result.files += 1

    def _checked_target(self, rel: str, target: str) -> tuple[str | None, str]:
        """The link target to store (relative, inside the root), or None and why not."""
        link_dir = os.path.dirname(rel)
        if os.path.isabs(target):
            inside = os.path.normpath(target)
            top = os.path.normpath(self.top)
            if os.path.commonpath([inside, top]) != top:
                return None, "outside the directory"
            target = os.path.relpath(inside, os.path.join(top, link_dir) if link_dir else top)
        resolved = [part for part in link_dir.split("/") if part]
        steps = [step for step in target.split("/") if step not in ("", ".")]
        for index, step in enumerate(steps):
            if step == "..":
                if not resolved:
                    return None, "outside the directory"
                resolved.pop()
                continue
            resolved.append(step)
            if index < len(steps) - 1 and (self.top / "/".join(resolved)).is_symlink():
                return None, "which goes through another link (the server refuses those)"
        return target, ""

    def _skip(self, rel: str, reason: str) -> None:
        self.result.skipped.append(rel)
        self.warn(f"Skipped {rel}: {reason}.")
