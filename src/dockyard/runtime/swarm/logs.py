"""The services' output, copied into the apps' log files (``applogs``'s layout).

Swarm's service logs gather every task's output wherever it runs, each line carrying its
task's id (``details``) and time. A thread per service follows them; each line goes to the
file of its instance (``<release>/<type>-<slot>.log``), so ``logs`` and ``logs -f`` read
a swarm app as they read any other. A stream cut while the service lives is followed
again from the last line's time on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import docker
import docker.errors

from dockyard.runtime import applogs
from dockyard.runtime.logfile import MAX_LINE_BYTES, LogFile, LogFiles

log = logging.getLogger(__name__)

# A task id -> (release id, slot), or None while it is not known yet.
TaskNames = Callable[[str], tuple[str, int] | None]
_RETRY_SECONDS = 1.0


def parse_line(raw: bytes) -> tuple[str, str, bytes] | None:
    """``<time> <details> <message>`` -> (time, task id, message); None if malformed."""
    parts = raw.split(b" ", 2)
    if len(parts) < 2:
        return None
    stamp, details = parts[0].decode(errors="replace"), parts[1].decode(errors="replace")
    message = parts[2] if len(parts) == 3 else b""
    task_id = ""
    for item in details.split(","):
        key, _, value = item.partition("=")
        if key == "com.docker.swarm.task.id":
            task_id = value
    if not task_id:
        return None
    return stamp, task_id, message


def since_of(stamp: str) -> float | None:
    """A log line's RFC 3339 time (nanoseconds) as a Unix time for ``since``."""
    head, _, rest = stamp.partition(".")
    try:
        whole = datetime.fromisoformat(head + "+00:00").timestamp()
    except ValueError:
        return None
    digits = "".join(ch for ch in rest if ch.isdigit())[:6]
    return whole + (int(digits) / 10 ** len(digits) if digits else 0.0)


class ServiceLogs:
    """Follows the logs of the services it is told about, until told to stop."""

    def __init__(self, client: docker.DockerClient, logs_dir: Path) -> None:
        self._client = client
        self._logs_dir = logs_dir
        self._files = LogFiles()
        self._lock = threading.Lock()
        self._followed: dict[str, threading.Event] = {}

    def follow(self, service_id: str, app: str, process_type: str, names: TaskNames) -> None:
        with self._lock:
            if service_id in self._followed:
                return
            stop = threading.Event()
            self._followed[service_id] = stop
        threading.Thread(
            target=self._copy,
            args=(service_id, app, process_type, names, stop),
            name=f"swarm-logs-{app}-{process_type}",
            daemon=True,
        ).start()

    def forget(self, service_id: str) -> None:
        with self._lock:
            stop = self._followed.pop(service_id, None)
        if stop is not None:
            stop.set()

    def close(self) -> None:
        with self._lock:
            stops = list(self._followed.values())
            self._followed.clear()
        for stop in stops:
            stop.set()

    def _copy(
        self,
        service_id: str,
        app: str,
        process_type: str,
        names: TaskNames,
        stop: threading.Event,
    ) -> None:
        since: float | None = None
        open_files: dict[str, LogFile] = {}
        try:
            while not stop.is_set():
                since = self._follow_once(
                    service_id, app, process_type, names, since, open_files, stop
                )
                try:
                    self._client.api.inspect_service(service_id)
                except docker.errors.NotFound:
                    return
                except docker.errors.APIError:
                    pass
                stop.wait(_RETRY_SECONDS)
        finally:
            for file in open_files.values():
                self._files.release(file)

    def _follow_once(
        self,
        service_id: str,
        app: str,
        process_type: str,
        names: TaskNames,
        since: float | None,
        open_files: dict[str, LogFile],
        stop: threading.Event,
    ) -> float | None:
        pending = b""
        with contextlib.suppress(docker.errors.APIError, OSError, ValueError):
            stream = self._client.api.service_logs(
                service_id,
                details=True,
                follow=True,
                stdout=True,
                stderr=True,
                timestamps=True,
                since=since or 0,
            )
            for chunk in stream:
                if stop.is_set():
                    break
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    since = self._write(line, app, process_type, names, open_files) or since
                if len(pending) > MAX_LINE_BYTES:
                    since = self._write(pending, app, process_type, names, open_files) or since
                    pending = b""
        return since

    def _write(
        self,
        raw: bytes,
        app: str,
        process_type: str,
        names: TaskNames,
        open_files: dict[str, LogFile],
    ) -> float | None:
        parsed = parse_line(raw)
        if parsed is None:
            return None
        stamp, task_id, message = parsed
        file = open_files.get(task_id)
        if file is None:
            known = names(task_id)
            if known is None:
                return None  # a task of another release, forgotten already
            release_id, slot = known
            path = applogs.process_log_path(
                self._logs_dir / app, release_id, f"{process_type}-{slot}"
            )
            file = open_files[task_id] = self._files.acquire(path)
        file.write(message)
        # The next stream starts just after this line (the API takes fractions).
        moment = since_of(stamp)
        return None if moment is None else moment + 1e-6
