"""An app's logs as a user reads them: every process's file merged by time.

Layout under ``<logs_dir>/<app>/``: ``<release_id>/<type>-<index>.log`` per process (see
``logfile``; one-off commands are ``one-off-<n>``), ``dockyard.log`` for what the platform
says about the app (crashes, restarts) and ``router.log``, one line per request the router
answered for it. Every file is bounded (one rotation, ``logfile.MAX_LOG_BYTES`` each).

Lines are served as Scalingo's log service serves them, the format its client parses:
``2024-05-01 10:00:00.123456000 +0000 UTC [web-1] <raw line>``: four date fields, the
bracketed name, the line, single spaces (an empty field crashes the official client).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from dockyard.runtime.base import check_name
from dockyard.runtime.logfile import MAX_LOG_BYTES, LogLine, parse, read_tail, rotated

EVENTS_FILE = "dockyard.log"
EVENTS_NAME = "dockyard"
ROUTER_FILE = "router.log"
ROUTER_NAME = "router"

# Which process names a reader wants (``name_filter``); None: all of them.
NameFilter = Callable[[str], bool] | None


def name_filter(raw: str) -> NameFilter:
    """Scalingo's ``--filter``: ``web|worker`` or ``web-1`` or ``router`` or ``one-off-2``;
    a part names a process (``web-1``) or a type, whose processes are ``<type>-<n>``."""
    parts = [part.strip() for part in raw.split("|") if part.strip()]
    if not parts:
        return None
    exact = frozenset(parts)
    prefixes = tuple(f"{part}-" for part in parts)
    return lambda name: name in exact or name.startswith(prefixes)


def process_log_path(app_dir: Path, release_id: str, process_name: str) -> Path:
    return app_dir / release_id / f"{process_name}.log"


def events_log_path(app_dir: Path) -> Path:
    return app_dir / EVENTS_FILE


def router_log_path(app_dir: Path) -> Path:
    return app_dir / ROUTER_FILE


def _log_files(app_dir: Path, only: NameFilter = None) -> list[tuple[str, Path]]:
    files = [(EVENTS_NAME, events_log_path(app_dir)), (ROUTER_NAME, router_log_path(app_dir))]
    files += [(path.stem, path) for path in sorted(app_dir.glob("*/*.log"))]
    return [(name, path) for name, path in files if only is None or only(name)]


def wire_time(stored: str) -> str:
    """``2024-05-01T12:00:00.123456Z`` (as stored) → ``2024-05-01 12:00:00.123456000 +0000
    UTC``, Go's default time format, which the official client splits into four fields."""
    if len(stored) != 27 or stored[10] != "T" or stored[-1] != "Z":
        stored = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # a line not ours
    return f"{stored[:10]} {stored[11:26]}000 +0000 UTC"


def _format(name: str, line: LogLine) -> str:
    return f"{wire_time(line.timestamp)} [{name}] {line.text}"


def _merged(batches: list[tuple[str, list[LogLine]]]) -> list[str]:
    lines = [(line.timestamp, name, line) for name, batch in batches for line in batch]
    lines.sort(key=lambda item: item[0])  # stable: one file's own order is kept
    return [_format(name, line) for _, name, line in lines]


def recent_lines(app_dir: Path, lines: int, only: NameFilter = None) -> list[str]:
    """The app's last ``lines`` log lines, all processes (or those ``only`` names) and
    releases merged by time."""
    batches = [(name, read_tail(path, lines)) for name, path in _log_files(app_dir, only)]
    return _merged(batches)[-lines:] if lines > 0 else []


@dataclass
class _Position:
    inode: int
    offset: int


class Follower:
    """Lines written after it was created, as they come.

    Polls the files (cheap, and the same for every runtime, since they all write files);
    new releases' files are picked up, and a rotation loses nothing: the rest of the
    rotated file is read before the new one."""

    def __init__(self, app_dir: Path, only: NameFilter = None) -> None:
        self.app_dir = app_dir
        self.only = only
        # Taken now, not on first iteration: lines written in between must not be lost.
        self._positions: dict[Path, _Position] = {}
        for _, path in _log_files(app_dir, only):
            with contextlib.suppress(FileNotFoundError):
                info = path.stat()
                self._positions[path] = _Position(info.st_ino, info.st_size)

    def poll(self) -> list[str]:
        """The lines written since the last call."""
        files = _log_files(self.app_dir, self.only)
        return _merged([(name, _read_new(path, self._positions)) for name, path in files])

    def follow(self, *, stop: threading.Event, interval: float = 0.2) -> Iterator[str]:
        """Lines as they are written, until ``stop`` is set."""
        while not stop.is_set():
            yield from self.poll()
            stop.wait(interval)


def _read_new(path: Path, positions: dict[Path, _Position]) -> list[LogLine]:
    try:
        info = path.stat()
    except FileNotFoundError:
        return []
    known = positions.get(path)
    lines: list[LogLine] = []
    if known is not None and known.inode != info.st_ino:
        old = rotated(path)
        with contextlib.suppress(FileNotFoundError):
            if old.stat().st_ino == known.inode:
                lines += _read_from(old, _Position(known.inode, known.offset))
        known = None
    position = known or _Position(info.st_ino, 0)
    lines += _read_from(path, position)
    positions[path] = position
    return lines


def _read_from(path: Path, position: _Position) -> list[LogLine]:
    """Complete lines after ``position.offset``; the offset moves past what was read."""
    try:
        with open(path, "rb") as file:
            file.seek(position.offset)
            data = file.read()
    except FileNotFoundError:
        return []
    complete = data[: data.rfind(b"\n") + 1]
    position.offset += len(complete)
    return [parse(record) for record in complete.decode("utf-8", "replace").splitlines()]


class RouterLogs:
    """Appends the router's access lines to each app's ``router.log``, a batch at a time
    (the router hands them over every fraction of a second, from a thread of its own).

    Lines for an app with no log directory (never deployed, or destroyed) are dropped:
    the router must not recreate what ``remove_app`` deleted, and a Host header naming no
    app must not create anything on disk."""

    def __init__(self, logs_dir: Path, *, max_bytes: int = MAX_LOG_BYTES) -> None:
        self.logs_dir = logs_dir
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def write(self, batch: Mapping[str, Sequence[tuple[float, str]]]) -> None:
        """``{app: [(unix time, line), ...]}``, in the order they happened."""
        with self._lock:
            for app, lines in batch.items():
                try:
                    app_dir = self.logs_dir / check_name("app name", app)
                except ValueError:
                    continue
                if app_dir.is_dir():
                    self._append(router_log_path(app_dir), lines)

    def _append(self, path: Path, lines: Sequence[tuple[float, str]]) -> None:
        data = b"".join(
            datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ ").encode()
            + text.replace("\n", " ").encode("utf-8", "replace")
            + b"\n"
            for at, text in lines
        )
        # Opened per batch, not kept: a file kept open would outlive its app's removal.
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size + len(data) > self.max_bytes:
                os.replace(path, rotated(path))
        with open(path, "ab") as file:
            file.write(data)
