"""Blob store on the local disk (the embedded default)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from dockyard.backends.blobstore.base import BlobExists, BlobStore, PendingBlob, check_key

# writev takes at most this many pieces (sysconf may say -1: no limit known).
_IOV_MAX = max(16, os.sysconf("SC_IOV_MAX")) if "SC_IOV_MAX" in os.sysconf_names else 1024


class _LocalPending(PendingBlob):
    def __init__(self, final: Path) -> None:
        self.final = final
        fd, name = tempfile.mkstemp(dir=final.parent, prefix=".partial-")
        self.tmp = Path(name)
        # Unbuffered: the upload handler already hands over megabyte batches.
        self.file: BinaryIO = os.fdopen(fd, "wb", buffering=0)
        self.size = 0
        # Writes may come from another thread: commit and discard wait for the one under
        # way, and nothing writes after them (the descriptor may already name another file).
        self._lock = threading.Lock()
        self._closed = False

    def write(self, chunk: bytes) -> None:
        self.write_all([chunk])

    def write_all(self, chunks: Sequence[bytes]) -> None:
        # One writev per batch: no copy into a buffer of ours, few system calls.
        views = [memoryview(chunk) for chunk in chunks if chunk]
        with self._lock:
            if self._closed:
                raise ValueError("write to a blob that was committed or discarded")
            fd = self.file.fileno()
            first = 0
            while first < len(views):
                written = os.writev(fd, views[first : first + _IOV_MAX])
                self.size += written
                while first < len(views) and written >= len(views[first]):
                    written -= len(views[first])
                    first += 1
                if written:
                    views[first] = views[first][written:]

    def commit(self) -> None:
        with self._lock:
            if self._closed:
                raise ValueError("commit of a blob that was committed or discarded")
            self._closed = True
            self.file.close()
        try:
            # link() fails if the name exists, so of two concurrent writers exactly one
            # publishes, and readers never see a half-written file.
            os.link(self.tmp, self.final)
        except FileExistsError:
            raise BlobExists(str(self.final.name)) from None
        finally:
            self.tmp.unlink(missing_ok=True)

    def discard(self) -> None:
        with self._lock:
            self._closed = True
            with contextlib.suppress(OSError):
                self.file.close()
        self.tmp.unlink(missing_ok=True)


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)

    def _path(self, key: str) -> Path:
        check_key(key)
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def begin(self, key: str) -> PendingBlob:
        return _LocalPending(self._path(key))

    def local_path(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(key)
        return path

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def put_file(self, key: str, path: Path) -> None:
        os.replace(path, self._path(key))

    def sweep_partials(self) -> None:
        """Remove uploads a crash left half-written."""
        for partial in self.root.rglob(".partial-*"):
            partial.unlink(missing_ok=True)
