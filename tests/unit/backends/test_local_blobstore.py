"""The local blob store: what is written is what is read, however it was written."""

from __future__ import annotations

import os
from pathlib import Path

from dockyard.backends.blobstore.local import LocalBlobStore


def test_batches_of_any_shape_are_written_whole_and_in_order(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    pending = store.begin("sources/a")
    pieces = [os.urandom(n % 7) for n in range(5000)]  # more pieces than one writev takes
    pending.write_all(pieces)
    pending.write(b"tail")
    pending.write_all([b"", b"x" * (3 * 1024 * 1024)])
    pending.commit()
    expected = b"".join(pieces) + b"tail" + b"x" * (3 * 1024 * 1024)
    assert store.local_path("sources/a").read_bytes() == expected
    assert pending.size == len(expected)
