"""Blob store in memory: for tests of what sits above the store, and the contract suite's
check that the interface does not lean on the local disk's behaviour.

Blobs are ``bytes`` in a dict. ``local_path`` writes a read copy under ``read_dir`` (a
store on another machine would download it the same way), kept until the blob changes.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from dockyard.backends.blobstore.base import BlobExists, BlobStore, PendingBlob, check_key


class _MemoryPending(PendingBlob):
    def __init__(self, store: MemoryBlobStore, key: str) -> None:
        self._store = store
        self._key = key
        self._pieces: list[bytes] = []
        self.size = 0
        self._lock = threading.Lock()
        self._closed = False

    def write(self, chunk: bytes) -> None:
        self.write_all([chunk])

    def write_all(self, chunks: Sequence[bytes]) -> None:
        with self._lock:
            if self._closed:
                raise ValueError("write to a blob that was committed or discarded")
            for chunk in chunks:
                if chunk:
                    self._pieces.append(bytes(chunk))
                    self.size += len(chunk)

    def commit(self) -> None:
        data = self._close()
        if data is None:
            raise ValueError("commit of a blob that was committed or discarded")
        self._store._publish(self._key, data, self)

    def discard(self) -> None:
        self._close()
        self._store._forget(self)

    def _close(self) -> bytes | None:
        """The bytes written, once; None if already committed or discarded."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            data = b"".join(self._pieces)
            self._pieces = []
            return data


class MemoryBlobStore(BlobStore):
    def __init__(self, read_dir: Path) -> None:
        self.read_dir = read_dir
        self._blobs: dict[str, bytes] = {}
        self._pending: set[_MemoryPending] = set()
        self._lock = threading.Lock()

    def begin(self, key: str) -> PendingBlob:
        check_key(key)
        pending = _MemoryPending(self, key)
        with self._lock:
            self._pending.add(pending)
        return pending

    def local_path(self, key: str) -> Path:
        check_key(key)
        path = self.read_dir / key
        with self._lock:
            data = self._blobs.get(key)
            if data is None:
                raise FileNotFoundError(key)
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(dir=path.parent, prefix=".read-")
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                os.replace(name, path)
        return path

    def exists(self, key: str) -> bool:
        check_key(key)
        with self._lock:
            return key in self._blobs

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self._blobs.pop(key, None)
            (self.read_dir / key).unlink(missing_ok=True)

    def put_file(self, key: str, path: Path) -> None:
        check_key(key)
        data = path.read_bytes()
        with self._lock:
            self._blobs[key] = data
            (self.read_dir / key).unlink(missing_ok=True)
        path.unlink()

    def sweep_partials(self) -> None:
        with self._lock:
            abandoned, self._pending = self._pending, set()
        for pending in abandoned:
            pending._close()

    def _publish(self, key: str, data: bytes, pending: _MemoryPending) -> None:
        with self._lock:
            self._pending.discard(pending)
            if key in self._blobs:
                raise BlobExists(key)
            self._blobs[key] = data

    def _forget(self, pending: _MemoryPending) -> None:
        with self._lock:
            self._pending.discard(pending)
