"""The worker pool's wake-ups: a deployment committed while a worker was looking is not
left queued until the next poll."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from dockyard.platform import Platform
from dockyard.services import deployments as deployments_service
from dockyard.worker import pool as pool_module
from dockyard.worker.pool import WorkerPool

WAIT = 5.0


class Queue:
    """Stands in for the database: ``claim_next`` takes the oldest queued item. One look
    can be made stale: it sees the queue as it was when it began, and ends when told."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[str] = []
        self.stale_look_armed = False
        self.stale_look_started = threading.Event()
        self.end_stale_look = threading.Event()

    def claim_next(self, **_: Any) -> Any:
        with self.lock:
            stale = self.stale_look_armed
            self.stale_look_armed = False
            seen = list(self.items)
        if stale:
            self.stale_look_started.set()
            assert self.end_stale_look.wait(WAIT)
            if not seen:
                return None
        with self.lock:
            return self.items.pop(0) if self.items else None


class Runs:
    def __init__(self) -> None:
        self.started: dict[str, threading.Event] = {}
        self.finish = threading.Event()

    def __call__(self, platform: Platform, deployment: Any, stopping: object) -> None:
        self.started.setdefault(deployment, threading.Event()).set()
        self.finish.wait(WAIT)

    def has_started(self, deployment: str, timeout: float) -> bool:
        return self.started.setdefault(deployment, threading.Event()).wait(timeout)


@pytest.fixture
def queue(monkeypatch: pytest.MonkeyPatch) -> Queue:
    queue = Queue()
    monkeypatch.setattr(deployments_service, "claim_next", queue.claim_next)
    # No poll to fall back on: only a wake can get a deployment claimed within the test.
    monkeypatch.setattr(pool_module, "IDLE_POLL_SECONDS", 60.0)
    return queue


@pytest.fixture
def runs() -> Runs:
    return Runs()


@pytest.fixture
def pool(queue: Queue, runs: Runs) -> Iterator[WorkerPool]:
    platform = SimpleNamespace(db=None, bus=None, settings=SimpleNamespace(is_postgres=False, lease_seconds=30, worker_name="w1"))
    pool = WorkerPool(cast(Platform, platform), runs, workers=2)
    pool.start()
    yield pool
    runs.finish.set()
    queue.end_stale_look.set()
    pool.stop(timeout=WAIT)


def test_deployments_committed_during_a_look_that_missed_them_are_claimed_at_once(
    queue: Queue, runs: Runs, pool: WorkerPool
) -> None:
    # One worker starts a look that will not see what is committed next.
    queue.stale_look_armed = True
    pool.wake()
    assert queue.stale_look_started.wait(WAIT)
    # Two deployments are committed; the other worker wakes and takes the first.
    with queue.lock:
        queue.items += ["first", "second"]
    pool.wake()
    pool.wake()
    assert runs.has_started("first", WAIT)
    # The stale look finds nothing; its worker must look again rather than sleep.
    queue.end_stale_look.set()
    assert runs.has_started("second", 2.0), "the second waited for the poll"
