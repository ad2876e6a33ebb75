"""The batching log writer: every line is stored once, in order, whether by its own
batches or handed to a status change."""

from __future__ import annotations

import threading
from typing import cast

import pytest

from dockyard.services.events import DeploymentLog
from dockyard.worker.logbatch import BatchingLog


class SlowLog:
    """Stores batches slowly, so that lines pile up while one is being stored."""

    deployment_id = "d-1234567890"

    def __init__(self) -> None:
        self.stored: list[str] = []
        self.batches = 0
        self.storing = threading.Event()
        self.release = threading.Event()

    def lines(self, batch: list[str]) -> None:
        self.storing.set()
        self.release.wait(timeout=5)
        self.stored.extend(batch)
        self.batches += 1


@pytest.fixture
def slow() -> SlowLog:
    return SlowLog()


def writer(log: SlowLog) -> BatchingLog:
    return BatchingLog(cast(DeploymentLog, log))


def storing(log: SlowLog, first: str) -> BatchingLog:
    """A writer busy storing its first line (until ``log.release`` is set)."""
    write = writer(log)
    write(first)
    assert log.storing.wait(timeout=5)
    return write


def test_lines_written_during_a_store_go_together_in_the_next_batch(slow: SlowLog) -> None:
    write = storing(slow, "one")
    for line in ("two", "three", "four"):
        write(line)
    slow.release.set()
    write.close()
    assert slow.stored == ["one", "two", "three", "four"]
    assert slow.batches == 2


def test_a_status_change_takes_the_lines_not_stored_yet_after_the_one_being_stored(
    slow: SlowLog,
) -> None:
    write = storing(slow, "one")
    write("two")
    write("three")
    taken: list[str] = []
    taker = threading.Thread(target=lambda: taken.extend(write.take_unstored()))
    taker.start()
    taker.join(timeout=0.2)
    assert taker.is_alive(), "waits until the batch being stored is stored"
    slow.release.set()
    taker.join(timeout=5)
    # The writer may have started the next batch first; either way each line is stored
    # once, and those taken (stored by the caller with its status) come after the others.
    assert slow.stored[0] == "one"
    assert slow.stored + taken == ["one", "two", "three"]
    stored_before = list(slow.stored)
    write("four")
    write.close()
    assert slow.stored == [*stored_before, "four"], "taken lines are not stored a second time"


def test_lines_a_status_change_could_not_store_are_stored_before_later_ones(
    slow: SlowLog,
) -> None:
    write = storing(slow, "zero")
    write("later")
    write.put_back(["one", "two"])  # taken by a status change that then failed
    slow.release.set()
    write.close()
    assert slow.stored == ["zero", "one", "two", "later"]


def test_a_failed_store_is_reported_to_the_next_status_change() -> None:
    failed = threading.Event()

    class BrokenLog(SlowLog):
        def lines(self, batch: list[str]) -> None:
            failed.set()
            raise OSError("disk full")

    write = writer(BrokenLog())
    write("one")
    assert failed.wait(timeout=5)
    with pytest.raises(RuntimeError, match="could not be stored"):
        write.take_unstored()
