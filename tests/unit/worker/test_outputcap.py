"""The cap on a deployment's stored output keeps its start, its end and a line between
saying what was cut; what it holds back is bounded whatever the build prints."""

from __future__ import annotations

from typing import cast

from dockyard.services.events import DeploymentLog
from dockyard.worker.logbatch import BatchingLog
from dockyard.worker.outputcap import STEP_BYTES, OutputCap


class MemoryLog:
    deployment_id = "d-1234567890"

    def __init__(self) -> None:
        self.stored: list[str] = []

    def lines(self, batch: list[str]) -> None:
        self.stored.extend(batch)


def _bytes(lines: list[str]) -> int:
    return sum(len(line.encode()) + 1 for line in lines)


def test_output_under_the_cap_is_stored_whole_and_live() -> None:
    cap = OutputCap(64 * 1024)
    assert all(cap.admit(f"line {n}") for n in range(1000))
    assert cap.take_tail() == []


def test_a_flood_keeps_its_start_its_end_and_says_what_was_cut() -> None:
    limit = 256 * 1024
    cap = OutputCap(limit)
    flood = [f"{n:07d} " + "x" * 92 for n in range(200_000)]  # 20 MB
    live = [line for line in flood if cap.admit(line)]
    held = cap.take_tail()
    assert live == flood[: len(live)]  # the start, in order
    marker, tail = held[0], held[1:]
    assert tail == flood[-len(tail) :]  # the end, in order
    assert "lines of output" in marker and "256 KiB" in marker
    cut = len(flood) - len(live) - len(tail)
    assert marker.startswith(f"-----> {cut} lines")
    assert _bytes(live) + _bytes(held) <= limit
    assert _bytes(tail) >= limit // 4 - 400  # a quarter of the cap for the end


def test_steps_after_a_cut_get_an_allowance_of_their_own() -> None:
    cap = OutputCap(128 * 1024)
    for n in range(10_000):
        cap.admit(f"build line {n} " + "y" * 50)
    cap.take_tail()
    assert cap.admit("-----> Packaging the release")  # live again
    for n in range(10_000):
        cap.admit(f"boot line {n} " + "z" * 50)
    held = cap.take_tail()
    assert held[-1].startswith("boot line 9999")
    assert _bytes(held) <= STEP_BYTES + 200


def test_the_batching_log_stores_the_end_with_the_status_change() -> None:
    log = MemoryLog()
    write = BatchingLog(cast(DeploymentLog, log), max_bytes=64 * 1024)
    for n in range(50_000):
        write(f"noise {n} " + "n" * 40)
    write(" !     the real error")
    with_status = write.take_unstored()
    write.close()
    stored = log.stored + with_status
    assert stored[-1] == " !     the real error"
    assert any("were cut here" in line for line in stored)
    assert _bytes(stored) <= 64 * 1024
