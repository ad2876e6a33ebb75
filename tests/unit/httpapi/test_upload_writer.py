"""The upload writer: disk writes in a thread, never outliving the request's handling."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence

import pytest

from dockyard.api.routes import sources


class SlowBlob:
    """A blob whose writes take a while, recording what happened in which order."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.size = 0
        self.writing = threading.Event()
        self.release = threading.Event()
        self.pieces: list[int] = []

    def write_all(self, chunks: Sequence[bytes]) -> None:
        self.events.append("write-start")
        self.pieces.append(len(chunks))
        self.writing.set()
        self.release.wait(10)
        self.size += sum(len(c) for c in chunks)
        self.events.append("write-end")

    def discard(self) -> None:
        self.events.append("discard")


async def _handle(chunks: AsyncIterator[bytes], blob: SlowBlob) -> None:
    # What the upload endpoint does around receive.
    try:
        await sources.receive(chunks, blob, 10**9, "too large")  # type: ignore[arg-type]
    except BaseException:
        blob.discard()
        raise


def test_a_cancelled_upload_discards_only_after_the_write_under_way() -> None:
    blob = SlowBlob()

    async def body() -> AsyncIterator[bytes]:
        yield b"\x1f\x8b" + b"x" * sources.WRITE_BATCH_BYTES
        yield b"y" * sources.WRITE_BATCH_BYTES  # waits for the first write
        await asyncio.Event().wait()  # a client that sends nothing more

    async def scenario() -> None:
        task = asyncio.create_task(_handle(body(), blob))
        await asyncio.to_thread(blob.writing.wait, 10)
        task.cancel()  # as uvicorn does to requests still running at shutdown
        # The write cannot end (it waits for ``release``), so whatever the handler does
        # without it happens in these turns of the event loop: a handler that discards
        # without waiting has discarded by now, whatever the machine's speed.
        for _ in range(20):
            await asyncio.sleep(0)
        assert "discard" not in blob.events, "discarded while the write ran"
        assert not task.done()
        blob.release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert blob.events == ["write-start", "write-end", "discard"]


def test_a_trickle_of_tiny_pieces_is_written_in_few_pieces() -> None:
    blob = SlowBlob()
    blob.release.set()

    async def body() -> AsyncIterator[bytes]:
        yield b"\x1f\x8b"
        for _ in range(20_000):
            yield b"abc"

    asyncio.run(_handle(body(), blob))
    assert blob.size == 2 + 60_000
    assert max(blob.pieces) <= sources.MAX_BATCH_PIECES
