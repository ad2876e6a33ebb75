"""What every blob store does, checked on each implementation alike.

A new store (S3, say) joins by adding a param to ``kit``: the store, and how to count
the partial writes it holds (its own storage, looked at directly).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockyard.backends.blobstore.base import BlobExists, BlobStore
from dockyard.backends.blobstore.local import LocalBlobStore
from dockyard.backends.blobstore.memory import MemoryBlobStore


@dataclass
class BlobKit:
    store: BlobStore
    unfinished: Callable[[], int]  # writes neither committed nor discarded, still held


def _local(tmp_path: Path) -> BlobKit:
    store = LocalBlobStore(tmp_path / "blobs")
    return BlobKit(store, lambda: len(list(store.root.rglob(".partial-*"))))


def _memory(tmp_path: Path) -> BlobKit:
    store = MemoryBlobStore(tmp_path / "read")
    return BlobKit(store, lambda: len(store._pending))


KITS = {"local": _local, "memory": _memory}


@pytest.fixture(params=sorted(KITS))
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> BlobKit:
    return KITS[request.param](tmp_path)


def read(store: BlobStore, key: str) -> bytes:
    return store.local_path(key).read_bytes()


def test_batches_of_any_shape_are_written_whole_and_in_order(kit: BlobKit) -> None:
    store = kit.store
    pending = store.begin("sources/a")
    pieces = [os.urandom(n % 7) for n in range(5000)]  # more pieces than one writev takes
    pending.write_all(pieces)
    pending.write(b"tail")
    pending.write_all([b"", b"x" * (3 * 1024 * 1024)])
    pending.commit()
    expected = b"".join(pieces) + b"tail" + b"x" * (3 * 1024 * 1024)
    assert read(store, "sources/a") == expected
    assert pending.size == len(expected)


def test_a_blob_is_invisible_until_committed(kit: BlobKit) -> None:
    store = kit.store
    pending = store.begin("sources/b")
    pending.write(b"half")
    assert not store.exists("sources/b")
    with pytest.raises(FileNotFoundError):
        store.local_path("sources/b")
    pending.commit()
    assert store.exists("sources/b")
    assert read(store, "sources/b") == b"half"


def test_blobs_are_write_once_and_the_first_commit_wins(kit: BlobKit) -> None:
    store = kit.store
    first, second = store.begin("sources/c"), store.begin("sources/c")
    first.write(b"first")
    second.write(b"second")
    first.commit()
    with pytest.raises(BlobExists):
        second.commit()
    second.discard()  # what the API does after a failed commit: the winner stays
    assert read(store, "sources/c") == b"first"
    late = store.begin("sources/c")
    late.write(b"late")
    with pytest.raises(BlobExists):
        late.commit()


def test_of_writers_racing_from_threads_exactly_one_publishes(kit: BlobKit) -> None:
    store = kit.store
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def writer(n: int) -> None:
        pending = store.begin("sources/race")
        pending.write(f"writer {n}".encode() * 1000)
        start.wait(10)
        try:
            pending.commit()
            outcomes.append(f"writer {n}")
        except BlobExists:
            pending.discard()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(outcomes) == 1
    assert read(store, "sources/race") == outcomes[0].encode() * 1000


def test_writes_may_come_from_another_thread(kit: BlobKit) -> None:
    store = kit.store
    pending = store.begin("sources/threaded")
    writer = threading.Thread(target=pending.write_all, args=([b"from ", b"a thread"],))
    writer.start()
    writer.join(10)
    pending.commit()
    assert read(store, "sources/threaded") == b"from a thread"


def test_a_discarded_blob_leaves_nothing_and_the_key_free(kit: BlobKit) -> None:
    store = kit.store
    pending = store.begin("sources/d")
    pending.write(b"x" * 1000)
    pending.discard()
    pending.discard()  # idempotent
    assert not store.exists("sources/d")
    assert kit.unfinished() == 0
    again = store.begin("sources/d")
    again.write(b"whole")
    again.commit()
    assert read(store, "sources/d") == b"whole"


def test_nothing_is_written_after_commit_or_discard(kit: BlobKit) -> None:
    store = kit.store
    committed, discarded = store.begin("sources/e"), store.begin("sources/f")
    committed.write(b"kept")
    committed.commit()
    discarded.discard()
    for pending in (committed, discarded):
        with pytest.raises(ValueError):
            pending.write(b"more")
        with pytest.raises(ValueError):
            pending.commit()
    committed.discard()  # harmless after a commit: the blob stays published
    assert read(store, "sources/e") == b"kept"
    assert not store.exists("sources/f")


def test_delete_removes_and_a_missing_blob_is_fine(kit: BlobKit) -> None:
    store = kit.store
    pending = store.begin("slugs/g.tar.zst")
    pending.write(b"slug")
    pending.commit()
    read(store, "slugs/g.tar.zst")  # a read copy, where the store makes one
    store.delete("slugs/g.tar.zst")
    store.delete("slugs/g.tar.zst")
    store.delete("slugs/never-written")
    assert not store.exists("slugs/g.tar.zst")
    with pytest.raises(FileNotFoundError):
        store.local_path("slugs/g.tar.zst")


def test_put_file_moves_a_finished_file_in_and_replaces(kit: BlobKit, tmp_path: Path) -> None:
    store = kit.store
    for content in (b"first build", b"second build"):
        built = tmp_path / "slug.tar.zst"
        built.write_bytes(content)
        store.put_file("slugs/h.tar.zst", built)
        assert not built.exists()
        assert read(store, "slugs/h.tar.zst") == content


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../outside", "sources/../../x", "a//b", "."])
def test_keys_that_could_leave_the_store_are_refused(kit: BlobKit, key: str) -> None:
    store = kit.store
    with pytest.raises(ValueError, match="invalid blob key"):
        store.begin(key)
    with pytest.raises(ValueError, match="invalid blob key"):
        store.local_path(key)
    with pytest.raises(ValueError, match="invalid blob key"):
        store.delete(key)


def test_sweeping_drops_abandoned_writes_and_keeps_blobs(kit: BlobKit) -> None:
    store = kit.store
    kept = store.begin("sources/kept")
    kept.write(b"kept")
    kept.commit()
    abandoned = [store.begin(key) for key in ("sources/crashed-1", "sources/crashed-2")]
    for pending in abandoned:
        pending.write(b"half an upload")  # then the writer died: no commit, no discard
    assert kit.unfinished() == 2

    store.sweep_partials()

    assert kit.unfinished() == 0
    for pending in abandoned:
        pending.discard()  # what a dead writer's exit does to its open files; changes nothing
    assert kit.unfinished() == 0
    assert not store.exists("sources/crashed-1")
    assert read(store, "sources/kept") == b"kept"
    retry = store.begin("sources/crashed-1")
    retry.write(b"whole upload")
    retry.commit()
    assert read(store, "sources/crashed-1") == b"whole upload"
