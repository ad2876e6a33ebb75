"""Blob store interface: sources and slugs, written once, read as files.

Every implementation passes tests/contract/test_blobstore_contract.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path


class BlobExists(Exception):
    """A write-once blob already exists."""


def check_key(key: str) -> None:
    """Refuse a key that could leave the store's root (keys are built by dockyard from
    UUIDs, so this only ever catches a bug)."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in {"", ".", ".."} for p in parts):
        raise ValueError(f"invalid blob key {key!r}")


class PendingBlob(ABC):
    """A blob being written: invisible to readers until ``commit``; ``discard`` drops it.
    After either, writing raises ``ValueError``."""

    size: int  # bytes written so far

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
    """Keys are relative paths built by dockyard (``sources/<uuid>.tar.gz``); a key that
    is empty, absolute or has ``.``/``..`` parts raises ``ValueError``."""

    @abstractmethod
    def begin(self, key: str) -> PendingBlob:
        """Start writing the blob ``key`` (see ``PendingBlob``)."""

    @abstractmethod
    def local_path(self, key: str) -> Path:
        """A file path to read the blob from (the build reads archives, the API serves
        them as files); ``FileNotFoundError`` when missing."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the blob; missing is fine."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Move a finished local file into the store (replacing any previous blob)."""

    @abstractmethod
    def sweep_partials(self) -> None:
        """Drop what writers that never committed nor discarded left behind (a crash, a
        killed server). Called at startup, when no upload is under way."""
