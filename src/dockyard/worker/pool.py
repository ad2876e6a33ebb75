"""The job loop: worker threads claim queued deployments, hold a lease while they run
them, and a reaper ends deployments whose worker disappeared."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Callable

from dockyard.domain.records import DeploymentRecord
from dockyard.platform import Platform
from dockyard.services import deployments as deployments_service

log = logging.getLogger(__name__)

# How often an idle worker looks for queued deployments it was not woken for. With
# PostgreSQL another process may queue them; with SQLite only this server does, and it
# wakes a worker for each (``wake``), so the look is only a safety net there.
IDLE_POLL_SECONDS = 0.5
SINGLE_PROCESS_IDLE_POLL_SECONDS = 5.0

RunDeployment = Callable[[Platform, DeploymentRecord, threading.Event], object]


class WorkerPool:
    def __init__(
        self,
        platform: Platform,
        run: RunDeployment,
        *,
        workers: int,
        idle_poll_seconds: float = IDLE_POLL_SECONDS,
    ) -> None:
        self.platform = platform
        self.run = run
        self.workers = workers
        self.idle_poll_seconds = idle_poll_seconds
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_seconds = platform.settings.lease_seconds
        self.stopping = threading.Event()
        self._wake = threading.Condition()
        # Counts ``wake`` calls. A worker notes it before it looks and waits afterwards only
        # if it has not moved: a look sees every deployment committed before it started,
        # so any number of wakes before then ask for that one look, and none after.
        self._commits = 0
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.workers):
            thread = threading.Thread(
                target=self._loop, name=f"dockyard-worker-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        housekeeping = threading.Thread(
            target=self._housekeeping, name="dockyard-leases", daemon=True
        )
        housekeeping.start()
        self._threads.append(housekeeping)

    def wake(self) -> None:
        """A deployment was committed: let an idle worker look now rather than at its next poll."""
        with self._wake:
            self._commits += 1
            self._wake.notify()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; running deployments see ``stopping`` and end as aborted."""
        self.stopping.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout=timeout)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            with self._wake:
                seen = self._commits
            try:
                deployment = deployments_service.claim_next(
                    db=self.platform.db,
                    bus=self.platform.bus,
                    worker_id=self.worker_id,
                    lease_seconds=self.lease_seconds,
                    worker_name=self.platform.settings.worker_name,
                )
            except Exception:
                log.exception("claiming a deployment failed")
                deployment = None
            if deployment is None:
                with self._wake:
                    if self._commits == seen and not self.stopping.is_set():
                        self._wake.wait(timeout=self.idle_poll_seconds)
                continue
            try:
                self.run(self.platform, deployment, self.stopping)
            except Exception:
                log.exception("deployment %s crashed its worker", deployment.id)
            # Finishing one deployment may unblock the next one of the same app: this
            # worker looks for it at once (waking another as well only doubled the look).

    def _housekeeping(self) -> None:
        while not self.stopping.wait(self.lease_seconds / 3):
            try:
                deployments_service.renew_leases(
                    db=self.platform.db, worker_id=self.worker_id, lease_seconds=self.lease_seconds
                )
                if self.platform.settings.is_postgres:
                    for aborted in deployments_service.abort_orphans(
                        db=self.platform.db, bus=self.platform.bus, everything=False
                    ):
                        log.warning("aborted orphaned deployment %s", aborted.id)
                        # If its worker ran on this machine, its work directory is here.
                        shutil.rmtree(
                            self.platform.settings.builds_dir / aborted.id, ignore_errors=True
                        )
            except Exception:
                log.exception("lease housekeeping failed")
