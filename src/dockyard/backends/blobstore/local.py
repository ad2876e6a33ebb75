"""Blob store on the local disk (the embedded default)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from dockyard.backends.blobstore.base import BlobExists, BlobStore, PendingBlob

_IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 1024


def _check_key(key: str) -> None:
    # Keys are built by dockyard from UUIDs; refuse anything that could leave the root.
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in {"", ".", ".."} for p in parts):
        raise ValueError(f"invalid blob key {key!r}")


class _LocalPending(PendingBlob):
    def __init__(self, final: Path) -> None:
        self.final = final
        fd, name = tempfile.mkstemp(dir=final.parent, prefix=".partial-")
        self.tmp = Path(name)
        # Unbuffered: the upload handler already hands over megabyte batches.
        self.file: BinaryIO = os.fdopen(fd, "wb", buffering=0)
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.write_all([chunk])

    def write_all(self, chunks: Sequence[bytes]) -> None:
        # One writev for the batch: no copy into a buffer of ours, few system calls.
        pending = [memoryview(chunk) for chunk in chunks if chunk]
        while pending:
            written = os.writev(self.file.fileno(), pending[:_IOV_MAX])
            self.size += written
            while pending and written >= len(pending[0]):
                written -= len(pending[0])
                pending.pop(0)
            if pending and written:
                pending[0] = pending[0][written:]

    def commit(self) -> None:
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
        with contextlib.suppress(OSError):
            self.file.close()
        self.tmp.unlink(missing_ok=True)


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)

    def _path(self, key: str) -> Path:
        _check_key(key)
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

    def size(self, key: str) -> int:
        return self.local_path(key).stat().st_size

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def put_file(self, key: str, path: Path) -> None:
        os.replace(path, self._path(key))

    def sweep_partials(self) -> None:
        """Remove uploads a crash left half-written."""
        for partial in self.root.rglob(".partial-*"):
            partial.unlink(missing_ok=True)
