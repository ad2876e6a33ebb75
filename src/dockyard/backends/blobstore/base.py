"""Blob store interface: sources and slugs, written once, read as files."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO


class BlobExists(Exception):
    """A write-once blob already exists."""


class PendingBlob(ABC):
    """A blob being written: invisible to readers until ``commit``; ``discard`` drops it."""

    file: BinaryIO
    size: int

    @abstractmethod
    def write(self, chunk: bytes) -> None:
        """Write all of ``chunk``; may be called from another thread than ``begin``'s."""

    def write_all(self, chunks: Sequence[bytes]) -> None:
        """Write ``chunks`` in order (stores override it with a vectored write)."""
        for chunk in chunks:
            self.write(chunk)

    @abstractmethod
    def commit(self) -> None:
        """Publish atomically; raises ``BlobExists`` if another writer published first."""

    @abstractmethod
    def discard(self) -> None: ...


class BlobStore(ABC):
    @abstractmethod
    def begin(self, key: str) -> PendingBlob: ...

    @abstractmethod
    def local_path(self, key: str) -> Path:
        """A file path to read the blob from; ``FileNotFoundError`` when missing."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the blob; missing is fine."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Move a finished local file into the store (replacing any previous blob)."""
