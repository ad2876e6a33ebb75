"""Build output arrives a line at a time, often thousands a second; storing each line in
its own transaction made the database the bottleneck of the stream. This writer gathers
the lines written while the previous batch was being stored and stores them together, in
order, then publishes them — so a line waits at most one transaction, never a timer."""

from __future__ import annotations

import threading

from dockyard.services.events import DeploymentLog
from dockyard.worker.outputcap import OutputCap

MAX_BATCH = 500


class BatchingLog:
    def __init__(self, log: DeploymentLog, *, max_bytes: int | None = None) -> None:
        self.log = log
        # What is stored of a flood is bounded, and so is what waits here (worker/outputcap.py).
        self._cap = OutputCap(max_bytes) if max_bytes is not None else None
        self._pending: list[str] = []
        self._writing = False
        self._closed = False
        self._error: BaseException | None = None
        self._condition = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, name=f"log-{log.deployment_id[:8]}", daemon=True
        )
        self._thread.start()

    def __call__(self, line: str) -> None:
        with self._condition:
            self._raise_if_failed()
            if self._cap is not None and not self._cap.admit(line):
                return  # held back by the cap, or cut
            self._pending.append(line)
            self._condition.notify_all()

    def flush(self) -> None:
        """Return once every line written so far is stored and published."""
        with self._condition:
            self._condition.wait_for(
                lambda: (not self._pending and not self._writing) or self._error is not None
            )
            self._raise_if_failed()

    def take_unstored(self) -> list[str]:
        """Wait for the batch being stored, then hand over the lines not stored yet, for the
        caller to store in its own transaction: a status change stores the lines written
        before it together with it, in one transaction instead of two."""
        with self._condition:
            self._condition.wait_for(lambda: not self._writing or self._error is not None)
            self._raise_if_failed()
            taken, self._pending = self._pending, []
            if self._cap is not None:
                taken += self._cap.take_tail()
            return taken

    def put_back(self, lines: list[str]) -> None:
        """Lines from ``take_unstored`` that the caller could not store after all: they are
        stored first, before any written since."""
        with self._condition:
            self._pending[:0] = lines
            self._condition.notify_all()

    def _raise_if_failed(self) -> None:
        """With the condition held: report a batch that could not be stored."""
        if self._error is not None:
            raise RuntimeError("the deployment log could not be stored") from self._error

    def close(self) -> None:
        if self._cap is not None:
            with self._condition:
                self._pending += self._cap.take_tail()
                self._condition.notify_all()
        try:
            self.flush()
        finally:
            with self._condition:
                self._closed = True
                self._condition.notify_all()
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                self._writing = True
            try:
                self.log.lines(batch)
            except BaseException as exc:  # reported to the writer on its next call
                with self._condition:
                    self._error = exc
                    self._writing = False
                    self._condition.notify_all()
                return
            with self._condition:
                self._writing = False
                self._condition.notify_all()
